"""Reading checks and referee reports into verdicts. Pure: bytes and metadata in, decisions out.

A check either confirms the primary result (both sides verified valid) or escalates to a
trusted referee, which re-scores the disputed records itself (teacher-forced, so honest outputs
from different engines or precisions pass while wrong ones do not). The referee's reading decides
both sides: the primary is valid iff the referee accepts its records; a replica is valid iff the
referee accepts its records too; an auditor is valid iff its per-claim readings (decoys included)
agree with the referee's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.verification.compare import (
    RescoreThresholds,
    Verdict,
    compare_exact,
    first_divergence,
    judge_rescore,
)
from coordinator.verification.inputs import answers, records, undisguise


@dataclass(frozen=True)
class CheckReading:
    agree: bool  # confirms the primary; else escalate to the referee
    checker_ok: bool  # the check's output is well-formed for its input (else the checker is invalid)
    reason: str


@dataclass(frozen=True)
class RefereeReading:
    primary_valid: bool
    checker_valid: bool
    reason: str
    primary_edges: int = 0  # records that lost to the other side's within the tie band
    checker_edges: int = 0


def _report(data: bytes, claims: bytes) -> list[dict] | str:
    """A re-scoring report that has one record per claim with the claim's id, or why not."""
    try:
        rep, cl = records(data), records(claims)
    except ValueError as exc:
        return f"report is not JSONL of objects ({exc})"
    if [r.get("id") for r in rep] != [c.get("id") for c in cl]:
        return f"report has {len(rep)} records not matching the {len(cl)} claims"
    return rep


def _split(kinds: Sequence[Sequence], report: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    real = [r for k, r in zip(kinds, report) if k[0] == "record"]
    decoys = [r for k, r in zip(kinds, report) if k[0] == "decoy"]
    return real, decoys


def _readings(kinds: Sequence[Sequence], report: Sequence[dict], th: RescoreThresholds) -> tuple[Verdict, list[bool]]:
    """The verdict on the real records and, per decoy, whether it was (wrongly) accepted."""
    real, decoys = _split(kinds, report)
    return judge_rescore(real, th), [judge_rescore(d, th).agree for d in decoys]


def read_replica(task_input: bytes, primary_output: bytes, replica_input: bytes, replica_output: bytes,
                 names: Sequence[Sequence]) -> CheckReading:
    shape = answers(replica_input, replica_output)
    if not shape.agree:
        return CheckReading(False, False, f"replica output does not answer its input: {shape.reason}")
    mapped = undisguise(task_input, replica_output, names)
    same = compare_exact(primary_output, mapped)
    return CheckReading(same.agree, True, f"replica: {same.reason}")


def read_audit(claims: bytes, report: bytes, kinds: Sequence[Sequence], th: RescoreThresholds) -> CheckReading:
    rep = _report(report, claims)
    if isinstance(rep, str):
        return CheckReading(False, False, f"audit {rep}")
    verdict, decoys_accepted = _readings(kinds, rep, th)
    if not verdict.agree:
        return CheckReading(False, True, f"audit rejects the result: {verdict.reason}")
    if any(decoys_accepted):
        return CheckReading(False, True, "audit accepted a planted wrong record (decoy)")
    return CheckReading(True, True, f"audit: {verdict.reason}; {len(decoys_accepted)} decoy(s) rejected")


@dataclass(frozen=True)
class Duel:
    primary_lost: tuple = ()  # ids of the primary's records the model finds less likely than the replica's
    checker_lost: tuple = ()
    primary_edges: int = 0  # records less likely than the other side's, but within the tie band
    checker_edges: int = 0

    @property
    def reason(self) -> str:
        parts = [f"{side} loses records {_ids(lost)} to the other side" for side, lost in
                 (("primary", self.primary_lost), ("replica", self.checker_lost)) if lost]
        parts += [f"{side} has {n} record(s) at the edge of the tie band" for side, n in
                  (("primary", self.primary_edges), ("replica", self.checker_edges)) if n]
        return "; record by record: " + ", ".join(parts) if parts else ""


def _ids(ids: Sequence) -> str:
    return ", ".join(map(repr, ids[:5])) + (f" (+{len(ids) - 5})" if len(ids) > 5 else "")


def record_by_record(claims: Sequence[dict], report: Sequence[dict], n: int, th: RescoreThresholds) -> Duel:
    """Judge a replica dispute's differing records against each other: ``claims`` and ``report``
    hold the primary's ``n`` records, then the replica's in the same order. At the first token
    where two greedy records of one prompt differ, both sides share the context, so the model's
    log-probabilities of their two tokens compare directly; the less likely side loses the record
    when the gap exceeds ``th.tie_nats`` (honest precision differences stay within it)."""
    lost_p, lost_c, edge_p, edge_c = [], [], 0, 0
    for i in range(n):
        a, b = claims[i], claims[n + i]
        if a.get("completion") == b.get("completion") or report[i].get("temperature", 0) > 0:
            continue
        div = first_divergence(report[n + i], report[i], b.get("completion_ids"), a.get("completion_ids"))
        if div is None:
            continue
        if div.margin > th.tie_nats:
            lost_p.append(a.get("id", i))
        elif div.margin < -th.tie_nats:
            lost_c.append(b.get("id", i))
        elif div.margin > 0:
            edge_p += 1
        elif div.margin < 0:
            edge_c += 1
    return Duel(tuple(lost_p), tuple(lost_c), edge_p, edge_c)


def read_referee(meta: Mapping[str, Any], referee_claims: bytes, referee_report: bytes,
                 check_claims: bytes, check_report: bytes, th: RescoreThresholds) -> RefereeReading:
    """``meta``: the referee row's check metadata (``mode``, ``kinds``, ``checker_ok``)."""
    rep = _report(referee_report, referee_claims)
    if isinstance(rep, str):
        raise ValueError(f"referee {rep}")  # a trusted referee's malformed report is an operator fault
    kinds = meta["kinds"]
    if meta["mode"] == "replica":
        n = sum(1 for k in kinds if k[0] == "primary")
        primary = judge_rescore(rep[:n], th)
        checker = judge_rescore(rep[n:], th) if meta["checker_ok"] and len(rep) > n else Verdict(False, (), "malformed replica")
        reason = f"referee on primary: {primary.reason}; on replica: {checker.reason}"
        if not (meta["checker_ok"] and len(rep) == 2 * n):
            return RefereeReading(primary.agree, checker.agree, reason)
        duel = record_by_record(records(referee_claims), rep, n, th)
        return RefereeReading(primary.agree and not duel.primary_lost, checker.agree and not duel.checker_lost,
                              reason + duel.reason, duel.primary_edges, duel.checker_edges)
    truth, truth_decoys = _readings(kinds, rep, th)
    checker_valid = False
    if meta["checker_ok"]:
        theirs = _report(check_report, check_claims)
        if not isinstance(theirs, str):
            claimed, claimed_decoys = _readings(kinds, theirs, th)
            # it may reject only records the referee rejects too
            checker_valid = (claimed.agree == truth.agree and claimed_decoys == truth_decoys
                             and set(claimed.mismatched_ids) <= set(truth.mismatched_ids))
    return RefereeReading(truth.agree, checker_valid,
                          f"referee audit: {truth.reason}; auditor {'agrees' if checker_valid else 'contradicted'}")
