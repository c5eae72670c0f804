"""Seeded simulation of spot-checked redundant execution with the real ReplicationPolicy.

Providers take tasks at random. Each result is re-executed on another random provider with the
policy's probability for the first provider; disagreeing results go to a trusted referee, and
whoever was wrong is slashed and removed from the market. Dishonest providers return a wrong
result with their cheat rate; honest ones with a small nondeterminism rate (their losses are the
false positives). Wrong results never coincide. The baseline replicates every task (2x).

A check costs ``check_cost`` of a task: 1.0 when the verifier regenerates the output, far less
with teacher-forced re-scoring (one forward pass over prompt+claimed output instead of
``max_new_tokens`` decoding steps; ``--rescore-cost``, an assumption until measured on the
rescoring workload). Checks are assumed to catch every wrong result; referee runs cost 1.0.

    python bench/verification_sim.py --providers 1000 --tasks 100000 --dishonest 0.1 --seed 7
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from coordinator.verification.policy import ProviderTrack, ReplicationPolicy

CHEAT_RATES = (0.01, 0.05, 0.2, 0.5, 1.0)
RESCORE_ALL = ReplicationPolicy(p_new=1.0, probation=0, halving=1, floor=1.0)  # check every result
WINDOW = 200


@dataclass
class Provider:
    cheat_rate: float  # 0 for honest providers
    track: ProviderTrack = field(default_factory=ProviderTrack)
    tasks: int = 0
    cheated: int = 0
    caught_at: int | None = None  # its own task count when caught

    @property
    def dishonest(self) -> bool:
        return self.cheat_rate > 0


@dataclass
class Outcome:
    providers: list[Provider]
    tasks: int
    replicas: int = 0
    referee_runs: int = 0
    check_cost: float = 1.0
    wrong_accepted: int = 0  # wrong results that went out unchecked


def simulate(policy: ReplicationPolicy | None, *, providers: int, tasks: int, dishonest: float,
             honest_error: float, seed: int, check_cost: float = 1.0) -> Outcome:
    """``policy=None`` replicates every task (the 2x baseline)."""
    rng = np.random.default_rng(seed)
    pool = [Provider(float(rng.choice(CHEAT_RATES)) if rng.random() < dishonest else 0.0)
            for _ in range(providers)]
    active = list(range(providers))
    out = Outcome(pool, tasks, check_cost=check_cost)
    uniforms = rng.random((tasks, 4))
    for t in range(tasks):
        u = uniforms[t]
        if len(active) < 2:
            break
        i = active[int(u[0] * len(active))]
        worker = pool[i]
        worker.tasks += 1
        wrong = u[1] < (worker.cheat_rate or honest_error)
        worker.cheated += wrong and worker.dishonest
        replicate = True if policy is None else policy.decide(worker.track, u[2])
        if not replicate:
            out.wrong_accepted += wrong
            continue
        out.replicas += 1
        j = active[int(u[3] * (len(active) - 1))]
        j = active[-1] if j == i else j
        verifier = pool[j]
        verifier.tasks += 1
        verifier_wrong = rng.random() < (verifier.cheat_rate or honest_error)
        verifier.cheated += verifier_wrong and verifier.dishonest
        if not wrong and not verifier_wrong:
            worker.track = worker.track.after_valid()
            continue
        out.referee_runs += 1  # disagreement: the referee decides; the wrong side is slashed
        for k, p, bad in ((i, worker, wrong), (j, verifier, verifier_wrong)):
            if bad:
                p.track = p.track.after_invalid()
                p.caught_at = p.tasks
                active.remove(k)
            elif p is worker:
                p.track = p.track.after_valid()
    return out


def report(name: str, out: Outcome) -> dict:
    cheaters = [p for p in out.providers if p.dishonest and p.cheated]
    honest = [p for p in out.providers if not p.dishonest]
    caught = [p for p in cheaters if p.caught_at is not None]
    fig = {
        "detected": len(caught) / max(1, len(cheaters)),
        "within_window": sum(p.caught_at <= WINDOW for p in caught) / max(1, len(cheaters)),
        "median_tasks": float(np.median([p.caught_at for p in caught])) if caught else float("nan"),
        "false_positive": sum(p.caught_at is not None for p in honest) / max(1, len(honest)),
        "extra_compute": (out.replicas * out.check_cost + out.referee_runs) / out.tasks,
        "wrong_accepted": out.wrong_accepted / out.tasks,
    }
    print(f"{name:<26}{fig['detected']:>10.1%}{fig['within_window']:>12.1%}{fig['median_tasks']:>10.0f}"
          f"{fig['false_positive']:>9.2%}{fig['extra_compute']:>9.1%}{fig['wrong_accepted']:>11.3%}")
    return fig


def by_rate(out: Outcome) -> None:
    groups: dict[float, list[Provider]] = defaultdict(list)
    for p in out.providers:
        if p.dishonest and p.cheated:
            groups[p.cheat_rate].append(p)
    for rate in sorted(groups):
        ps = groups[rate]
        caught = [p for p in ps if p.caught_at is not None]
        print(f"  cheat rate {rate:>5.2f}: {len(ps):>4} cheaters, caught {len(caught) / len(ps):6.1%}, "
              f"within {WINDOW} tasks {sum(p.caught_at <= WINDOW for p in caught) / len(ps):6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--providers", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--dishonest", type=float, default=0.1)
    ap.add_argument("--honest-error", type=float, default=0.0005)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rescore-cost", type=float, default=0.05,
                    help="cost of a teacher-forced re-scoring check relative to generating the output")
    args = ap.parse_args()
    kw = dict(providers=args.providers, tasks=args.tasks, dishonest=args.dishonest,
              honest_error=args.honest_error, seed=args.seed)
    policy = ReplicationPolicy()
    print(f"{args.providers} providers ({args.dishonest:.0%} dishonest, cheat rates {CHEAT_RATES}), "
          f"{args.tasks} tasks, honest error rate {args.honest_error}, seed {args.seed}")
    print(f"policy: {policy}")
    print(f"{'scheme':<26}{'detected':>10}{'<=' + str(WINDOW) + ' tasks':>12}{'median':>10}{'FP':>9}"
          f"{'extra':>9}{'wrong out':>11}")
    adaptive = simulate(policy, **kw)
    report("adaptive re-execution", adaptive)
    rescored = simulate(RESCORE_ALL, check_cost=args.rescore_cost, **kw)
    fig = report(f"re-score all (cost {args.rescore_cost:g})", rescored)
    full = simulate(None, **kw)
    base = report("full 2x replication", full)
    for name, out in (("adaptive re-execution", adaptive), ("re-score all", rescored)):
        print(f"{name}, by cheat rate:")
        by_rate(out)
    print(f"re-score-all extra compute vs 2x baseline: {fig['extra_compute'] / base['extra_compute']:.3f}")
    met = fig["within_window"] >= 0.99 and fig["extra_compute"] <= 0.10
    print(f"target (>= 99% caught within {WINDOW} tasks at <= 10% extra compute), re-score all: "
          f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
