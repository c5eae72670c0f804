"""The job specification, validated once here for the SDK, the CLI and the coordinator."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gpumesh.errors import InvalidArgument

JobKind = Literal["inference", "finetune", "embeddings"]
# When centralized capacity may run a job's tasks: never; when the open market cannot meet its
# requirements or deadline; always (the operator's trusted nodes only).
FallbackPolicy = Literal["never", "on_deadline", "always"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Requirements(_Strict):
    """What a provider must have. ``gpu_count`` 0 with ``allow_cpu`` admits CPU-only nodes."""

    gpu_count: int = Field(0, ge=0, le=64)
    gpu_models: tuple[str, ...] = ()
    min_vram_mb: int = Field(0, ge=0)
    allow_cpu: bool = True
    min_memory_mb: int = Field(0, ge=0)
    # Only providers whose workloads run sandboxed (no network, no host files); sealed jobs always.
    isolated: bool = False
    # Memory the model takes where it runs: VRAM of one (verified) GPU on a GPU node, host memory
    # on a CPU-only node (the model registry sets it for models named by name); 0 = not checked.
    model_memory_mb: int = Field(0, ge=0)

    @property
    def min_gpus(self) -> int:
        return max(self.gpu_count, 0 if self.allow_cpu else 1)


class InferenceParams(_Strict):
    max_new_tokens: int = Field(32, ge=1, le=4096)
    batch_size: int = Field(8, ge=1, le=1024)
    chat: bool = False


class VerificationParams(_Strict):
    """How much checking a job asks for: at least ``min_replication`` of its tasks re-executed
    elsewhere (the coordinator's adaptive rate applies when higher), and the share of the rest
    audited by re-scoring every record (None = the coordinator's default). ``allow_unchecked``:
    the submitter consents to results no check could be found for being delivered marked
    unchecked, at a discount (off: such a result waits for a check, else the job fails)."""

    min_replication: float | None = Field(None, ge=0, le=1)
    audit_rate: float | None = Field(None, ge=0, le=1)
    allow_unchecked: bool = False


class JobSpec(_Strict):
    name: str = Field("job", min_length=1, max_length=128)
    kind: JobKind = "inference"
    model_cid: str
    input_cid: str
    inference: InferenceParams = InferenceParams()
    # kind "finetune": the workload's FinetuneParams (gpumesh.finetune), checked
    # by the coordinator at submission; the input is the training JSONL, run as one task.
    finetune: dict[str, Any] = Field(default_factory=dict)
    requirements: Requirements = Requirements()
    verification: VerificationParams = VerificationParams()
    max_price_per_hour: int = Field(0, ge=0, le=2**256 - 1)  # token base units; 0 = any
    shard_size: int = Field(16, ge=1, le=100_000)
    max_attempts: int = Field(3, ge=1, le=20)
    task_timeout_s: int = Field(3600, ge=1, le=7 * 24 * 3600)
    deadline: datetime | None = None
    fallback: FallbackPolicy = "on_deadline"
    # Hex X25519 public key the outputs are sealed to (gpumesh.sealing); "" = stored in the clear.
    output_sealing_key: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    # LoRA adapters of model_cid the input lines may name (their "adapter" field); at most 64.
    adapter_cids: tuple[str, ...] = Field((), max_length=64)

    @field_validator("fallback", mode="before")
    @classmethod
    def _policy(cls, value):
        return value.replace("-", "_") if isinstance(value, str) else value  # "on-deadline" too

    @field_validator("model_cid", "input_cid")
    @classmethod
    def _cid(cls, value: str) -> str:
        from gpumesh.artifacts import parse_cid

        try:
            parse_cid(value)
        except InvalidArgument as exc:
            raise ValueError(exc.message) from exc
        return value

    @field_validator("adapter_cids")
    @classmethod
    def _adapters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cid in value:
            cls._cid(cid)
        if len(set(value)) != len(value):
            raise ValueError("an adapter is named twice")
        return value

    @field_validator("deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def validate_spec(data: dict) -> JobSpec:
    """Build a JobSpec, turning pydantic's errors into one InvalidArgument naming the field."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "spec." + ".".join(str(p) for p in first["loc"]) if first["loc"] else "spec"
        raise InvalidArgument(first["msg"], field=field) from None
