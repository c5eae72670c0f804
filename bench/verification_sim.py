"""Seeded simulation of spot-checked redundant execution, on the real policy and reputation code.

``--providers`` providers, a ``--dishonest`` fraction of them cheating: each result a cheater
returns (original or replica; it cannot tell them apart) is wrong with its cheat rate, drawn from
CHEAT_RATES. Honest providers are wrong with a small nondeterminism rate (``--honest-error``).
Each of ``--tasks`` tasks goes to a random active provider; the ``ReplicationPolicy`` decides from
that provider's ``ProviderTrack`` whether a second, random, independent provider re-executes it.
Wrong results never coincide (no collusion), so any wrong side makes a disagreement; the trusted
referee re-executes it and every side that was wrong loses: it is slashed, sent back to probation
and observed as invalid by its ``Reputation``, which ejects it (no more tasks) once it is no
longer ``eligible``. Agreeing sides are verified valid (both tracks advance).

Schemes: the default ``ReplicationPolicy``; a uniform policy checking every result with the
probability that costs what the default cost in this run; and full 2x replication (the baseline).

Definitions printed:
  caught      share of cheaters that lost at least one referee decision (were slashed). A cheater's
              first loss is its detection; "median" is how many tasks it had executed by then
              (as worker or verifier: it cannot tell a replica from a task).
  <=200       caught within its first 200 executed tasks, among cheaters that returned a wrong
              result within their first 200 (one that never cheated there cannot be caught there).
              A cheater that executed fewer than 200 tasks in the run and was not caught counts as
              missed. With 1,000 providers and 100k tasks a provider executes ~110 tasks.
  FP          share of honest providers slashed at least once. The referee is trusted, so an honest
              provider loses only when a nondeterministic glitch really made its result wrong;
              "FP ejct": share of honest providers ejected.
  extra       (replica executions + referee executions) / tasks.
  wrong out   wrong results delivered unchecked, per task.
  checks      verified results among an honest provider's first 200 tasks (mean): the checking a
              cheater faces before its first catch; its detection is about 1 - (1 - rate)^checks.

    python bench/verification_sim.py --providers 1000 --tasks 100000 --dishonest 0.1 --seed 7
    python bench/verification_sim.py --runs 20   # 20 seeds pooled: per-rate figures with less noise
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field

import numpy as np

from coordinator.reputation import Reputation, eligible
from coordinator.verification.policy import ProviderTrack, ReplicationPolicy

CHEAT_RATES = (0.01, 0.05, 0.2, 0.5, 1.0)
WINDOW = 200
TARGET_CAUGHT, TARGET_EXTRA = 0.99, 0.10
HALF_LIFE = 1e6  # reputation half-life, in tasks (the simulated clock ticks once per task)
FULL = ReplicationPolicy(p_new=1.0, probation=0, p_floor=1.0)  # replicate everything: the 2x baseline


@dataclass
class Provider:
    cheat_rate: float  # 0 for honest providers
    error: float  # chance that a result is wrong
    track: ProviderTrack = field(default_factory=ProviderTrack)
    rep: Reputation = field(default_factory=Reputation)
    executed: int = 0
    first_wrong_at: int | None = None
    caught_at: int | None = None
    losses: int = 0
    escaped: int = 0  # wrong results delivered unchecked
    checked_early: int = 0  # verified results among its first WINDOW executed tasks
    ejected: bool = False


@dataclass
class Outcome:
    providers: list[Provider]
    tasks: int
    replicas: int = 0
    referee_runs: int = 0
    wrong_accepted: int = 0


def population(providers: int, dishonest: float, honest_error: float, seed: int) -> list[Provider]:
    rng = np.random.default_rng(seed)
    bad = rng.random(providers) < dishonest
    rates = rng.choice(CHEAT_RATES, size=providers)
    return [Provider(float(r), float(r)) if b else Provider(0.0, honest_error) for b, r in zip(bad, rates)]


def _execute(p: Provider, u: float) -> bool:
    """``p`` runs a task; is its result wrong?"""
    p.executed += 1
    wrong = u < p.error
    if wrong and p.first_wrong_at is None:
        p.first_wrong_at = p.executed
    return wrong


def _settle(p: Provider, wrong: bool, t: int) -> bool:
    """Record a verified outcome; True if ``p`` is ejected."""
    p.checked_early += p.executed <= WINDOW
    if not wrong:
        p.track = p.track.after_valid()
        p.rep = p.rep.observe(True, t, HALF_LIFE)
        return False
    p.track = p.track.after_invalid()
    p.rep = p.rep.observe(False, t, HALF_LIFE)
    p.losses += 1
    if p.caught_at is None:
        p.caught_at = p.executed
    p.ejected = not eligible(p.rep)
    return p.ejected


def simulate(policy: ReplicationPolicy, *, providers: int, tasks: int, dishonest: float,
             honest_error: float, seed: int) -> Outcome:
    pool = population(providers, dishonest, honest_error, seed)
    out = Outcome(pool, tasks)
    active = list(range(providers))
    u = np.random.default_rng(seed + 1).random((tasks, 5)).tolist()
    for t, (u_pick, u_wrong, u_check, u_pick2, u_wrong2) in enumerate(u):
        if len(active) < 2:
            break
        i = active[int(u_pick * len(active))]
        worker = pool[i]
        wrong = _execute(worker, u_wrong)
        if not policy.decide(worker.track, u_check):
            out.wrong_accepted += wrong
            worker.escaped += wrong
            continue
        j = active[int(u_pick2 * (len(active) - 1))]  # any active provider but the worker
        j = active[-1] if j == i else j
        verifier = pool[j]
        out.replicas += 1
        v_wrong = _execute(verifier, u_wrong2)
        out.referee_runs += wrong or v_wrong
        for k, p, bad in ((i, worker, wrong), (j, verifier, v_wrong)):
            if _settle(p, bad, t):
                active.remove(k)
    return out


def simulate_runs(policy: ReplicationPolicy, runs: int, seed: int, **kw) -> Outcome:
    """``runs`` simulations with seeds ``seed, seed + 1, ...``, their providers and counts pooled."""
    outs = [simulate(policy, seed=seed + k, **kw) for k in range(runs)]
    return Outcome([p for o in outs for p in o.providers], sum(o.tasks for o in outs),
                   sum(o.replicas for o in outs), sum(o.referee_runs for o in outs),
                   sum(o.wrong_accepted for o in outs))


def figures(out: Outcome) -> dict[str, float]:
    cheaters = [p for p in out.providers if p.cheat_rate > 0]
    honest = [p for p in out.providers if p.cheat_rate == 0]
    caught = [p.caught_at for p in cheaters if p.caught_at is not None]
    cheated = [p for p in cheaters if p.first_wrong_at is not None and p.first_wrong_at <= WINDOW]
    return {
        "detected": len(caught) / max(1, len(cheaters)),
        "window": sum(p.caught_at is not None and p.caught_at <= WINDOW for p in cheated) / max(1, len(cheated)),
        "median": float(np.median(caught)) if caught else float("nan"),
        "fp": sum(p.losses > 0 for p in honest) / max(1, len(honest)),
        "honest_ejected": sum(p.ejected for p in honest) / max(1, len(honest)),
        "checks": sum(p.checked_early for p in honest) / max(1, len(honest)),
        "extra": (out.replicas + out.referee_runs) / out.tasks,
        "wrong_out": out.wrong_accepted / out.tasks,
    }


def print_row(name: str, f: dict[str, float]) -> None:
    print(f"{name:<24}{f['detected']:>9.1%}{f['window']:>8.1%}{f['median']:>8.0f}{f['fp']:>8.2%}"
          f"{f['honest_ejected']:>8.2%}{f['extra']:>8.1%}{f['wrong_out']:>10.3%}{f['checks']:>8.1f}")


def print_by_rate(out: Outcome) -> None:
    print(f"  {'cheat rate':>10}{'n':>5}{'cheated<=200':>14}{'caught':>8}{'<=200':>8}{'median':>8}"
          f"{'wrong out/cheater':>19}{'ejected':>9}")
    for rate in CHEAT_RATES:
        ps = [p for p in out.providers if p.cheat_rate == rate]
        if not ps:
            continue
        cheated = [p for p in ps if p.first_wrong_at is not None and p.first_wrong_at <= WINDOW]
        caught = [p.caught_at for p in ps if p.caught_at is not None]
        within = sum(p.caught_at is not None and p.caught_at <= WINDOW for p in cheated)
        median = f"{np.median(caught):.0f}" if caught else "-"
        share = f"{within / len(cheated):.1%}" if cheated else "-"
        print(f"  {rate:>10.2f}{len(ps):>5}{len(cheated):>14}{len(caught) / len(ps):>8.1%}{share:>8}{median:>8}"
              f"{sum(p.escaped for p in ps) / len(ps):>19.1f}"
              f"{sum(p.ejected for p in ps) / len(ps):>9.1%}")


def _needed(rate: float) -> int:
    """Verified results after which a cheater of ``rate`` has been caught with TARGET_CAUGHT odds."""
    return 1 if rate >= 1 else math.ceil(math.log(1 - TARGET_CAUGHT) / math.log1p(-rate))


def _rates_meeting(out: Outcome) -> str:
    ok = []
    for rate in CHEAT_RATES:
        cheated = [p for p in out.providers if p.cheat_rate == rate and p.first_wrong_at is not None
                   and p.first_wrong_at <= WINDOW]
        within = sum(p.caught_at is not None and p.caught_at <= WINDOW for p in cheated)
        if cheated and within >= TARGET_CAUGHT * len(cheated):
            ok.append(f"{rate:g}")
    return ", ".join(ok) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--providers", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--dishonest", type=float, default=0.1)
    ap.add_argument("--honest-error", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1, help="pool this many runs (seeds seed, seed+1, ...)")
    args = ap.parse_args()
    kw = {"providers": args.providers, "tasks": args.tasks, "dishonest": args.dishonest,
          "honest_error": args.honest_error, "seed": args.seed, "runs": args.runs}
    policy = ReplicationPolicy()
    print(f"{args.providers} providers, {args.dishonest:.0%} dishonest (cheat rates {CHEAT_RATES}), "
          f"{args.tasks} tasks, honest error rate {args.honest_error}, seed {args.seed}"
          + (f", {args.runs} runs pooled" if args.runs > 1 else ""))
    print(f"{'scheme':<24}{'caught':>9}{'<=200':>8}{'median':>8}{'FP':>8}{'FP ejct':>8}{'extra':>8}"
          f"{'wrong out':>10}{'checks':>8}")
    start = time.perf_counter()
    adaptive = simulate_runs(policy, **kw)
    fa = figures(adaptive)
    print_row("adaptive (default)", fa)
    rate = min(1.0, fa["extra"])  # the same cost, spread evenly
    uniform = ReplicationPolicy(p_new=rate, probation=0, p_floor=rate)
    flat = simulate_runs(uniform, **kw)
    print_row(f"uniform p={rate:.3f}", figures(flat))
    full = simulate_runs(FULL, **kw)
    ff = figures(full)
    print_row("full 2x replication", ff)
    print(f"policy: {policy}")
    for name, out in (("adaptive", adaptive), ("uniform", flat), ("full 2x", full)):
        print(f"{name}, by cheat rate:")
        print_by_rate(out)
    needed = ", ".join(f"{_needed(r)} at rate {r:g}" for r in CHEAT_RATES)
    print(f"checks: verified results among an honest provider's first {WINDOW} tasks (mean), what a cheater gets "
          f"before it is caught.\nA cheater is caught with {TARGET_CAUGHT:.0%} probability only after this many "
          f"verified results, whatever the scheme: {needed}.")
    met = fa["window"] >= TARGET_CAUGHT and fa["extra"] <= TARGET_EXTRA
    print(f"target (>= {TARGET_CAUGHT:.0%} of cheaters caught within their first {WINDOW} tasks at <= "
          f"{TARGET_EXTRA:.0%} extra compute): {'met' if met else 'NOT met'} by the adaptive policy "
          f"({fa['window']:.1%} at {fa['extra']:.1%} extra); met for cheat rates {_rates_meeting(adaptive)}; "
          f"full 2x: {ff['window']:.1%} at {ff['extra']:.1%}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
