"""Seeded simulation of the coordinator's verification plan, on the real policy and reputation code.

``--providers`` providers, a ``--dishonest`` fraction of them cheating. Every task has
``--records`` records (default 16, the default shard size). A cheater has a cheat rate, drawn from
CHEAT_RATES, and a corrupted fraction ``f``, drawn from CHEAT_FRACTIONS: each task it executes
(original or replica; it cannot tell them apart) it cheats with its rate, and a cheated result has
``max(1, round(f * records))`` wrong records (``f = 1``: it substitutes a cheaper model or skips
the task; ``f = 1/4``: stealthier; ``f = 1/16``: a single wrong record). Honest providers return a
wrong result with a small nondeterminism rate (``--honest-error``), a glitch in one record.

Each of ``--tasks`` tasks goes to a random active provider, and the coordinator's
``VerificationPlan.decide`` (the real code, with a ``random.Random`` per run) picks its check from
that provider's ``ProviderTrack``:

* **replica**: a second, random, independent provider executes the task again; outputs are
  compared exactly, so any wrong record on either side makes a disagreement (wrong results never
  coincide: no collusion);
* **audit**: a random independent provider re-scores the plan's drawn records plus its decoys
  (planted wrong records). It finds the result wrong iff a drawn record is corrupted (the
  hypergeometric chance ``1 - C(n - k, r) / C(n, r)``). An honest auditor rejects every decoy
  and raises a false alarm with ``--audit-fp``. A *lazy* auditor (a ``--lazy`` fraction of the
  cheaters; on each audit with its cheat rate) reports everything valid without computing: it
  accepts the decoy, which disputes the audit;
* none: the result is accepted unchecked.

A disagreement goes to the trusted referee (a re-execution for a replica, a re-score of the
audit's records and decoys for an audit), which finds the truth: every side that was wrong, and
an auditor whose readings contradict it (lazy, or a false alarm), loses: it is slashed, sent back
to probation and observed invalid by its ``Reputation``, which ejects it (no more tasks) once it
is no longer ``eligible``. An undisputed check, or a disputed one the referee upholds, is a
verified-valid result for the primary and for the checker (``resolve.py``: "both sides verified
valid"); ``--audit-credit`` says whom a passed audit credits (``none``: only replicas move tracks).

Schemes: (a) adaptive replication only (``VerificationPlan(audit=AuditPolicy(rate=0))``, the
former default); (b) the default ``VerificationPlan()``: adaptive replication, and an audit of
every result that is not replicated; (c) full 2x replication (the baseline).

Definitions printed:
  caught      share of cheaters that lost at least one referee decision (were slashed), as a worker,
              a replica or an auditor. A cheater's first loss is its detection; "median" is how many
              tasks it had executed by then (as worker or replica: it cannot tell a replica from a
              task; audits are not counted as tasks).
  <=200       caught within its first 200 executed tasks, among cheaters that returned a wrong
              result within their first 200 (one that never cheated there cannot be caught there).
              A cheater that executed fewer than 200 tasks in the run and was not caught counts as
              missed. With 1,000 providers and 100k tasks a provider executes ~110 tasks, so this is
              "caught in the run, among those that cheated".
  FP          share of honest providers slashed at least once. The referee is trusted, so an honest
              provider loses only when a glitch really made its result wrong, or (``--audit-fp``)
              when, as an auditor, it raised a false alarm; "FP ejct": share of honest ejected.
  extra       (replica executions + referee re-executions + (audits + audit disputes) x audit
              cost) / tasks, in task executions. Audit cost: ``AuditPolicy.cost(records,
              rescore_cost)``; "@1.0" is the same run priced with a re-score as dear as generating.
  wrong out   results with a wrong record that were delivered (unchecked, or audited and missed),
              per task.
  checks      checked results (its own audited or replicated results, and its replicas) among an
              honest provider's first 200 tasks (mean).

    python bench/verification_sim.py --providers 1000 --tasks 100000 --dishonest 0.1 --seed 7
    python bench/verification_sim.py --runs 20   # 20 seeds pooled: per-type figures with less noise
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import replace, dataclass, field

import numpy as np

from coordinator.reputation import Reputation, eligible
from coordinator.verification.plan import AuditPolicy, VerificationPlan
from coordinator.verification.policy import ProviderTrack, ReplicationPolicy

CHEAT_RATES = (0.01, 0.05, 0.2, 0.5, 1.0)
CHEAT_FRACTIONS = (1.0, 0.25, 1 / 16)
WINDOW = 200
TARGET_CAUGHT, TARGET_EXTRA = 0.99, 0.10
HALF_LIFE = 1e6  # reputation half-life, in tasks (the simulated clock ticks once per task)
FULL = ReplicationPolicy(p_new=1.0, probation=0, p_floor=1.0)  # replicate everything: the 2x baseline
NO_AUDIT = AuditPolicy(rate=0.0)
SCHEMES = {
    "(a) replica-only adapt.": VerificationPlan(ReplicationPolicy(), NO_AUDIT),
    "(b) adaptive + audits": VerificationPlan(),
    "(c) full 2x replication": VerificationPlan(FULL, NO_AUDIT),
}
DEFAULT_RESCORE_COST = 0.25  # re-scoring a record / generating it: 0.14-0.25 measured on 2 CPU cores


@dataclass
class Provider:
    cheat_rate: float  # 0 for honest providers
    fraction: float  # of a cheated result's records that are wrong (0 for honest providers)
    lazy: bool  # also skips audits (with its cheat rate), reporting "valid"
    error: float  # chance that a result is wrong
    bad_records: int  # wrong records in a wrong result
    track: ProviderTrack = field(default_factory=ProviderTrack)
    rep: Reputation = field(default_factory=Reputation)
    executed: int = 0
    first_wrong_at: int | None = None
    caught_at: int | None = None
    caught_by: str = ""  # "replica", "audit" (its result), "auditor" (its audit), "referee"
    losses: int = 0
    escaped: int = 0  # wrong results delivered unchecked or audited and missed
    checked_early: int = 0  # checked results among its first WINDOW executed tasks
    ejected: bool = False
    audits: int = 0  # audits it performed
    skipped: int = 0  # audits it skipped (lazy)


@dataclass
class Outcome:
    providers: list[Provider]
    tasks: int
    records: int
    audit: AuditPolicy
    replicas: int = 0
    replica_disputes: int = 0  # referee re-executions
    audits: int = 0
    audit_disputes: int = 0  # referee re-scorings
    wrong_accepted: int = 0
    cheated_audits: int = 0  # audits of a cheated result by an auditor that computed
    cheated_audits_hit: int = 0  # ... that drew a wrong record

    def parts(self, rescore_cost: float) -> tuple[float, float, float]:
        """Extra compute per task: (replicas, referee re-executions, audits and their referee re-scorings)."""
        audit = (self.audits + self.audit_disputes) * self.audit.cost(self.records, rescore_cost)
        n = max(1, self.tasks)
        return self.replicas / n, self.replica_disputes / n, audit / n

    def extra(self, rescore_cost: float) -> float:
        audit = (self.audits + self.audit_disputes) * self.audit.cost(self.records, rescore_cost)
        return (self.replicas + self.replica_disputes + audit) / max(1, self.tasks)


def population(providers: int, dishonest: float, honest_error: float, records: int, lazy: float,
               seed: int) -> list[Provider]:
    rng = np.random.default_rng(seed)
    bad = rng.random(providers) < dishonest
    rates = rng.choice(CHEAT_RATES, size=providers)
    fractions = rng.choice(CHEAT_FRACTIONS, size=providers)
    lazies = rng.random(providers) < lazy
    return [Provider(float(r), float(f), bool(z), float(r), max(1, round(f * records))) if b
            else Provider(0.0, 0.0, False, honest_error, 1)
            for b, r, f, z in zip(bad, rates, fractions, lazies)]


def _execute(p: Provider, u: float) -> int:
    """``p`` runs a task; how many of its records are wrong?"""
    p.executed += 1
    if u >= p.error:
        return 0
    if p.first_wrong_at is None:
        p.first_wrong_at = p.executed
    return p.bad_records


def _settle(p: Provider, wrong: bool, t: int, by: str) -> bool:
    """Record a verified outcome; True if ``p`` is ejected."""
    if not wrong:
        p.track = p.track.after_valid()
        p.rep = p.rep.observe(True, t, HALF_LIFE)
        return False
    p.track = p.track.after_invalid()
    p.rep = p.rep.observe(False, t, HALF_LIFE)
    p.losses += 1
    if p.caught_at is None:
        p.caught_at, p.caught_by = p.executed, by
    p.ejected = not eligible(p.rep)
    return p.ejected


def simulate(plan: VerificationPlan, *, providers: int, tasks: int, dishonest: float,
             honest_error: float, seed: int, records: int = 16, lazy: float = 0.5,
             audit_fp: float = 0.0, audit_credit: str = "both") -> Outcome:
    """One run. The population and every draw except the plan's are the same for every ``plan``."""
    pool = population(providers, dishonest, honest_error, records, lazy, seed)
    out = Outcome(pool, tasks, records, plan.audit)
    active = list(range(providers))
    rng = random.Random(seed)  # the plan's draws, as the coordinator makes them
    where = random.Random(seed + 2)  # which records a wrong result has wrong
    positions = range(records)
    credit_primary = audit_credit in ("both", "primary")
    credit_auditor = audit_credit == "both"
    u = np.random.default_rng(seed + 1).random((tasks, 6)).tolist()
    for t, (u_pick, u_wrong, u_pick2, u_wrong2, u_lazy, u_fp) in enumerate(u):
        if len(active) < 2:
            break
        i = active[int(u_pick * len(active))]
        worker = pool[i]
        wrong = _execute(worker, u_wrong)
        early = worker.executed <= WINDOW
        check = plan.decide(worker.track, records, rng)
        if check is None:
            out.wrong_accepted += wrong > 0
            worker.escaped += wrong > 0
            continue
        worker.checked_early += early
        j = active[int(u_pick2 * (len(active) - 1))]  # any active provider but the worker
        j = active[-1] if j == i else j
        checker = pool[j]
        if check.kind == "replica":
            out.replicas += 1
            c_wrong = _execute(checker, u_wrong2)
            checker.checked_early += checker.executed <= WINDOW  # its replica is a checked result too
            out.replica_disputes += bool(wrong or c_wrong)
            sides = ((i, worker, wrong > 0, "replica"), (j, checker, c_wrong > 0, "replica"))
        else:
            out.audits += 1
            checker.audits += 1
            bad = set(where.sample(positions, wrong)) if wrong else ()
            hit = any(r in bad for r in check.records)
            skips = checker.lazy and u_lazy < checker.cheat_rate
            checker.skipped += skips
            false_alarm = not skips and u_fp < audit_fp
            if not skips and wrong:
                out.cheated_audits += worker.cheat_rate > 0
                out.cheated_audits_hit += worker.cheat_rate > 0 and hit
            # a lazy auditor accepts everything, decoys too: disputed iff the plan planted a decoy
            disputed = bool(check.decoys) if skips else hit or false_alarm
            out.audit_disputes += disputed
            primary_wrong = disputed and hit  # the referee re-scores the drawn records
            checker_wrong = disputed and (skips or false_alarm)
            if wrong and not primary_wrong:
                out.wrong_accepted += 1
                worker.escaped += 1
            sides = []
            if credit_primary or primary_wrong:
                sides.append((i, worker, primary_wrong, "audit"))
            if credit_auditor or checker_wrong:
                sides.append((j, checker, checker_wrong, "auditor"))
        for k, p, is_wrong, by in sides:
            if _settle(p, is_wrong, t, by):
                active.remove(k)
    return out


