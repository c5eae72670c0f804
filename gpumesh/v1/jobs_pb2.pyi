import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gpumesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetMarketRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GpuClassMarket(_message.Message):
    __slots__ = ("key", "label", "providers", "slots_total", "slots_free", "price_min", "price_p10", "price_p50", "price_p90", "tokens_per_s", "samples", "speed", "memory_mb", "tier")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FREE_FIELD_NUMBER: _ClassVar[int]
    PRICE_MIN_FIELD_NUMBER: _ClassVar[int]
    PRICE_P10_FIELD_NUMBER: _ClassVar[int]
    PRICE_P50_FIELD_NUMBER: _ClassVar[int]
    PRICE_P90_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    key: str
    label: str
    providers: int
    slots_total: int
    slots_free: int
    price_min: str
    price_p10: str
    price_p50: str
    price_p90: str
    tokens_per_s: float
    samples: int
    speed: float
    memory_mb: int
    tier: str
    def __init__(self, key: _Optional[str] = ..., label: _Optional[str] = ..., providers: _Optional[int] = ..., slots_total: _Optional[int] = ..., slots_free: _Optional[int] = ..., price_min: _Optional[str] = ..., price_p10: _Optional[str] = ..., price_p50: _Optional[str] = ..., price_p90: _Optional[str] = ..., tokens_per_s: _Optional[float] = ..., samples: _Optional[int] = ..., speed: _Optional[float] = ..., memory_mb: _Optional[int] = ..., tier: _Optional[str] = ...) -> None: ...

class FallbackUsage(_message.Message):
    __slots__ = ("centralized_providers", "tasks_on_centralized", "tasks_routed", "instances_live")
    CENTRALIZED_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    TASKS_ON_CENTRALIZED_FIELD_NUMBER: _ClassVar[int]
    TASKS_ROUTED_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_LIVE_FIELD_NUMBER: _ClassVar[int]
    centralized_providers: int
    tasks_on_centralized: int
    tasks_routed: int
    instances_live: int
    def __init__(self, centralized_providers: _Optional[int] = ..., tasks_on_centralized: _Optional[int] = ..., tasks_routed: _Optional[int] = ..., instances_live: _Optional[int] = ...) -> None: ...

class MarketPoint(_message.Message):
    __slots__ = ("at", "queue_depth", "running", "slots_free", "price_p50", "tokens_per_s")
    class PriceP50Entry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TokensPerSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FREE_FIELD_NUMBER: _ClassVar[int]
    PRICE_P50_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    at: float
    queue_depth: int
    running: int
    slots_free: int
    price_p50: _containers.ScalarMap[str, str]
    tokens_per_s: _containers.ScalarMap[str, float]
    def __init__(self, at: _Optional[float] = ..., queue_depth: _Optional[int] = ..., running: _Optional[int] = ..., slots_free: _Optional[int] = ..., price_p50: _Optional[_Mapping[str, str]] = ..., tokens_per_s: _Optional[_Mapping[str, float]] = ...) -> None: ...

class MarketView(_message.Message):
    __slots__ = ("generated_at", "classes", "providers", "queue_depth", "running", "fallback", "history")
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    generated_at: _timestamp_pb2.Timestamp
    classes: _containers.RepeatedCompositeFieldContainer[GpuClassMarket]
    providers: int
    queue_depth: int
    running: int
    fallback: FallbackUsage
    history: _containers.RepeatedCompositeFieldContainer[MarketPoint]
    def __init__(self, generated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., classes: _Optional[_Iterable[_Union[GpuClassMarket, _Mapping]]] = ..., providers: _Optional[int] = ..., queue_depth: _Optional[int] = ..., running: _Optional[int] = ..., fallback: _Optional[_Union[FallbackUsage, _Mapping]] = ..., history: _Optional[_Iterable[_Union[MarketPoint, _Mapping]]] = ...) -> None: ...

class QuoteJobRequest(_message.Message):
    __slots__ = ("spec", "requests", "prompt_tokens", "output_tokens", "deadline_s")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    requests: int
    prompt_tokens: int
    output_tokens: int
    deadline_s: int
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., deadline_s: _Optional[int] = ...) -> None: ...

class QuoteClass(_message.Message):
    __slots__ = ("key", "label", "providers", "price_per_hour", "eta_s", "cost", "meets_deadline", "chosen", "tier")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    MEETS_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    key: str
    label: str
    providers: int
    price_per_hour: str
    eta_s: float
    cost: str
    meets_deadline: bool
    chosen: bool
    tier: str
    def __init__(self, key: _Optional[str] = ..., label: _Optional[str] = ..., providers: _Optional[int] = ..., price_per_hour: _Optional[str] = ..., eta_s: _Optional[float] = ..., cost: _Optional[str] = ..., meets_deadline: _Optional[bool] = ..., chosen: _Optional[bool] = ..., tier: _Optional[str] = ...) -> None: ...

