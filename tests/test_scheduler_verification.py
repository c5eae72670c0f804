"""The verification rules of the scheduler: referees on centralized providers, checks on other
operators, ineligible providers left out, trusted providers preferred."""

from __future__ import annotations

from dataclasses import replace

from coordinator.models import ProviderTier
from coordinator.scheduling.rules import Candidate, Demand, independence_rule, reasons, reputation_rule, tier_rule
from coordinator.scheduling.scheduler import PendingTask, schedule
from gpumesh.jobspec import Requirements

CENTRALIZED = ProviderTier.CENTRALIZED.value


def cand(pid: str, *, price: int = 10, slots: int = 4, operator: str = "", tier: str = "OPEN",
         trust: float = 1.0, eligible: bool = True) -> Candidate:
    return Candidate(pid, (), 64_000, price, slots, operator=operator or f"0x{pid}", tier=tier, trust=trust,
                     eligible=eligible)


def demand(*, exclude=(), tier: str = "") -> Demand:
    return Demand(Requirements(), 0, exclude=frozenset(exclude), tier=tier)


def tasks(n: int, d: Demand) -> list[PendingTask]:
    return [PendingTask(f"t{i}", "j", d) for i in range(n)]


def placed(plan) -> list[str]:
    return [a.provider_id for a in plan.assignments]


def test_a_referee_goes_only_to_centralized_providers():
    cheap_open = cand("open", price=1)
    trusted = cand("central", price=50, tier=CENTRALIZED)
    plan = schedule(tasks(3, demand(tier=CENTRALIZED)), [cheap_open, trusted])
    assert placed(plan) == ["central"] * 3 and plan.unschedulable == {}
    assert placed(schedule(tasks(1, demand()), [cheap_open, trusted])) == ["open"]  # anyone else: the cheapest
    assert tier_rule(demand(tier=CENTRALIZED), cheap_open) == \
        "needs a centralized provider (a referee), provider is open"
    assert tier_rule(demand(tier=CENTRALIZED), trusted) is None and tier_rule(demand(), cheap_open) is None


def test_a_referee_without_a_centralized_provider_is_explained():
    plan = schedule(tasks(1, demand(tier=CENTRALIZED)), [cand("a"), cand("b", price=1)])
    assert plan.assignments == []
    assert "no feasible provider among 2" in plan.unschedulable["t0"]
    assert "needs a centralized provider (a referee), provider is open (2 provider(s))" in plan.unschedulable["t0"]


def test_a_check_never_goes_to_the_checked_operator():
    same = cand("same", price=1, operator="0xabc")
    same_other_node = cand("same2", price=2, operator="0xabc")
    other = cand("other", price=90, operator="0xdef")
    d = demand(exclude={"0xabc"})
    plan = schedule(tasks(4, d), [same, same_other_node, other])
    assert placed(plan) == ["other"] * 4
    assert independence_rule(d, same) == ("same operator, network or stake funder as the result it checks (or "
                                          "an earlier failed attempt of this task)")
    assert independence_rule(d, other) is None
    alone = schedule(tasks(1, d), [same, same_other_node])
    assert alone.assignments == [] and "same operator, network" in alone.unschedulable["t0"]
    # a referee excludes both sides of the dispute and still needs a centralized provider
    ref = demand(exclude={"0xabc", "0xdef"}, tier=CENTRALIZED)
    central_same = cand("c1", price=1, operator="0xdef", tier=CENTRALIZED)
    central_free = cand("c2", price=5, operator="0x999", tier=CENTRALIZED)
    assert placed(schedule(tasks(2, ref), [same, other, central_same, central_free])) == ["c2", "c2"]


def test_an_ineligible_provider_gets_nothing():
    banned = cand("banned", price=1, eligible=False)
    ok = cand("ok", price=20)
    assert placed(schedule(tasks(3, demand()), [banned, ok])) == ["ok"] * 3
    assert reputation_rule(demand(), banned) == "provider excluded: too many of its results were found invalid"
    assert reputation_rule(demand(), ok) is None
    plan = schedule(tasks(1, demand()), [banned])
    assert plan.assignments == [] and "too many of its results were found invalid" in plan.unschedulable["t0"]
    assert reasons(demand(), banned) == ["provider excluded: too many of its results were found invalid"]


def test_at_equal_price_the_more_trusted_provider_wins():
    doubtful = cand("a-doubtful", trust=0.3, slots=1)
    trusted = cand("z-trusted", trust=0.9, slots=1)
    plan = schedule(tasks(2, demand()), [doubtful, trusted])
    assert placed(plan) == ["z-trusted", "a-doubtful"]  # the trusted first, the other once it is full
    assert placed(schedule(tasks(1, demand()), [trusted, doubtful])) == ["z-trusted"]  # not the listing order
    cheaper = replace(doubtful, price_per_hour=9)
    assert placed(schedule(tasks(1, demand()), [trusted, cheaper])) == ["a-doubtful"]  # price still comes first


def test_checks_are_drawn_at_random_weighted_by_trust_never_won_by_underpricing():
    import random
    from collections import Counter

    from coordinator.scheduling.scheduler import Scheduler

    colluder = cand("colluder", price=1, slots=1000, trust=0.5)  # underprices everyone
    fair = [cand(f"h{i}", price=50, slots=1000, trust=0.5) for i in range(3)]
    newcomer = cand("new", price=50, slots=1000, trust=0.05)
    d = replace(demand(exclude={"0xchecked"}), draw=True)
    s = Scheduler([colluder, *fair, newcomer], rng=random.Random(5))
    got = Counter(a.provider_id for a in s.schedule(tasks(3000, d)).assignments)
    assert sum(got.values()) == 3000
    for pid in ("colluder", "h0", "h1", "h2"):  # equal trust, equal chance whatever the price
        assert 3000 * 0.5 / 2.05 * 0.85 < got[pid] < 3000 * 0.5 / 2.05 * 1.15, got
    assert got["new"] < got["h0"] / 5  # a newcomer checks rarely until verified
    assert placed(schedule(tasks(5, demand()), [colluder, *fair])) == ["colluder"] * 5  # primaries: the price


def test_a_task_whose_attempt_failed_goes_to_another_provider_first():
    cheap = cand("cheap", price=1)
    dear = cand("dear", price=90)
    d = replace(demand(), avoid=frozenset({"0xcheap"}))
    assert placed(schedule(tasks(2, d), [cheap, dear])) == ["dear", "dear"]
    assert placed(schedule(tasks(1, d), [cheap])) == ["cheap"]  # none other: it may try again
    grouped = replace(cand("cheap2", price=1), groups=frozenset({"0xop", "net:10.0.0.0/24"}))
    near = replace(cand("near", price=2), groups=frozenset({"0xother", "net:10.0.0.0/24"}))
    checks = demand(exclude={"net:10.0.0.0/24"})
    assert schedule(tasks(1, checks), [grouped, near]).assignments == []  # one network: not independent