def simulate_runs(plan: VerificationPlan, runs: int, seed: int, **kw) -> Outcome:
    """``runs`` simulations with seeds ``seed, seed + 10, ...``, their providers and counts pooled."""
    outs = [simulate(plan, seed=seed + 10 * k, **kw) for k in range(runs)]
    pooled = Outcome([p for o in outs for p in o.providers], 0, outs[0].records, plan.audit)
    for name in ("tasks", "replicas", "replica_disputes", "audits", "audit_disputes", "wrong_accepted",
                 "cheated_audits", "cheated_audits_hit"):
        setattr(pooled, name, sum(getattr(o, name) for o in outs))
    return pooled


def _cheated(ps: list[Provider]) -> list[Provider]:
    return [p for p in ps if p.first_wrong_at is not None and p.first_wrong_at <= WINDOW]


def _within(ps: list[Provider]) -> int:
    return sum(p.caught_at is not None and p.caught_at <= WINDOW for p in ps)


def figures(out: Outcome, rescore_cost: float) -> dict[str, float]:
    cheaters = [p for p in out.providers if p.cheat_rate > 0]
    honest = [p for p in out.providers if p.cheat_rate == 0]
    caught = [p.caught_at for p in cheaters if p.caught_at is not None]
    cheated = _cheated(cheaters)
    return {
        "detected": len(caught) / max(1, len(cheaters)),
        "window": _within(cheated) / max(1, len(cheated)),
        "median": float(np.median(caught)) if caught else float("nan"),
        "fp": sum(p.losses > 0 for p in honest) / max(1, len(honest)),
        "honest_ejected": sum(p.ejected for p in honest) / max(1, len(honest)),
        "checks": sum(p.checked_early for p in honest) / max(1, len(honest)),
        "extra": out.extra(rescore_cost),
        "extra_1": out.extra(1.0),
        "wrong_out": out.wrong_accepted / max(1, out.tasks),
    }