class Quote(_message.Message):
    __slots__ = ("requests", "tasks", "prompt_tokens", "output_tokens", "cost_low", "cost_expected", "cost_high", "eta_s", "classes", "fallback_needed", "fallback_reason", "servable", "reason", "deadline_s", "verification_share", "basis", "quoted_at")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_LOW_FIELD_NUMBER: _ClassVar[int]
    COST_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    COST_HIGH_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_NEEDED_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    SERVABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_SHARE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    QUOTED_AT_FIELD_NUMBER: _ClassVar[int]
    requests: int
    tasks: int
    prompt_tokens: int
    output_tokens: int
    cost_low: str
    cost_expected: str
    cost_high: str
    eta_s: float
    classes: _containers.RepeatedCompositeFieldContainer[QuoteClass]
    fallback_needed: bool
    fallback_reason: str
    servable: bool
    reason: str
    deadline_s: int
    verification_share: float
    basis: str
    quoted_at: _timestamp_pb2.Timestamp
    def __init__(self, requests: _Optional[int] = ..., tasks: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_low: _Optional[str] = ..., cost_expected: _Optional[str] = ..., cost_high: _Optional[str] = ..., eta_s: _Optional[float] = ..., classes: _Optional[_Iterable[_Union[QuoteClass, _Mapping]]] = ..., fallback_needed: _Optional[bool] = ..., fallback_reason: _Optional[str] = ..., servable: _Optional[bool] = ..., reason: _Optional[str] = ..., deadline_s: _Optional[int] = ..., verification_share: _Optional[float] = ..., basis: _Optional[str] = ..., quoted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetEarningsRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class Earnings(_message.Message):
    __slots__ = ("address", "paid", "pending", "slashed", "tasks_paid", "tasks_pending", "slashes", "provider_ids")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PAID_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    SLASHED_FIELD_NUMBER: _ClassVar[int]
    TASKS_PAID_FIELD_NUMBER: _ClassVar[int]
    TASKS_PENDING_FIELD_NUMBER: _ClassVar[int]
    SLASHES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_IDS_FIELD_NUMBER: _ClassVar[int]
    address: str
    paid: str
    pending: str
    slashed: str
    tasks_paid: int
    tasks_pending: int
    slashes: int
    provider_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, address: _Optional[str] = ..., paid: _Optional[str] = ..., pending: _Optional[str] = ..., slashed: _Optional[str] = ..., tasks_paid: _Optional[int] = ..., tasks_pending: _Optional[int] = ..., slashes: _Optional[int] = ..., provider_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListJobEventsRequest(_message.Message):
    __slots__ = ("job_id", "after_seq", "limit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    limit: int
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("seq", "created_at", "level", "type", "message", "data_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    created_at: _timestamp_pb2.Timestamp
    level: str
    type: str
    message: str
    data_json: str
    def __init__(self, seq: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., level: _Optional[str] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., data_json: _Optional[str] = ...) -> None: ...

class ListJobEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "with_tasks")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WITH_TASKS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    with_tasks: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., with_tasks: _Optional[bool] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("name", "spend_cap")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEND_CAP_FIELD_NUMBER: _ClassVar[int]
    name: str
    spend_cap: str
    def __init__(self, name: _Optional[str] = ..., spend_cap: _Optional[str] = ...) -> None: ...

class ApiKeyInfo(_message.Message):
    __slots__ = ("key", "key_id", "wallet", "name", "spend_cap", "spent", "created_at", "revoked")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    WALLET_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEND_CAP_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    key: str
    key_id: str
    wallet: str
    name: str
    spend_cap: str
    spent: str
    created_at: _timestamp_pb2.Timestamp
    revoked: bool
    def __init__(self, key: _Optional[str] = ..., key_id: _Optional[str] = ..., wallet: _Optional[str] = ..., name: _Optional[str] = ..., spend_cap: _Optional[str] = ..., spent: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked: _Optional[bool] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKeyInfo, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "cid", "format", "size_bytes", "min_memory_mb", "owned_by", "created_at", "base")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cid: str
    format: str
    size_bytes: int
    min_memory_mb: int
    owned_by: str
    created_at: _timestamp_pb2.Timestamp
    base: str
    def __init__(self, name: _Optional[str] = ..., cid: _Optional[str] = ..., format: _Optional[str] = ..., size_bytes: _Optional[int] = ..., min_memory_mb: _Optional[int] = ..., owned_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., base: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class AddModelRequest(_message.Message):
    __slots__ = ("name", "cid", "min_memory_mb", "replace", "base")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cid: str
    min_memory_mb: int
    replace: bool
    base: str
    def __init__(self, name: _Optional[str] = ..., cid: _Optional[str] = ..., min_memory_mb: _Optional[int] = ..., replace: _Optional[bool] = ..., base: _Optional[str] = ...) -> None: ...

class GetSealingKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SealingKeyInfo(_message.Message):
    __slots__ = ("public_key", "fingerprint")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    fingerprint: str
    def __init__(self, public_key: _Optional[bytes] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class GetSettlementInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SettlementInfo(_message.Message):
    __slots__ = ("enabled", "chain_url", "chain_id", "token", "escrow", "registry", "min_escrow_window_s", "min_stake")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    CHAIN_URL_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ESCROW_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    MIN_ESCROW_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    MIN_STAKE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    chain_url: str
    chain_id: int
    token: str
    escrow: str
    registry: str
    min_escrow_window_s: int
    min_stake: str
    def __init__(self, enabled: _Optional[bool] = ..., chain_url: _Optional[str] = ..., chain_id: _Optional[int] = ..., token: _Optional[str] = ..., escrow: _Optional[str] = ..., registry: _Optional[str] = ..., min_escrow_window_s: _Optional[int] = ..., min_stake: _Optional[str] = ...) -> None: ...

class InferenceParams(_message.Message):
    __slots__ = ("max_new_tokens", "batch_size", "chat")
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    max_new_tokens: int
    batch_size: int
    chat: bool
    def __init__(self, max_new_tokens: _Optional[int] = ..., batch_size: _Optional[int] = ..., chat: _Optional[bool] = ...) -> None: ...

class VerificationParams(_message.Message):
    __slots__ = ("min_replication", "audit_rate", "allow_unchecked")
    MIN_REPLICATION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_RATE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNCHECKED_FIELD_NUMBER: _ClassVar[int]
    min_replication: float
    audit_rate: float
    allow_unchecked: bool
    def __init__(self, min_replication: _Optional[float] = ..., audit_rate: _Optional[float] = ..., allow_unchecked: _Optional[bool] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "kind", "model_cid", "input_cid", "inference", "requirements", "max_price_per_hour", "shard_size", "max_attempts", "task_timeout_s", "deadline", "verification", "finetune_json", "fallback", "output_sealing_key", "adapter_cids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_CID_FIELD_NUMBER: _ClassVar[int]
    INPUT_CID_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    SHARD_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TASK_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    FINETUNE_JSON_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SEALING_KEY_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CIDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    model_cid: str
    input_cid: str
    inference: InferenceParams
    requirements: _common_pb2.Requirements
    max_price_per_hour: str
    shard_size: int
    max_attempts: int
    task_timeout_s: int
    deadline: _timestamp_pb2.Timestamp
    verification: VerificationParams
    finetune_json: str
    fallback: str
    output_sealing_key: bytes
    adapter_cids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., model_cid: _Optional[str] = ..., input_cid: _Optional[str] = ..., inference: _Optional[_Union[InferenceParams, _Mapping]] = ..., requirements: _Optional[_Union[_common_pb2.Requirements, _Mapping]] = ..., max_price_per_hour: _Optional[str] = ..., shard_size: _Optional[int] = ..., max_attempts: _Optional[int] = ..., task_timeout_s: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verification: _Optional[_Union[VerificationParams, _Mapping]] = ..., finetune_json: _Optional[str] = ..., fallback: _Optional[str] = ..., output_sealing_key: _Optional[bytes] = ..., adapter_cids: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key", "escrow_key", "input_keys")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ESCROW_KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_KEYS_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    idempotency_key: str
    escrow_key: str
    input_keys: _containers.RepeatedCompositeFieldContainer[_common_pb2.SealedKey]
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., escrow_key: _Optional[str] = ..., input_keys: _Optional[_Iterable[_Union[_common_pb2.SealedKey, _Mapping]]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class TaskSummary(_message.Message):
    __slots__ = ("task_id", "index", "state", "provider_id", "attempts", "output_cid", "error", "metrics_json", "role", "verifies", "verdict")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VERIFIES_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    index: int
    state: _common_pb2.TaskState
    provider_id: str
    attempts: int
    output_cid: str
    error: str
    metrics_json: str
    role: str
    verifies: str
    verdict: str
    def __init__(self, task_id: _Optional[str] = ..., index: _Optional[int] = ..., state: _Optional[_Union[_common_pb2.TaskState, str]] = ..., provider_id: _Optional[str] = ..., attempts: _Optional[int] = ..., output_cid: _Optional[str] = ..., error: _Optional[str] = ..., metrics_json: _Optional[str] = ..., role: _Optional[str] = ..., verifies: _Optional[str] = ..., verdict: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "spec", "state", "tasks_total", "tasks_done", "tasks_running", "output_cid", "error", "created_at", "updated_at", "tasks", "prompts_total", "pending_reason", "escrow_key", "budget", "submitter", "settlement", "settle_tx", "output_key", "quote", "cost")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TASKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TASKS_DONE_FIELD_NUMBER: _ClassVar[int]
    TASKS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    ESCROW_KEY_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    SETTLE_TX_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    QUOTE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: JobSpec
    state: _common_pb2.JobState
    tasks_total: int
    tasks_done: int
    tasks_running: int
    output_cid: str
    error: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSummary]
    prompts_total: int
    pending_reason: str
    escrow_key: str
    budget: str
    submitter: str
    settlement: str
    settle_tx: str
    output_key: bytes
    quote: Quote
    cost: str
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., tasks_total: _Optional[int] = ..., tasks_done: _Optional[int] = ..., tasks_running: _Optional[int] = ..., output_cid: _Optional[str] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[TaskSummary, _Mapping]]] = ..., prompts_total: _Optional[int] = ..., pending_reason: _Optional[str] = ..., escrow_key: _Optional[str] = ..., budget: _Optional[str] = ..., submitter: _Optional[str] = ..., settlement: _Optional[str] = ..., settle_tx: _Optional[str] = ..., output_key: _Optional[bytes] = ..., quote: _Optional[_Union[Quote, _Mapping]] = ..., cost: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ("connected_only",)
    CONNECTED_ONLY_FIELD_NUMBER: _ClassVar[int]
    connected_only: bool
    def __init__(self, connected_only: _Optional[bool] = ...) -> None: ...

class ProviderInfo(_message.Message):
    __slots__ = ("provider_id", "address", "name", "hardware", "price_per_hour", "tier", "connected", "slots", "running", "runtime", "isolated", "telemetry", "last_seen", "tasks_completed", "verified_valid", "verified_invalid", "slashed", "reputation", "operator", "hardware_checks", "hardware_verified", "edge_records")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ISOLATED_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    TASKS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_VALID_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_INVALID_FIELD_NUMBER: _ClassVar[int]
    SLASHED_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_CHECKS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    EDGE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    address: str
    name: str
    hardware: _common_pb2.Hardware
    price_per_hour: str
    tier: _common_pb2.ProviderTier
    connected: bool
    slots: int
    running: int
    runtime: str
    isolated: bool
    telemetry: _containers.RepeatedCompositeFieldContainer[_common_pb2.GpuTelemetry]
    last_seen: _timestamp_pb2.Timestamp
    tasks_completed: int
    verified_valid: int
    verified_invalid: int
    slashed: int
    reputation: float
    operator: str
    hardware_checks: _containers.RepeatedCompositeFieldContainer[DeviceCheck]
    hardware_verified: bool
    edge_records: int
    def __init__(self, provider_id: _Optional[str] = ..., address: _Optional[str] = ..., name: _Optional[str] = ..., hardware: _Optional[_Union[_common_pb2.Hardware, _Mapping]] = ..., price_per_hour: _Optional[str] = ..., tier: _Optional[_Union[_common_pb2.ProviderTier, str]] = ..., connected: _Optional[bool] = ..., slots: _Optional[int] = ..., running: _Optional[int] = ..., runtime: _Optional[str] = ..., isolated: _Optional[bool] = ..., telemetry: _Optional[_Iterable[_Union[_common_pb2.GpuTelemetry, _Mapping]]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tasks_completed: _Optional[int] = ..., verified_valid: _Optional[int] = ..., verified_invalid: _Optional[int] = ..., slashed: _Optional[int] = ..., reputation: _Optional[float] = ..., operator: _Optional[str] = ..., hardware_checks: _Optional[_Iterable[_Union[DeviceCheck, _Mapping]]] = ..., hardware_verified: _Optional[bool] = ..., edge_records: _Optional[int] = ...) -> None: ...

class DeviceCheck(_message.Message):
    __slots__ = ("device", "claimed", "verified", "verified_label", "tflops", "checked_at", "source", "note")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_LABEL_FIELD_NUMBER: _ClassVar[int]
    TFLOPS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    device: int
    claimed: str
    verified: str
    verified_label: str
    tflops: float
    checked_at: _timestamp_pb2.Timestamp
    source: str
    note: str
    def __init__(self, device: _Optional[int] = ..., claimed: _Optional[str] = ..., verified: _Optional[str] = ..., verified_label: _Optional[str] = ..., tflops: _Optional[float] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderInfo]
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderInfo, _Mapping]]] = ...) -> None: ...
