"""Seeded simulation of the coordinator's verification plan, on the real policy and reputation code.

``--providers`` providers, a ``--dishonest`` fraction of them cheating. Every task has
``--records`` records (default 16, the default shard size). A cheater has a cheat rate, drawn from
CHEAT_RATES, and a corrupted fraction ``f``, drawn from CHEAT_FRACTIONS: each task it executes
(original or replica; it cannot tell them apart) it cheats with its rate, and a cheated result has
``max(1, round(f * records))`` wrong records (``f = 1``: it substitutes a cheaper model or skips
the task; ``f = 1/4``: stealthier; ``f = 1/16``: a single wrong record). A ``--rings`` share of
the cheaters collude in rings of ``--ring-size`` identities of one operator: they return the same
wrong records for the same task, so a ring member checking its partner would agree with it.
Honest providers' results differ from another engine's with a small nondeterminism rate
(``--honest-error``): a record that is not identical but is consistent with the model, which a
re-score accepts except with the band's false-reject rate ``--referee-fr`` (``bench/tolerance.py``).

Each of ``--tasks`` tasks goes to a random active provider, and the coordinator's
``VerificationPlan.decide`` (the real code, with a ``random.Random`` per run) picks its check from
that provider's ``ProviderTrack``. The checker is drawn at random among active providers of
*another operator* (the coordinator's independence rule: operator, stake funder and network), or,
with ``--no-independence``, among all others:

* **replica**: the checker executes the task again; outputs are compared exactly, so any wrong or
  nondeterministic record on either side makes a disagreement; a ring partner returns the same
  wrong records and agrees;
* **audit**: the checker re-scores the plan's records (every record by default) plus decoys. It
  finds the result wrong iff a drawn record is corrupted (for a sample, the hypergeometric chance
  ``1 - C(n - k, r) / C(n, r)``). An honest auditor rejects every decoy and raises a false alarm
  with ``--audit-fp``. A *lazy* auditor (a ``--lazy`` fraction of the cheaters; on each audit
  with its cheat rate) reports everything valid without computing: it accepts the decoy, which
  disputes the audit; a ring partner passes its partner's wrong records and rejects the decoy;
* none: the result is accepted unchecked.

A disagreement goes to the trusted referee, which judges every disputed record against the model:
a wrong record loses, a nondeterministic honest one passes (unless the band falsely rejects it),
and an auditor whose readings contradict it loses. A loser is slashed, sent back to probation and
observed invalid by its ``Reputation``, which ejects it (no more tasks) once it is no longer
``eligible``. An undisputed check, or a disputed one the referee upholds, is a verified-valid
result for the primary and for the checker (``resolve.py``); ``--audit-credit`` says whom a passed
audit credits (``none``: only replicas move tracks).

Schemes: (a) adaptive replication only (``VerificationPlan(audit=AuditPolicy(rate=0))``);
(b) the default ``VerificationPlan()``: a few replicas, and a full-coverage audit of every result
that is not replicated; (s) the former default: probation replicas and audits of 2 sampled
records; (c) full 2x replication (the baseline).

Audits are priced with the measured rescore/generate ratio (``bench/rescore_cost.py``, read from
``bench/data/rescore_cost.json``: its GPU figure when there is one, else its CPU figure), or
``--rescore-cost``; the line above the table names the one used.

Definitions printed:
  caught      share of cheaters that lost at least one referee decision (were slashed), as a worker,
              a replica or an auditor. A cheater's first loss is its detection; "median" is how many
              tasks it had executed by then (as worker or replica: it cannot tell a replica from a
              task; audits are not counted as tasks).
  <=200       caught within its first 200 executed tasks, among cheaters that returned at least two
              wrong results within their first 200 (a cheater that cheats once in 200 is left to
              the per-task economics of p_floor). A cheater that executed fewer than 200 tasks in
              the run and was not caught counts as missed.
  FP          share of honest providers slashed at least once (a nondeterministic record the band
              rejected, or an honest auditor's false alarm); "FP ejct": share of honest ejected.
  extra       (replica executions + referee re-executions + (audits + audit disputes) x audit
              cost) / tasks, in task executions. Audit cost: ``AuditPolicy.cost(records,
              rescore_cost)``; "@1.0" is the same run priced with a re-score as dear as generating.
  wrong/rec   wrong records delivered (unchecked, or checked and missed) per record delivered.
  checks      checked results (its own audited or replicated results, and its replicas) among an
              honest provider's first 200 tasks (mean).

    python bench/verification_sim.py --providers 1000 --tasks 100000 --dishonest 0.1 --seed 7
    python bench/verification_sim.py --runs 20   # 20 seeds pooled: per-type figures with less noise
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import replace, dataclass, field
from pathlib import Path

import numpy as np

from coordinator.reputation import Reputation, eligible
from coordinator.verification.plan import AuditPolicy, VerificationPlan
from coordinator.verification.policy import ProviderTrack, ReplicationPolicy

CHEAT_RATES = (0.01, 0.05, 0.2, 0.5, 1.0)
CHEAT_FRACTIONS = (1.0, 0.25, 1 / 16)
WINDOW = 200
TARGET_CAUGHT, TARGET_EXTRA = 0.99, 0.10
TARGET_WRONG, TARGET_FP = 1e-4, 0.005  # wrong records delivered per record; honest providers slashed
HALF_LIFE = 1e6  # reputation half-life, in tasks (the simulated clock ticks once per task)
FULL = ReplicationPolicy(p_new=1.0, probation=0, p_floor=1.0)  # replicate everything: the 2x baseline
NO_AUDIT = AuditPolicy(rate=0.0)
SAMPLED = VerificationPlan(ReplicationPolicy(p_new=1.0, probation=9, p_floor=0.02), AuditPolicy(records=2))
SCHEMES = {
    "(a) replica-only adapt.": VerificationPlan(ReplicationPolicy(p_new=1.0, probation=9), NO_AUDIT),
    "(b) adaptive + audits": VerificationPlan(),
    "(s) sampled audits (old)": SAMPLED,
    "(c) full 2x replication": VerificationPlan(FULL, NO_AUDIT),
}
DEFAULT = "(b) adaptive + audits"
MEASURED = Path(__file__).resolve().parent / "data" / "rescore_cost.json"
DEFAULT_RESCORE_COST = 0.39  # SmolLM2-135M on 2 CPU cores (bench/rescore_cost.py), when no file says


def measured_rescore_cost(path: Path = MEASURED) -> tuple[float, str]:
    """The rescore/generate ratio ``bench/rescore_cost.py`` measured (GPU if measured, else CPU), and where from."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return DEFAULT_RESCORE_COST, "the built-in CPU figure (no measurement file)"
    for kind in ("gpu", "cpu"):
        if kind in data:
            d = data[kind]
            models = ", ".join(f"{m} {v['ratio']:.3f}" for m, v in sorted(d["models"].items()))
            return float(d["ratio"]), f"{kind.upper()} ratio measured on {d['device']} ({models}; the dearer)"
    return DEFAULT_RESCORE_COST, "the built-in CPU figure"


