from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_VERIFYING: _ClassVar[JobState]
    JOB_STATE_COMPLETED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_QUEUED: _ClassVar[TaskState]
    TASK_STATE_LEASED: _ClassVar[TaskState]
    TASK_STATE_SUBMITTED: _ClassVar[TaskState]
    TASK_STATE_VERIFIED: _ClassVar[TaskState]
    TASK_STATE_REJECTED: _ClassVar[TaskState]
    TASK_STATE_SETTLED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]

class ProviderTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_TIER_UNSPECIFIED: _ClassVar[ProviderTier]
    PROVIDER_TIER_OPEN: _ClassVar[ProviderTier]
    PROVIDER_TIER_CENTRALIZED: _ClassVar[ProviderTier]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_VERIFYING: JobState
JOB_STATE_COMPLETED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_QUEUED: TaskState
TASK_STATE_LEASED: TaskState
TASK_STATE_SUBMITTED: TaskState
TASK_STATE_VERIFIED: TaskState
TASK_STATE_REJECTED: TaskState
TASK_STATE_SETTLED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELLED: TaskState
PROVIDER_TIER_UNSPECIFIED: ProviderTier
PROVIDER_TIER_OPEN: ProviderTier
PROVIDER_TIER_CENTRALIZED: ProviderTier

class Requirements(_message.Message):
    __slots__ = ("gpu_count", "gpu_models", "min_vram_mb", "allow_cpu", "min_memory_mb", "isolated", "model_memory_mb")
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPU_MODELS_FIELD_NUMBER: _ClassVar[int]
    MIN_VRAM_MB_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CPU_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    ISOLATED_FIELD_NUMBER: _ClassVar[int]
    MODEL_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    gpu_count: int
    gpu_models: _containers.RepeatedScalarFieldContainer[str]
    min_vram_mb: int
    allow_cpu: bool
    min_memory_mb: int
    isolated: bool
    model_memory_mb: int
    def __init__(self, gpu_count: _Optional[int] = ..., gpu_models: _Optional[_Iterable[str]] = ..., min_vram_mb: _Optional[int] = ..., allow_cpu: _Optional[bool] = ..., min_memory_mb: _Optional[int] = ..., isolated: _Optional[bool] = ..., model_memory_mb: _Optional[int] = ...) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("index", "uuid", "name", "memory_total_mb", "compute_capability", "driver_version", "cuda_version")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_MB_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    memory_total_mb: int
    compute_capability: str
    driver_version: str
    cuda_version: str
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., memory_total_mb: _Optional[int] = ..., compute_capability: _Optional[str] = ..., driver_version: _Optional[str] = ..., cuda_version: _Optional[str] = ...) -> None: ...

class Hardware(_message.Message):
    __slots__ = ("gpus", "cpu_count", "memory_total_mb", "cpu_model", "platform")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_MB_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    gpus: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    cpu_count: int
    memory_total_mb: int
    cpu_model: str
    platform: str
    def __init__(self, gpus: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., cpu_count: _Optional[int] = ..., memory_total_mb: _Optional[int] = ..., cpu_model: _Optional[str] = ..., platform: _Optional[str] = ...) -> None: ...

class GpuTelemetry(_message.Message):
    __slots__ = ("index", "utilization_pct", "memory_used_mb", "temperature_c", "power_w")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PCT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MB_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    index: int
    utilization_pct: float
    memory_used_mb: int
    temperature_c: float
    power_w: float
    def __init__(self, index: _Optional[int] = ..., utilization_pct: _Optional[float] = ..., memory_used_mb: _Optional[int] = ..., temperature_c: _Optional[float] = ..., power_w: _Optional[float] = ...) -> None: ...

class SealedKey(_message.Message):
    __slots__ = ("cid", "wrapped_key")
    CID_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    cid: str
    wrapped_key: bytes
    def __init__(self, cid: _Optional[str] = ..., wrapped_key: _Optional[bytes] = ...) -> None: ...
