"""Expected task runtimes: the prior from the work asked for, then what the job's tasks took."""

from coordinator.estimates import REF_TOKENS_PER_S, STARTUP_S, RuntimeEstimator
from gpumesh.jobspec import InferenceParams, JobSpec

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def spec(**kw) -> JobSpec:
    return JobSpec(model_cid=CID, input_cid=CID, **kw)


def test_prior_scales_with_prompts_and_tokens_and_is_capped_by_the_task_timeout():
    est = RuntimeEstimator()
    s = spec(inference=InferenceParams(max_new_tokens=100))
    assert est.expected("j", s, 8) == STARTUP_S + 8 * 100 / REF_TOKENS_PER_S
    assert est.expected("j", s, 16) > est.expected("j", s, 8)
    assert est.expected("j", spec(task_timeout_s=5), 1000) == 5.0
    assert est.prior(spec(kind="finetune", finetune={"steps": 40}), 1) == STARTUP_S + 40 * 0.5


def test_observed_durations_normalised_by_provider_speed_replace_the_prior():
    est = RuntimeEstimator(weight=0.5)
    s = spec()
    # A speed-2 provider took 30 s for 10 prompts: 60 reference-seconds, 5 per prompt after startup.
    est.observe("j", prompts=10, seconds=30.0, speed=2.0)
    assert est.expected("j", s, 10) == STARTUP_S + 10 * 5.0
    est.observe("j", prompts=10, seconds=10.0 + STARTUP_S, speed=1.0)  # 1 per prompt: the average moves
    assert est.expected("j", s, 10) == STARTUP_S + 10 * 3.0
    assert est.expected("other", s, 10) == est.prior(s, 10)


def test_memory_is_bounded_oldest_job_first():
    est = RuntimeEstimator(max_jobs=2)
    for job in ("a", "b", "c"):
        est.observe(job, prompts=1, seconds=100.0, speed=1.0)
    s = spec()
    assert est.expected("a", s, 1) == est.prior(s, 1)
    assert est.expected("c", s, 1) != est.prior(s, 1)
