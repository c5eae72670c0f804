"""The output of a fine-tune task, as the provider uploads it and the coordinator reads it.

A fine-tune's output CID names a small JSON index (:class:`FinetuneOutput`): the CID of each
checkpoint (a deterministic tar of ``step-XXXXXX/``: trainable weights, optimizer state and
manifest), of the final adapter or model, and of the loss log. Verification replays one segment
from a checkpoint's CID; submitters fetch the final weights by theirs.

A replay's output CID names a tar of the replay directory: ``start.safetensors`` (the trainable
tensors the segment started from) and ``step-XXXXXX/weights.safetensors`` (where it ended).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FORMAT = "gpumesh-finetune-output/1"


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int = Field(ge=1)
    cid: str = Field(min_length=1)


class FinetuneOutput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = FORMAT
    steps: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)
    checkpoints: tuple[Checkpoint, ...]
    final: str
    loss: str

    @classmethod
    def parse(cls, data: bytes) -> FinetuneOutput:
        """The index, or ValueError saying what is wrong with it."""
        try:
            out = cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"not a fine-tune output index: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        if out.format != FORMAT:
            raise ValueError(f"unknown fine-tune output format {out.format!r}")
        return out

    def expected_steps(self) -> list[int]:
        """Checkpoint steps a complete run writes: every ``checkpoint_every`` and the last."""
        return sorted({*range(self.checkpoint_every, self.steps + 1, self.checkpoint_every), self.steps})

    def problem(self, steps: int, checkpoint_every: int) -> str:
        """Why this index is not the output of a run with these parameters ("" if it is)."""
        if (self.steps, self.checkpoint_every) != (steps, checkpoint_every):
            return (f"claims {self.steps} steps with checkpoints every {self.checkpoint_every}; the job asked for "
                    f"{steps} every {checkpoint_every}")
        have = [c.step for c in self.checkpoints]
        if have != self.expected_steps():
            return f"checkpoints at steps {have}, expected {self.expected_steps()}"
        return ""

    def cid_at(self, step: int) -> str:
        return next(c.cid for c in self.checkpoints if c.step == step)
