import pytest

from coordinator.settlement.payouts import JobPayout, TaskCharge, job_payout, task_cost


def test_task_cost_is_price_times_time_rounded_up():
    assert task_cost(TaskCharge("t", "0xa", 3600, 1.0)) == 1
    assert task_cost(TaskCharge("t", "0xa", 3600, 1.000001)) == 2
    assert task_cost(TaskCharge("t", "0xa", 7200, 1800)) == 3600
    assert task_cost(TaskCharge("t", "0xa", 0, 99)) == 0


def test_payouts_sum_per_provider_and_refund_the_rest():
    charges = [TaskCharge("t1", "0xb", 3600, 10), TaskCharge("t2", "0xa", 3600, 5), TaskCharge("t3", "0xb", 3600, 1)]
    assert job_payout(charges, 100) == JobPayout((("0xa", 5), ("0xb", 11)), 84)


def test_costs_over_budget_are_scaled_down_and_never_exceed_it():
    charges = [TaskCharge("t1", "0xa", 3600, 300), TaskCharge("t2", "0xb", 3600, 100)]
    out = job_payout(charges, 101)
    assert out.paid <= 101 and out.refund == 101 - out.paid
    assert dict(out.payouts) == {"0xa": 75, "0xb": 25}
    assert job_payout([], 50) == JobPayout((), 50)
    with pytest.raises(ValueError):
        job_payout([], -1)