def print_header() -> None:
    print(f"{'scheme':<25}{'caught':>8}{'<=200':>8}{'median':>7}{'FP':>7}{'FP ejct':>8}{'extra':>7}"
          f"{'@1.0':>7}{'wrong out':>10}{'checks':>7}")


def print_row(name: str, f: dict[str, float]) -> None:
    print(f"{name:<25}{f['detected']:>8.1%}{f['window']:>8.1%}{f['median']:>7.0f}{f['fp']:>7.2%}"
          f"{f['honest_ejected']:>8.2%}{f['extra']:>7.1%}{f['extra_1']:>7.1%}{f['wrong_out']:>10.3%}"
          f"{f['checks']:>7.1f}")


def _fname(f: float) -> str:
    return "1" if f == 1 else "1/4" if f == 0.25 else "1/16" if f == 1 / 16 else f"{f:g}"


def audit_hit(records: int, bad: int, audit: AuditPolicy) -> float:
    """The chance that an audit draws at least one of ``bad`` wrong records (1 - hypergeometric miss)."""
    drawn = min(audit.records, records)
    return 1.0 - math.comb(records - bad, drawn) / math.comb(records, drawn)


def print_by_type(out: Outcome) -> None:
    print(f"  {'rate':>5}{'f':>6}{'n':>5}{'cheated<=200':>13}{'caught':>8}{'<=200':>8}{'median':>7}"
          f"{'non-lazy':>9}{'wrong out/cheater':>18}{'ejected':>8}{'as auditor':>11}{'audit hit':>10}")
    for rate in CHEAT_RATES:
        for frac in CHEAT_FRACTIONS:
            ps = [p for p in out.providers if p.cheat_rate == rate and p.fraction == frac]
            if not ps:
                continue
            cheated = _cheated(ps)
            caught = [p.caught_at for p in ps if p.caught_at is not None]
            median = f"{np.median(caught):.0f}" if caught else "-"
            share = f"{_within(cheated) / len(cheated):.1%}" if cheated else "-"
            diligent = [p for p in cheated if not p.lazy]
            nonlazy = f"{_within(diligent) / len(diligent):.1%}" if diligent else "-"
            auditor = sum(p.caught_by == "auditor" for p in ps)
            hit = audit_hit(out.records, ps[0].bad_records, out.audit)
            print(f"  {rate:>5.2f}{_fname(frac):>6}{len(ps):>5}{len(cheated):>13}{len(caught) / len(ps):>8.1%}"
                  f"{share:>8}{median:>7}{nonlazy:>9}{sum(p.escaped for p in ps) / len(ps):>18.1f}"
                  f"{sum(p.ejected for p in ps) / len(ps):>8.1%}{auditor:>11}{hit:>10.3f}")