@dataclass
class Provider:
    cheat_rate: float  # 0 for honest providers
    fraction: float  # of a cheated result's records that are wrong (0 for honest providers)
    lazy: bool  # also skips audits (with its cheat rate), reporting "valid"
    error: float  # chance that a result is wrong
    bad_records: int  # wrong records in a wrong result
    ring: int = -1  # colluding ring (one operator), -1 for none
    track: ProviderTrack = field(default_factory=ProviderTrack)
    rep: Reputation = field(default_factory=Reputation)
    executed: int = 0
    first_wrong_at: int | None = None
    wrong_early: int = 0  # wrong results among its first WINDOW executed tasks
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
    wrong_records: int = 0  # wrong records delivered
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
               seed: int, rings: float = 0.0, ring_size: int = 2) -> list[Provider]:
    rng = np.random.default_rng(seed)
    bad = rng.random(providers) < dishonest
    rates = rng.choice(CHEAT_RATES, size=providers)
    fractions = rng.choice(CHEAT_FRACTIONS, size=providers)
    lazies = rng.random(providers) < lazy
    colluding = rng.random(providers) < rings
    pool = [Provider(float(r), float(f), bool(z), float(r), max(1, round(f * records))) if b
            else Provider(0.0, 0.0, False, honest_error, 0)
            for b, r, f, z in zip(bad, rates, fractions, lazies)]
    members = [i for i, p in enumerate(pool) if p.cheat_rate > 0 and colluding[i]]
    for k in range(0, len(members) - ring_size + 1, ring_size):  # one ring: one cheat profile, one operator
        lead = pool[members[k]]
        for i in members[k:k + ring_size]:
            pool[i] = replace(pool[i], ring=k, cheat_rate=lead.cheat_rate, fraction=lead.fraction,
                              error=lead.error, bad_records=lead.bad_records)
    return pool


