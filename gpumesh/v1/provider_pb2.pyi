import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gpumesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_PHASE_UNSPECIFIED: _ClassVar[CheckPhase]
    CHECK_PHASE_PREPARE: _ClassVar[CheckPhase]
    CHECK_PHASE_START: _ClassVar[CheckPhase]
    CHECK_PHASE_OPEN: _ClassVar[CheckPhase]
CHECK_PHASE_UNSPECIFIED: CheckPhase
CHECK_PHASE_PREPARE: CheckPhase
CHECK_PHASE_START: CheckPhase
CHECK_PHASE_OPEN: CheckPhase

class GetChallengeRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class GetChallengeResponse(_message.Message):
    __slots__ = ("challenge", "expires_at")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    challenge: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, challenge: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("address", "challenge", "signature", "name", "hardware", "price_per_hour", "tier", "slots", "cached_model_cids", "runtime", "isolated", "operator", "sealing_public_key")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CACHED_MODEL_CIDS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ISOLATED_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    SEALING_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    address: str
    challenge: str
    signature: bytes
    name: str
    hardware: _common_pb2.Hardware
    price_per_hour: str
    tier: _common_pb2.ProviderTier
    slots: int
    cached_model_cids: _containers.RepeatedScalarFieldContainer[str]
    runtime: str
    isolated: bool
    operator: str
    sealing_public_key: bytes
    def __init__(self, address: _Optional[str] = ..., challenge: _Optional[str] = ..., signature: _Optional[bytes] = ..., name: _Optional[str] = ..., hardware: _Optional[_Union[_common_pb2.Hardware, _Mapping]] = ..., price_per_hour: _Optional[str] = ..., tier: _Optional[_Union[_common_pb2.ProviderTier, str]] = ..., slots: _Optional[int] = ..., cached_model_cids: _Optional[_Iterable[str]] = ..., runtime: _Optional[str] = ..., isolated: _Optional[bool] = ..., operator: _Optional[str] = ..., sealing_public_key: _Optional[bytes] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("provider_id", "session_token", "token_expires_at", "heartbeat_interval_s", "lease_ttl_s", "claim_chain_id", "claim_escrow")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    CLAIM_CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIM_ESCROW_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    session_token: str
    token_expires_at: _timestamp_pb2.Timestamp
    heartbeat_interval_s: int
    lease_ttl_s: int
    claim_chain_id: int
    claim_escrow: str
    def __init__(self, provider_id: _Optional[str] = ..., session_token: _Optional[str] = ..., token_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat_interval_s: _Optional[int] = ..., lease_ttl_s: _Optional[int] = ..., claim_chain_id: _Optional[int] = ..., claim_escrow: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("lease_ids", "telemetry", "free_slots", "cached_model_cids")
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    CACHED_MODEL_CIDS_FIELD_NUMBER: _ClassVar[int]
    lease_ids: _containers.RepeatedScalarFieldContainer[str]
    telemetry: _containers.RepeatedCompositeFieldContainer[_common_pb2.GpuTelemetry]
    free_slots: int
    cached_model_cids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lease_ids: _Optional[_Iterable[str]] = ..., telemetry: _Optional[_Iterable[_Union[_common_pb2.GpuTelemetry, _Mapping]]] = ..., free_slots: _Optional[int] = ..., cached_model_cids: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("lease_id", "task_id", "output_cid", "signature", "metrics_json", "output_key", "claim_amount", "claim_signature", "output_data")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    CLAIM_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CLAIM_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DATA_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    task_id: str
    output_cid: str
    signature: bytes
    metrics_json: str
    output_key: bytes
    claim_amount: str
    claim_signature: bytes
    output_data: bytes
    def __init__(self, lease_id: _Optional[str] = ..., task_id: _Optional[str] = ..., output_cid: _Optional[str] = ..., signature: _Optional[bytes] = ..., metrics_json: _Optional[str] = ..., output_key: _Optional[bytes] = ..., claim_amount: _Optional[str] = ..., claim_signature: _Optional[bytes] = ..., output_data: _Optional[bytes] = ...) -> None: ...

class TaskProgress(_message.Message):
    __slots__ = ("lease_id", "task_id", "step", "total_steps", "loss")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    task_id: str
    step: int
    total_steps: int
    loss: float
    def __init__(self, lease_id: _Optional[str] = ..., task_id: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ...) -> None: ...

class TaskFailure(_message.Message):
    __slots__ = ("lease_id", "task_id", "error", "retryable")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    task_id: str
    error: str
    retryable: bool
    def __init__(self, lease_id: _Optional[str] = ..., task_id: _Optional[str] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class HardwareCheck(_message.Message):
    __slots__ = ("check_id", "phase", "device", "n", "rows", "rounds", "leaf_rows", "seed_a", "seed_b", "deadline_s", "open_rows")
    CHECK_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    LEAF_ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_A_FIELD_NUMBER: _ClassVar[int]
    SEED_B_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    OPEN_ROWS_FIELD_NUMBER: _ClassVar[int]
    check_id: str
    phase: CheckPhase
    device: int
    n: int
    rows: int
    rounds: int
    leaf_rows: int
    seed_a: int
    seed_b: int
    deadline_s: float
    open_rows: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, check_id: _Optional[str] = ..., phase: _Optional[_Union[CheckPhase, str]] = ..., device: _Optional[int] = ..., n: _Optional[int] = ..., rows: _Optional[int] = ..., rounds: _Optional[int] = ..., leaf_rows: _Optional[int] = ..., seed_a: _Optional[int] = ..., seed_b: _Optional[int] = ..., deadline_s: _Optional[float] = ..., open_rows: _Optional[_Iterable[int]] = ...) -> None: ...

class CheckLeaf(_message.Message):
    __slots__ = ("index", "digests", "path")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    index: int
    digests: bytes
    path: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, index: _Optional[int] = ..., digests: _Optional[bytes] = ..., path: _Optional[_Iterable[bytes]] = ...) -> None: ...

class HardwareCheckReply(_message.Message):
    __slots__ = ("check_id", "phase", "root", "leaves", "error")
    CHECK_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    check_id: str
    phase: CheckPhase
    root: bytes
    leaves: _containers.RepeatedCompositeFieldContainer[CheckLeaf]
    error: str
    def __init__(self, check_id: _Optional[str] = ..., phase: _Optional[_Union[CheckPhase, str]] = ..., root: _Optional[bytes] = ..., leaves: _Optional[_Iterable[_Union[CheckLeaf, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class InvoiceLine(_message.Message):
    __slots__ = ("job", "amount")
    JOB_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    job: bytes
    amount: str
    def __init__(self, job: _Optional[bytes] = ..., amount: _Optional[str] = ...) -> None: ...

class InvoiceRequest(_message.Message):
    __slots__ = ("invoice_id", "lines")
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    invoice_id: str
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    def __init__(self, invoice_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ...) -> None: ...

class InvoiceReply(_message.Message):
    __slots__ = ("invoice_id", "signature", "error")
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    invoice_id: str
    signature: bytes
    error: str
    def __init__(self, invoice_id: _Optional[str] = ..., signature: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...

class ProviderMessage(_message.Message):
    __slots__ = ("heartbeat", "result", "failure", "check", "progress", "invoice")
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    INVOICE_FIELD_NUMBER: _ClassVar[int]
    heartbeat: Heartbeat
    result: TaskResult
    failure: TaskFailure
    check: HardwareCheckReply
    progress: TaskProgress
    invoice: InvoiceReply
    def __init__(self, heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., failure: _Optional[_Union[TaskFailure, _Mapping]] = ..., check: _Optional[_Union[HardwareCheckReply, _Mapping]] = ..., progress: _Optional[_Union[TaskProgress, _Mapping]] = ..., invoice: _Optional[_Union[InvoiceReply, _Mapping]] = ...) -> None: ...

class TaskLease(_message.Message):
    __slots__ = ("lease_id", "task_id", "job_id", "kind", "model_cid", "input_cid", "params_json", "timeout_s", "expires_at", "requirements", "aux_cid", "keys", "output_sealing_key", "claim_job", "adapter_cids", "inline", "inline_output_bytes")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_CID_FIELD_NUMBER: _ClassVar[int]
    INPUT_CID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    AUX_CID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SEALING_KEY_FIELD_NUMBER: _ClassVar[int]
    CLAIM_JOB_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CIDS_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    INLINE_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    task_id: str
    job_id: str
    kind: str
    model_cid: str
    input_cid: str
    params_json: str
    timeout_s: int
    expires_at: _timestamp_pb2.Timestamp
    requirements: _common_pb2.Requirements
    aux_cid: str
    keys: _containers.RepeatedCompositeFieldContainer[_common_pb2.SealedKey]
    output_sealing_key: bytes
    claim_job: bytes
    adapter_cids: _containers.RepeatedScalarFieldContainer[str]
    inline: _containers.RepeatedCompositeFieldContainer[InlineArtifact]
    inline_output_bytes: int
    def __init__(self, lease_id: _Optional[str] = ..., task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., kind: _Optional[str] = ..., model_cid: _Optional[str] = ..., input_cid: _Optional[str] = ..., params_json: _Optional[str] = ..., timeout_s: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requirements: _Optional[_Union[_common_pb2.Requirements, _Mapping]] = ..., aux_cid: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[_common_pb2.SealedKey, _Mapping]]] = ..., output_sealing_key: _Optional[bytes] = ..., claim_job: _Optional[bytes] = ..., adapter_cids: _Optional[_Iterable[str]] = ..., inline: _Optional[_Iterable[_Union[InlineArtifact, _Mapping]]] = ..., inline_output_bytes: _Optional[int] = ...) -> None: ...

class InlineArtifact(_message.Message):
    __slots__ = ("cid", "data")
    CID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    cid: str
    data: bytes
    def __init__(self, cid: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class SessionAccepted(_message.Message):
    __slots__ = ("provider_id", "heartbeat_interval_s", "lease_ttl_s")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    heartbeat_interval_s: int
    lease_ttl_s: int
    def __init__(self, provider_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[int] = ..., lease_ttl_s: _Optional[int] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("task_id", "accepted", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    accepted: bool
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelLease(_message.Message):
    __slots__ = ("lease_id", "task_id", "reason", "deliver")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DELIVER_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    task_id: str
    reason: str
    deliver: bool
    def __init__(self, lease_id: _Optional[str] = ..., task_id: _Optional[str] = ..., reason: _Optional[str] = ..., deliver: _Optional[bool] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("accepted", "lease", "ack", "cancel", "check", "invoice")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    INVOICE_FIELD_NUMBER: _ClassVar[int]
    accepted: SessionAccepted
    lease: TaskLease
    ack: ResultAck
    cancel: CancelLease
    check: HardwareCheck
    invoice: InvoiceRequest
    def __init__(self, accepted: _Optional[_Union[SessionAccepted, _Mapping]] = ..., lease: _Optional[_Union[TaskLease, _Mapping]] = ..., ack: _Optional[_Union[ResultAck, _Mapping]] = ..., cancel: _Optional[_Union[CancelLease, _Mapping]] = ..., check: _Optional[_Union[HardwareCheck, _Mapping]] = ..., invoice: _Optional[_Union[InvoiceRequest, _Mapping]] = ...) -> None: ...