def by_fraction(out: Outcome, lazy: bool = True) -> str:
    """'<=200' per corrupted fraction (``lazy=False``: among cheaters that audit honestly)."""
    parts = []
    for frac in CHEAT_FRACTIONS:
        cheated = _cheated([p for p in out.providers if p.cheat_rate > 0 and p.fraction == frac
                            and (lazy or not p.lazy)])
        parts.append(f"f={_fname(frac)}: {_within(cheated) / max(1, len(cheated)):.1%}")
    return ", ".join(parts)


def lazy_report(out: Outcome) -> str:
    lazy = [p for p in out.providers if p.lazy and p.skipped]
    caught = sum(p.caught_by == "auditor" for p in lazy)
    first = sum(p.caught_by == "auditor" for p in out.providers if p.cheat_rate > 0)
    skips = sum(p.skipped for p in out.providers)
    diligent = _cheated([p for p in out.providers if p.cheat_rate > 0 and not p.lazy])
    return (f"lazy auditors (skip each audit with their cheat rate): {len(lazy)} skipped at least one audit "
            f"({skips} audits skipped), {caught} ({caught / max(1, len(lazy)):.1%}) of them caught by a decoy "
            f"first; {first} cheaters in all were first caught as auditors (counted in 'caught' and '<=200').\n"
            f"Without that help: '<=200' among cheaters that audit honestly {_within(diligent) / max(1, len(diligent)):.1%} "
            f"({by_fraction(out, lazy=False)}); column 'non-lazy' above")


