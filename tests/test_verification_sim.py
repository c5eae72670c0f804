"""The verification simulation (bench/verification_sim.py) on small populations: seconds, seeded."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from coordinator.verification.plan import AuditPolicy, VerificationPlan
from coordinator.verification.policy import ReplicationPolicy

_PATH = Path(__file__).resolve().parent.parent / "bench" / "verification_sim.py"
_spec = importlib.util.spec_from_file_location("verification_sim", _PATH)
sim = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = sim
_spec.loader.exec_module(sim)

REPLICA_ONLY = sim.SCHEMES["(a) replica-only adapt."]
AUDITS = sim.SCHEMES["(b) adaptive + audits"]
SAMPLED = sim.SCHEMES["(s) sampled audits (old)"]
FULL = sim.SCHEMES["(c) full 2x replication"]
SMALL = {"providers": 200, "tasks": 8000, "dishonest": 0.3, "honest_error": 0.0}


def _cheated(out):
    return [p for p in out.providers if p.cheat_rate > 0 and p.first_wrong_at is not None]


def test_the_schemes_are_the_coordinator_plans():
    assert AUDITS == VerificationPlan()  # (b) is the coordinator's default plan
    assert AUDITS.audit.records == 0 and AUDITS.audit.drawn(16) == 16  # full coverage
    assert REPLICA_ONLY.audit.rate == 0 and SAMPLED.audit.records == 2
    out = sim.simulate(FULL, seed=3, **SMALL)
    assert out.audits == 0 and out.replicas == out.tasks == SMALL["tasks"]


def test_full_replication_catches_every_cheater_on_its_first_wrong_result():
    out = sim.simulate(FULL, seed=1, **SMALL)
    cheated = _cheated(out)
    assert len(cheated) > 30
    assert all(p.caught_at == p.first_wrong_at for p in cheated)
    assert out.wrong_accepted == 0
    assert not any(p.losses for p in out.providers if p.cheat_rate == 0)  # no glitches: nobody honest loses


def test_audits_catch_more_than_replica_only_for_about_the_audit_cost():
    kw = dict(SMALL, providers=300, tasks=12000)
    a = [sim.simulate(REPLICA_ONLY, seed=s, **kw) for s in (11, 12)]
    b = [sim.simulate(AUDITS, seed=s, **kw) for s in (11, 12)]
    caught = lambda outs: sum(p.caught_at is not None for o in outs for p in _cheated(o))  # noqa: E731
    cheated = lambda outs: sum(len(_cheated(o)) for o in outs)  # noqa: E731
    assert caught(b) / cheated(b) > caught(a) / cheated(a) + 0.05
    assert sum(o.wrong_accepted for o in b) < sum(o.wrong_accepted for o in a)
    audit_cost = AUDITS.audit.cost(16, sim.DEFAULT_RESCORE_COST)
    assert audit_cost == pytest.approx(17 / 16 * sim.DEFAULT_RESCORE_COST)  # 16 records + 1 decoy
    for oa, ob in zip(a, b):  # same population and draws: (b) costs at most the audits on top of (a)
        assert ob.extra(sim.DEFAULT_RESCORE_COST) <= oa.extra(sim.DEFAULT_RESCORE_COST) + audit_cost + 0.01
    # a whole-task cheat cannot pass an audit: with every unreplicated result audited, it is caught at once
    # (or before, as a lazy auditor)
    whole = [p for o in b for p in _cheated(o) if p.fraction == 1.0]
    assert len(whole) > 10 and all(p.caught_at <= p.first_wrong_at for p in whole)
    assert sum(p.caught_at == p.first_wrong_at for p in whole) > len(whole) / 2


@pytest.mark.parametrize("rescore_cost", [0.25, 1.0])
def test_extra_compute_matches_the_analytic_cost(rescore_cost):
    p, rate, tasks = 0.1, 0.5, 20000
    plan = VerificationPlan(ReplicationPolicy(p_new=p, probation=0, p_floor=p), AuditPolicy(rate=rate, records=2))
    out = sim.simulate(plan, providers=100, tasks=tasks, dishonest=0.0, honest_error=0.0, seed=5)
    assert out.replica_disputes == out.audit_disputes == 0  # nobody is wrong: no referee
    per_audit = plan.audit.cost(16, rescore_cost)
    assert per_audit == pytest.approx(3 / 16 * rescore_cost)  # 2 records + 1 decoy of 16
    expected = p + (1 - p) * rate * per_audit
    assert out.extra(rescore_cost) == pytest.approx(expected, abs=0.008)  # ~4 sigma of the replica draws
    assert out.audits / tasks == pytest.approx((1 - p) * rate, abs=0.015)


@pytest.mark.parametrize(("fraction", "hit"), [(1 / 16, 2 / 16), (0.25, 1 - 66 / 120)])
def test_an_audit_finds_a_cheated_result_with_the_hypergeometric_chance(monkeypatch, fraction, hit):
    monkeypatch.setattr(sim, "CHEAT_RATES", (0.3,))
    monkeypatch.setattr(sim, "CHEAT_FRACTIONS", (fraction,))
    assert sim.audit_hit(16, max(1, round(fraction * 16)), AuditPolicy(records=2)) == pytest.approx(hit)
    assert sim.audit_hit(16, max(1, round(fraction * 16)), AuditPolicy()) == 1.0  # full coverage finds it
    plan = VerificationPlan(ReplicationPolicy(p_new=0.02, probation=0, p_floor=0.02),  # nearly all audited
                            AuditPolicy(records=2))
    n = hits = 0
    for seed in (21, 22):
        out = sim.simulate(plan, providers=400, tasks=10000, dishonest=0.5, honest_error=0.0, seed=seed,
                           lazy=0.0)
        n, hits = n + out.cheated_audits, hits + out.cheated_audits_hit
    assert n > 400
    assert hits / n == pytest.approx(hit, abs=4 * (hit * (1 - hit) / n) ** 0.5)


def test_a_decoy_catches_a_lazy_auditor_and_without_one_it_is_never_caught(monkeypatch):
    monkeypatch.setattr(sim, "CHEAT_RATES", (0.2,))  # a lazy auditor skips an audit with its cheat rate
    kw = dict(SMALL, lazy=1.0)
    out = sim.simulate(AUDITS, seed=31, **kw)
    lazy = [p for p in out.providers if p.skipped]
    assert len(lazy) > 5 and all(p.losses > 0 for p in lazy)
    assert sum(p.caught_by == "auditor" for p in lazy) > 0
    blind = sim.simulate(VerificationPlan(audit=AuditPolicy(decoys=0)), seed=31, **kw)
    assert sum(p.skipped for p in blind.providers) > 0
    assert not any(p.caught_by == "auditor" for p in blind.providers)


def test_audit_false_alarms_slash_only_the_honest_auditor():
    kw = dict(providers=100, tasks=5000, dishonest=0.0, honest_error=0.0, seed=41)
    assert not any(p.losses for p in sim.simulate(AUDITS, **kw).providers)
    noisy = sim.simulate(AUDITS, audit_fp=0.01, **kw)
    assert noisy.audit_disputes > 0
    assert sum(p.losses for p in noisy.providers) == noisy.audit_disputes  # the auditor, never the primary
    assert noisy.wrong_accepted == 0


def test_main_prints_the_table_and_the_target_verdict(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["verification_sim.py", "--providers", "100", "--tasks", "3000",
                                      "--dishonest", "0.3"])
    sim.main()
    text = capsys.readouterr().out
    for name in sim.SCHEMES:
        assert name in text
    assert "target for (b)" in text and "rescore/generate ratio used: " in text
    assert "colluding rings" in text and "cost target holds up to a rescore/generate ratio of" in text


def test_full_audits_catch_one_wrong_record_in_sixteen_where_samples_miss_it(monkeypatch):
    monkeypatch.setattr(sim, "CHEAT_RATES", (0.05,))
    monkeypatch.setattr(sim, "CHEAT_FRACTIONS", (1 / 16,))
    kw = dict(providers=300, tasks=20000, dishonest=0.5, honest_error=0.0, lazy=0.0)
    full = sim.simulate_runs(AUDITS, runs=2, seed=51, **kw)
    sampled = sim.simulate_runs(SAMPLED, runs=2, seed=51, **kw)
    f_full, f_s = sim.figures(full, 0.1), sim.figures(sampled, 0.1)
    assert f_full["window"] >= 0.99 and f_full["wrong_rec"] < f_s["wrong_rec"] / 3
    assert full.cheated_audits_hit == full.cheated_audits > 100  # every audited cheated result is caught


def test_rings_never_check_each_other_under_the_independence_rule(monkeypatch):
    monkeypatch.setattr(sim, "CHEAT_RATES", (0.2,))
    kw = dict(providers=60, tasks=6000, dishonest=0.5, honest_error=0.0, lazy=0.0, rings=1.0, ring_size=3)
    honest = sim.simulate(AUDITS, seed=61, **kw)
    cheaters = [p for p in honest.providers if p.cheat_rate > 0]
    assert sum(p.ring >= 0 for p in cheaters) >= len(cheaters) - 2  # all but a ring's remainder
    caught = sim.figures(honest, 0.1)["window"]
    blind = sim.simulate(AUDITS, seed=61, independent=False, **kw)  # partners vouch for each other
    assert caught >= 0.99 and blind.wrong_records > honest.wrong_records


def test_honest_nondeterminism_is_not_slashed_but_the_band_false_rejects_cost_fp():
    kw = dict(providers=200, tasks=20000, dishonest=0.0, honest_error=0.05, seed=71)
    out = sim.simulate(AUDITS, **kw)
    assert out.replica_disputes > 0 and not any(p.losses for p in out.providers)
    noisy = sim.simulate(AUDITS, referee_fr=0.5, **kw)
    assert any(p.losses for p in noisy.providers)


def test_the_measured_ratio_is_read_from_the_bench_file(tmp_path):
    f = tmp_path / "r.json"
    f.write_text('{"cpu": {"device": "CPU (2 cores)", "ratio": 0.3, "models": {"tiny": {"ratio": 0.3}}}}')
    assert sim.measured_rescore_cost(f)[0] == 0.3 and "CPU" in sim.measured_rescore_cost(f)[1]
    f.write_text('{"cpu": {"device": "c", "ratio": 0.3, "models": {}}, "gpu": {"device": "H100", "ratio": 0.04, '
                 '"models": {}}}')
    assert sim.measured_rescore_cost(f) [0] == 0.04
    assert sim.measured_rescore_cost(tmp_path / "none.json")[0] == sim.DEFAULT_RESCORE_COST