def _execute(p: Provider, u: float) -> int:
    """``p`` runs a task; how many of its records are wrong (an honest provider's: 0, its
    nondeterministic records are not wrong)?"""
    p.executed += 1
    if u >= p.error or p.cheat_rate == 0:
        return 0
    if p.first_wrong_at is None:
        p.first_wrong_at = p.executed
    p.wrong_early += p.executed <= WINDOW
    return p.bad_records


def _differs(p: Provider, u: float) -> bool:
    """An honest provider's result is not identical to another engine's (nondeterminism)."""
    return p.cheat_rate == 0 and u < p.error


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


def _operator(p: Provider, k: int) -> int:
    return p.ring if p.ring >= 0 else -2 - k


def simulate(plan: VerificationPlan, *, providers: int, tasks: int, dishonest: float,
             honest_error: float, seed: int, records: int = 16, lazy: float = 0.5,
             audit_fp: float = 0.0, audit_credit: str = "both", rings: float = 0.0, ring_size: int = 2,
             referee_fr: float = 0.0, independent: bool = True) -> Outcome:
    """One run. The population and every draw except the plan's are the same for every ``plan``."""
    pool = population(providers, dishonest, honest_error, records, lazy, seed, rings, ring_size)
    out = Outcome(pool, tasks, records, plan.audit)
    active = list(range(providers))
    rng = random.Random(seed)  # the plan's draws, as the coordinator makes them
    where = random.Random(seed + 2)  # which records a wrong result has wrong
    draw = random.Random(seed + 3)  # which independent provider checks
    positions = range(records)
    credit_primary = audit_credit in ("both", "primary")
    credit_auditor = audit_credit == "both"
    u = np.random.default_rng(seed + 1).random((tasks, 7)).tolist()
    for t, (u_pick, u_wrong, u_wrong2, u_lazy, u_fp, u_fr, u_fr2) in enumerate(u):
        if len(active) < 2:
            break
        i = active[int(u_pick * len(active))]
        worker = pool[i]
        wrong = _execute(worker, u_wrong)
        differs = _differs(worker, u_wrong)
        early = worker.executed <= WINDOW
        check = plan.decide(worker.track, records, rng)
        if check is None:
            out.wrong_accepted += wrong > 0
            out.wrong_records += wrong
            worker.escaped += wrong > 0
            continue
        worker.checked_early += early
        op = _operator(worker, i)
        j = i
        for _ in range(64):  # a random independent checker (the scheduler's draw; rejection sampling)
            j = active[draw.randrange(len(active))]
            if j != i and (not independent or _operator(pool[j], j) != op):
                break
        if j == i or (independent and _operator(pool[j], j) == op):
            out.wrong_accepted += wrong > 0  # no independent provider: the referee would take it (not modelled)
            out.wrong_records += wrong
            continue
        checker = pool[j]
        partner = worker.ring >= 0 and checker.ring == worker.ring
        # the referee's band falsely rejects an honest nondeterministic record with ``referee_fr``
        glitch_lost = differs and u_fr < referee_fr
        if check.kind == "replica":
            out.replicas += 1
            c_wrong = wrong if partner else _execute(checker, u_wrong2)
            c_differs = _differs(checker, u_wrong2)
            checker.checked_early += checker.executed <= WINDOW  # its replica is a checked result too
            disputed = not partner and bool(wrong or c_wrong or differs or c_differs)
            out.replica_disputes += disputed
            primary_wrong = disputed and (wrong > 0 or glitch_lost)
            checker_wrong = disputed and (c_wrong > 0 or (c_differs and u_fr2 < referee_fr))
            if wrong and not primary_wrong:
                out.wrong_accepted += 1
                out.wrong_records += wrong
                worker.escaped += 1
            sides = ((i, worker, primary_wrong, "replica"), (j, checker, checker_wrong, "replica"))
        else:
            out.audits += 1
            checker.audits += 1
            bad = set(where.sample(positions, wrong)) if wrong else ()
            hit = any(r in bad for r in check.records)
            skips = partner or (checker.lazy and u_lazy < checker.cheat_rate)
            checker.skipped += skips and not partner
            false_alarm = not skips and (u_fp < audit_fp or glitch_lost)
            if not skips and wrong:
                out.cheated_audits += worker.cheat_rate > 0
                out.cheated_audits_hit += worker.cheat_rate > 0 and hit
            # a lazy auditor accepts everything, decoys too: disputed iff the plan planted a decoy;
            # a partner passes its partner's records but rejects the decoy: nothing to dispute
            disputed = (not partner and bool(check.decoys)) if skips else hit or false_alarm
            out.audit_disputes += disputed
            primary_wrong = disputed and (hit or glitch_lost)  # the referee re-scores the drawn records
            checker_wrong = disputed and ((skips and not partner) or (false_alarm and not glitch_lost))
            if wrong and not primary_wrong:
                out.wrong_accepted += 1
                out.wrong_records += wrong
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
                 "wrong_records", "cheated_audits", "cheated_audits_hit"):
        setattr(pooled, name, sum(getattr(o, name) for o in outs))
    return pooled