def _binom_window(rate: float, hit: float, n: int = WINDOW) -> float:
    """Audit-only chance of catching, within ``n`` tasks, a cheater of ``rate`` whose cheated results
    an audit catches with ``hit``, given it cheated at least once there: every result audited."""
    cheated = 1 - (1 - rate) ** n
    missed_all = (1 - rate * hit) ** n - (1 - rate) ** n  # cheated >= 1 time, every cheat missed
    return 1 - missed_all / cheated


def target_report(out: Outcome, f: dict[str, float], rescore_cost: float) -> list[str]:
    lines = []
    met = f["window"] >= TARGET_CAUGHT and f["extra"] <= TARGET_EXTRA
    lines.append(f"target (>= {TARGET_CAUGHT:.0%} of cheaters caught within their first {WINDOW} tasks at <= "
                 f"{TARGET_EXTRA:.0%} extra compute) for (b), all cheater types pooled: "
                 f"{'MET' if met else 'NOT met'} ({f['window']:.1%} at {f['extra']:.1%} extra, "
                 f"{f['extra_1']:.1%} at rescore cost 1.0)")
    ok, short = [], []
    for rate in CHEAT_RATES:
        for frac in CHEAT_FRACTIONS:
            ps = [p for p in out.providers if p.cheat_rate == rate and p.fraction == frac]
            cheated = _cheated(ps)
            if not cheated:
                continue
            share = _within(cheated) / len(cheated)
            diligent = [p for p in cheated if not p.lazy]
            name = f"rate {rate:g} f={_fname(frac)}"
            if share >= TARGET_CAUGHT:
                ok.append(name)
            else:
                hit = audit_hit(out.records, ps[0].bad_records, out.audit)
                need = math.ceil(math.log(1 - TARGET_CAUGHT) / math.log1p(-hit)) if hit < 1 else 1
                honest_share = f"{_within(diligent) / len(diligent):.1%}" if diligent else "-"
                span = [min(WINDOW, p.executed) for p in cheated]  # the run may end before WINDOW tasks
                alone = sum(_binom_window(rate, hit, n) for n in span) / len(span)
                short.append(f"  {name}: {share:.1%} (n={len(cheated)}; non-lazy {honest_share}); an audit "
                             f"catches a cheated result with {hit:.3f}, it cheats ~{rate * np.mean(span):.1f} times "
                             f"in the {np.mean(span):.0f} tasks it executes (of {WINDOW}) and {need} audited cheats "
                             f"are needed for 99%; with every result audited and no other help: {alone:.1%}")
    if f["extra"] > TARGET_EXTRA:
        rep, ref, aud = out.parts(rescore_cost)
        lines.append(f"cost: {f['extra']:.1%} > {TARGET_EXTRA:.0%}; replicas are {rep:.1%} of it: every newcomer's "
                     f"first results are replicated (probation), and here every provider is a newcomer, "
                     f"executing ~{sum(p.executed for p in out.providers) / max(1, len(out.providers)):.0f} tasks")
    lines.append(f"met for: {', '.join(ok) or 'none'}")
    if short:
        lines.append("NOT met for (too few wrong records are ever drawn: a cheater that corrupts few records "
                     "on few tasks gives an audit little to find):")
        lines.extend(short)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--providers", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--dishonest", type=float, default=0.1)
    ap.add_argument("--honest-error", type=float, default=0.001)
    ap.add_argument("--records", type=int, default=16, help="records per task (the default shard size)")
    ap.add_argument("--rescore-cost", type=float, default=DEFAULT_RESCORE_COST,
                    help="re-scoring a record relative to generating it")
    ap.add_argument("--audit-fp", type=float, default=0.0, help="an honest audit's false-alarm rate")
    ap.add_argument("--lazy", type=float, default=0.5, help="fraction of cheaters that also skip audits")
    ap.add_argument("--audit-credit", choices=("both", "primary", "none"), default="both",
                    help="whom a passed audit counts as verified valid")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1, help="pool this many runs (seeds seed, seed+10, ...)")
    default = VerificationPlan()
    ap.add_argument("--probation", type=int, default=default.replication.probation,
                    help="plan (b): consecutive valid results before replication drops")
    ap.add_argument("--p-floor", type=float, default=default.replication.p_floor, help="plan (b): replication floor")
    ap.add_argument("--audit-records", type=int, default=default.audit.records, help="plan (b): records per audit")
    ap.add_argument("--decoys", type=int, default=default.audit.decoys, help="plan (b): decoys per audit")
    args = ap.parse_args()
    SCHEMES["(b) adaptive + audits"] = VerificationPlan(
        replace(default.replication, probation=args.probation, p_floor=args.p_floor),
        replace(default.audit, records=args.audit_records, decoys=args.decoys))
    kw = {"providers": args.providers, "tasks": args.tasks, "dishonest": args.dishonest,
          "honest_error": args.honest_error, "seed": args.seed, "runs": args.runs, "records": args.records,
          "lazy": args.lazy, "audit_fp": args.audit_fp, "audit_credit": args.audit_credit}
    plan = SCHEMES["(b) adaptive + audits"]
    a = plan.audit
    print(f"{args.providers} providers, {args.dishonest:.0%} dishonest (cheat rates {CHEAT_RATES} x corrupted "
          f"fractions {', '.join(map(_fname, CHEAT_FRACTIONS))}; {args.lazy:.0%} of them lazy auditors), "
          f"{args.tasks} tasks of {args.records} records, honest error rate {args.honest_error}, audit FP "
          f"{args.audit_fp}, seed {args.seed}" + (f", {args.runs} runs pooled" if args.runs > 1 else ""))
    print(f"plan (b): {plan.replication}, {a}; an audit re-scores {min(a.records, args.records)} records + "
          f"{a.decoys if args.records >= 2 else 0} decoy(s) = {a.cost(args.records, args.rescore_cost):.4f} of a "
          f"task at rescore cost {args.rescore_cost} ({a.cost(args.records, 1.0):.4f} at 1.0); passed audits "
          f"credit: {args.audit_credit}")
    print_header()
    start = time.perf_counter()
    outs, figs = {}, {}
    for name, scheme in SCHEMES.items():
        outs[name] = simulate_runs(scheme, **kw)
        figs[name] = figures(outs[name], args.rescore_cost)
        print_row(name, figs[name])
    elapsed = time.perf_counter() - start
    print(f"extra: at rescore cost {args.rescore_cost} (measured 0.14-0.25 on 2 CPU cores with SmolLM2-135M; "
          f"the GPU ratio is unmeasured, expected lower); '@1.0': a re-score as dear as regenerating.")
    print("<=200 by corrupted fraction: "
          + "; ".join(f"{name.split()[0]} {by_fraction(o)}" for name, o in outs.items()))
    b = outs["(b) adaptive + audits"]
    rep, ref, aud = b.parts(args.rescore_cost)
    print(f"(b) extra = replicas {rep:.1%} + referee re-executions {ref:.2%} + audits and their referee "
          f"re-scorings {aud:.1%} ({b.audits / max(1, b.tasks):.1%} of tasks audited, "
          f"{b.replicas / max(1, b.tasks):.1%} replicated)")
    print(f"(b) by cheat rate x corrupted fraction f ('audit hit': chance an audit draws a wrong record of a "
          f"cheated result; measured {b.cheated_audits_hit}/{b.cheated_audits} = "
          f"{b.cheated_audits_hit / max(1, b.cheated_audits):.3f} over all audits of cheated results):")
    print_by_type(b)
    print(lazy_report(b))
    for line in target_report(b, figs["(b) adaptive + audits"], args.rescore_cost):
        print(line)
    fa, fc = figs["(a) replica-only adapt."], figs["(c) full 2x replication"]
    print(f"for comparison: (a) {fa['window']:.1%} at {fa['extra']:.1%} extra; (c) {fc['window']:.1%} at "
          f"{fc['extra']:.1%} extra")
    print(f"({elapsed:.1f} s for {len(SCHEMES)} schemes x {args.runs} run(s))")


if __name__ == "__main__":
    main()
