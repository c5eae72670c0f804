"""What a primary task's failed attempt does to it: retry, confirm, or fail. Pure.

A provider reports a failure as retryable (its own trouble: out of memory, a killed process, a
fetch error, a timeout) or final (the task itself is bad: its model artifact, input, parameters,
chat template or adapter, which any honest provider would fail on the same way). A final report
blames nobody, and ends the task without going round every provider in turn; but one
open-market provider's word is not enough to fail a job for good (a cheating provider could fail
any honest job with one message). So the first final report from the open market sends the task
once more to a provider independent of the reporter (none sharing its operator, network or stake
funder), whatever attempts are left:

* a second final report (from that independent provider) or one from centralized capacity (the
  operator's own, trusted) confirms it: the task and its job fail, naming the cause;
* a result instead contradicts it: the reporter is charged an abandoned lease after all
  (``contradicted``), as a retryable failure would have been.

Retryable failures keep their rule: requeued (others first) while attempts remain, each an
abandoned lease of the provider that reported it. Checks (replicas, audits, referees) have rules
of their own in the store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FailureAction(enum.StrEnum):
    RETRY = "retry"  # queue it again; the reporter is avoided while others can take it
    CONFIRM = "confirm"  # a final report to check: queue it again for an independent provider only
    FAIL = "fail"  # the task (and its job) fails


@dataclass(frozen=True, slots=True)
class FailureDecision:
    action: FailureAction
    blame: bool  # counts as a lease the reporter abandoned (its reliability)
    why: str  # how the job's error explains a FAIL

    @property
    def requeue(self) -> bool:
        return self.action is not FailureAction.FAIL


def decide_failure(*, retryable: bool, attempts: int, max_attempts: int, trusted_reporter: bool,
                   final_reported_by: str) -> FailureDecision:
    """The decision for one failed attempt of a primary task: ``attempts`` it has had (this one
    included); ``trusted_reporter``: reported by centralized capacity; ``final_reported_by``: the
    open-market provider whose final report this task is being confirmed after ("" if none)."""
    if retryable:
        if attempts < max_attempts:
            return FailureDecision(FailureAction.RETRY, True, "")
        return FailureDecision(FailureAction.FAIL, True, f"after {attempts} attempt(s)")
    if trusted_reporter:
        return FailureDecision(FailureAction.FAIL, False, "(final, reported by centralized capacity)")
    if final_reported_by:
        return FailureDecision(FailureAction.FAIL, False, "(final, confirmed by an independent provider)")
    return FailureDecision(FailureAction.CONFIRM, False, "")


def contradicted(final_reported_by: str, submitted_by: str) -> str:
    """The provider to charge when a result is accepted for a task another provider called bad
    for good ("" when none): its report was wrong."""
    return final_reported_by if final_reported_by and final_reported_by != submitted_by else ""