def _cheated(ps: list[Provider]) -> list[Provider]:
    """Cheaters that returned at least two wrong results within their first WINDOW tasks."""
    return [p for p in ps if p.wrong_early >= 2]


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
        "wrong_rec": out.wrong_records / max(1, out.tasks * out.records),
    }


def print_header() -> None:
    print(f"{'scheme':<25}{'caught':>8}{'<=200':>8}{'median':>7}{'FP':>7}{'FP ejct':>8}{'extra':>7}"
          f"{'@1.0':>7}{'wrong/rec':>10}{'checks':>7}")


def print_row(name: str, f: dict[str, float]) -> None:
    print(f"{name:<25}{f['detected']:>8.1%}{f['window']:>8.1%}{f['median']:>7.0f}{f['fp']:>7.2%}"
          f"{f['honest_ejected']:>8.2%}{f['extra']:>7.1%}{f['extra_1']:>7.1%}{f['wrong_rec']:>10.1e}"
          f"{f['checks']:>7.1f}")


def _fname(f: float) -> str:
    return "1" if f == 1 else "1/4" if f == 0.25 else "1/16" if f == 1 / 16 else f"{f:g}"


def audit_hit(records: int, bad: int, audit: AuditPolicy) -> float:
    """The chance that an audit draws at least one of ``bad`` wrong records (1 - hypergeometric miss)."""
    drawn = audit.drawn(records)
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


def break_even(out: Outcome) -> float:
    """The largest rescore/generate ratio at which this run's extra compute is within TARGET_EXTRA."""
    rep, ref, aud1 = out.parts(1.0)
    return (TARGET_EXTRA - rep - ref) / aud1 if aud1 > 0 else math.inf


