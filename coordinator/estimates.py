"""How long a task is expected to run on the reference provider (speed 1.0), for deadline-aware
scheduling: learned per job from its finished tasks, else a prior from the work it asks for."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from gpumesh.jobspec import JobSpec

REF_TOKENS_PER_S = 400.0  # decode tokens/s of one batched task on the reference provider
REF_STEP_S = 0.5  # one fine-tuning step on the reference provider
STARTUP_S = 10.0  # fetch inputs, load the model, start the runtime


@dataclass
class _Rate:
    seconds_per_prompt: float  # on the reference provider
    samples: int


class RuntimeEstimator:
    """Expected reference-seconds per task. ``observe`` a finished task (its wall time on a
    provider of a known speed); ``expected`` blends the job's observed rate into the prior."""

    def __init__(self, *, max_jobs: int = 10_000, weight: float = 0.3) -> None:
        self.max_jobs = max_jobs
        self.weight = weight  # of each new sample in the moving average
        self._rates: OrderedDict[str, _Rate] = OrderedDict()

    def prior(self, spec: JobSpec, prompts: int) -> float:
        if spec.kind == "finetune":
            steps = spec.finetune.get("steps", 100)
            steps = steps if isinstance(steps, int) and steps > 0 else 100
            return STARTUP_S + steps * REF_STEP_S
        return STARTUP_S + max(1, prompts) * spec.inference.max_new_tokens / REF_TOKENS_PER_S

    def expected(self, job_id: str, spec: JobSpec, prompts: int) -> float:
        rate = self._rates.get(job_id)
        value = self.prior(spec, prompts) if rate is None else STARTUP_S + max(1, prompts) * rate.seconds_per_prompt
        return min(value, float(spec.task_timeout_s))

    def observe(self, job_id: str, *, prompts: int, seconds: float, speed: float) -> None:
        if seconds <= 0 or speed <= 0:
            return
        per_prompt = max(0.0, seconds * speed - STARTUP_S) / max(1, prompts)
        rate = self._rates.pop(job_id, None)
        if rate is None:
            rate = _Rate(per_prompt, 1)
        else:
            rate = _Rate((1 - self.weight) * rate.seconds_per_prompt + self.weight * per_prompt, rate.samples + 1)
        self._rates[job_id] = rate  # most recent last
        while len(self._rates) > self.max_jobs:
            self._rates.popitem(last=False)