def ring_report(out: Outcome) -> str:
    ring = _cheated([p for p in out.providers if p.ring >= 0])
    lone = _cheated([p for p in out.providers if p.cheat_rate > 0 and p.ring < 0])
    if not ring:
        return "colluding rings: none in this population (--rings)"
    return (f"colluding rings (one operator, same wrong records): <=200 {_within(ring) / len(ring):.1%} of "
            f"{len(ring)} ring members vs {_within(lone) / max(1, len(lone)):.1%} of {len(lone)} lone cheaters")


def target_report(out: Outcome, f: dict[str, float], rescore_cost: float, source: str) -> list[str]:
    checks = {
        f">= {TARGET_CAUGHT:.0%} of cheaters that cheat twice caught within their first {WINDOW} tasks":
            (f["window"] >= TARGET_CAUGHT, f"{f['window']:.2%}"),
        f"wrong records delivered <= {TARGET_WRONG:g} per record": (f["wrong_rec"] <= TARGET_WRONG,
                                                                  f"{f['wrong_rec']:.1e}"),
        f"honest providers falsely slashed <= {TARGET_FP:.1%}": (f["fp"] <= TARGET_FP, f"{f['fp']:.2%}"),
        f"extra compute <= {TARGET_EXTRA:.0%}": (f["extra"] <= TARGET_EXTRA, f"{f['extra']:.1%}"),
    }
    met = all(ok for ok, _ in checks.values())
    lines = [f"target for (b), every cheater type pooled, at rescore cost {rescore_cost:.3f} ({source}): "
             f"{'MET' if met else 'NOT met'}"]
    lines += [f"  {'ok ' if ok else 'NO '} {name}: {value}" for name, (ok, value) in checks.items()]
    lines.append(f"  the cost target holds up to a rescore/generate ratio of {break_even(out):.3f} "
                 f"(at 1.0: {f['extra_1']:.1%} extra)")
    rep, ref, aud = out.parts(rescore_cost)
    lines.append(f"  extra = replicas {rep:.1%} + referee re-executions {ref:.2%} + audits and their referee "
                 f"re-scorings {aud:.1%} ({out.audits / max(1, out.tasks):.1%} of tasks audited, "
                 f"{out.replicas / max(1, out.tasks):.1%} replicated)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--providers", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--dishonest", type=float, default=0.1)
    ap.add_argument("--honest-error", type=float, default=0.01,
                    help="share of an honest provider's results that are not identical to another engine's")
    ap.add_argument("--referee-fr", type=float, default=0.001,
                    help="chance that the rescoring band rejects a nondeterministic honest result")
    ap.add_argument("--records", type=int, default=16, help="records per task (the default shard size)")
    ap.add_argument("--rescore-cost", type=float, default=None,
                    help="re-scoring a task's records relative to generating them (default: measured)")
    ap.add_argument("--audit-fp", type=float, default=0.0, help="an honest audit's false-alarm rate")
    ap.add_argument("--lazy", type=float, default=0.5, help="fraction of cheaters that also skip audits")
    ap.add_argument("--rings", type=float, default=0.3, help="fraction of cheaters in colluding rings")
    ap.add_argument("--ring-size", type=int, default=2)
    ap.add_argument("--no-independence", action="store_true",
                    help="draw checkers among all providers, ring partners included (what the rule prevents)")
    ap.add_argument("--audit-credit", choices=("both", "primary", "none"), default="both",
                    help="whom a passed audit counts as verified valid")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1, help="pool this many runs (seeds seed, seed+10, ...)")
    default = VerificationPlan()
    ap.add_argument("--p-new", type=float, default=default.replication.p_new, help="plan (b): probation replicas")
    ap.add_argument("--probation", type=int, default=default.replication.probation,
                    help="plan (b): consecutive valid results before replication drops")
    ap.add_argument("--p-floor", type=float, default=default.replication.p_floor, help="plan (b): replication floor")
    ap.add_argument("--audit-records", type=int, default=default.audit.records,
                    help="plan (b): records per audit (0: all)")
    ap.add_argument("--decoys", type=int, default=default.audit.decoys, help="plan (b): decoys per audit")
    args = ap.parse_args()
    if args.rescore_cost is None:
        rescore_cost, source = measured_rescore_cost()
    else:
        rescore_cost, source = args.rescore_cost, "given with --rescore-cost"
    SCHEMES[DEFAULT] = VerificationPlan(
        replace(default.replication, p_new=args.p_new, probation=args.probation, p_floor=args.p_floor),
        replace(default.audit, records=args.audit_records, decoys=args.decoys))
    kw = {"providers": args.providers, "tasks": args.tasks, "dishonest": args.dishonest,
          "honest_error": args.honest_error, "seed": args.seed, "runs": args.runs, "records": args.records,
          "lazy": args.lazy, "audit_fp": args.audit_fp, "audit_credit": args.audit_credit, "rings": args.rings,
          "ring_size": args.ring_size, "referee_fr": args.referee_fr, "independent": not args.no_independence}
    plan = SCHEMES[DEFAULT]
    a = plan.audit
    print(f"{args.providers} providers, {args.dishonest:.0%} dishonest (cheat rates {CHEAT_RATES} x corrupted "
          f"fractions {', '.join(map(_fname, CHEAT_FRACTIONS))}; {args.lazy:.0%} of them lazy auditors, "
          f"{args.rings:.0%} in rings of {args.ring_size}), {args.tasks} tasks of {args.records} records, honest "
          f"nondeterminism {args.honest_error}, band false-reject {args.referee_fr}, audit FP {args.audit_fp}, "
          f"checkers {'independent' if not args.no_independence else 'drawn among all'}, seed {args.seed}"
          + (f", {args.runs} runs pooled" if args.runs > 1 else ""))
    print(f"rescore/generate ratio used: {rescore_cost:.3f}, {source}")
    print(f"plan (b): {plan.replication}, {a}; an audit re-scores {a.drawn(args.records)} records + "
          f"{a.decoys if args.records >= 2 else 0} decoy(s) = {a.cost(args.records, rescore_cost):.4f} of a "
          f"task ({a.cost(args.records, 1.0):.4f} at 1.0); passed audits credit: {args.audit_credit}")
    print_header()
    start = time.perf_counter()
    outs, figs = {}, {}
    for name, scheme in SCHEMES.items():
        outs[name] = simulate_runs(scheme, **kw)
        figs[name] = figures(outs[name], rescore_cost)
        print_row(name, figs[name])
    elapsed = time.perf_counter() - start
    print("<=200 by corrupted fraction: "
          + "; ".join(f"{name.split()[0]} {by_fraction(o)}" for name, o in outs.items()))
    b = outs[DEFAULT]
    print(f"(b) by cheat rate x corrupted fraction f ('audit hit': chance an audit draws a wrong record of a "
          f"cheated result; measured {b.cheated_audits_hit}/{b.cheated_audits} = "
          f"{b.cheated_audits_hit / max(1, b.cheated_audits):.3f} over all audits of cheated results):")
    print_by_type(b)
    print(lazy_report(b))
    print(ring_report(b))
    for line in target_report(b, figs[DEFAULT], rescore_cost, source):
        print(line)
    cpu = json.loads(MEASURED.read_text()).get("cpu") if MEASURED.exists() else None
    if cpu and "gpu" in json.loads(MEASURED.read_text()):
        print(f"at the CPU ratio {cpu['ratio']:.3f}: {b.extra(cpu['ratio']):.1%} extra")
    fa, fs, fc = (figs[k] for k in ("(a) replica-only adapt.", "(s) sampled audits (old)", "(c) full 2x replication"))
    print(f"for comparison: (a) {fa['window']:.1%} at {fa['extra']:.1%} extra; (s) {fs['window']:.1%} at "
          f"{fs['extra']:.1%}, {fs['wrong_rec']:.1e} wrong/record; (c) {fc['window']:.1%} at {fc['extra']:.1%} extra")
    print(f"({elapsed:.1f} s for {len(SCHEMES)} schemes x {args.runs} run(s))")


if __name__ == "__main__":
    main()
