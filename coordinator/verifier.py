"""Spot-checked redundant execution, applied: what a result needs, and what a check found.

The coordinator calls :meth:`Verifier.on_primary` with each primary result before accepting it
(an output that does not answer its input is rejected outright) and :meth:`Verifier.read` with
each check or referee result. Both return what the store applies in one transaction; the
decisions themselves are the pure modules of ``coordinator.verification``. Slashed stake goes to
the job's submitter (the wronged party), or to the coordinator's account for unpaid jobs.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable

from coordinator.config import CoordinatorSettings
from coordinator.models import (
    CANCEL_REQUESTED,
    Job,
    ProviderRecord,
    ProviderTier,
    Task,
    TaskRole,
    TaskState,
)
from coordinator.sealing import SealedView
from coordinator.settlement.payouts import TaskCharge, task_cost
from coordinator.store.base import Slash, Store, VerificationUpdate
from coordinator.verification.compare import RescoreThresholds, Verdict
from coordinator.verification.embeddings import read_embed_referee, read_embed_replica
from coordinator.verification.inputs import (
    answers,
    audit_input,
    disguise,
    jsonl,
    records,
    undisguise,
)
from coordinator.verification.plan import AuditPolicy, Check, VerificationPlan
from coordinator.verification.policy import ReplicationPolicy, p_floor
from coordinator.verification.resolve import (
    CheckReading,
    RefereeReading,
    read_audit,
    read_referee,
    read_replica,
)
from coordinator.verification.segments import (
    choose_segment,
    claimed_weights,
    judge,
    replay_result,
)
from gpumesh.checkpoints import FinetuneOutput
from gpumesh.finetune import FinetuneParams
from gpumesh.requestline import CLAIM_FIELDS
from gpumesh.jobspec import JobSpec

CENTRALIZED = ProviderTier.CENTRALIZED.value


@dataclass(frozen=True)
class PrimaryDecision:
    reject: str = ""  # non-empty: the result is invalid on its face (requeue, slash)
    verdict: str = ""
    check: Task | None = None


def _check_id(task: Task, what: str) -> str:
    return f"{task.job_id}-t{task.index:05d}-{what}{uuid.uuid4().hex[:10]}"


class Verifier:
    def __init__(self, settings: CoordinatorSettings, store: Store, artifacts: SealedView,
                 *, clock: Callable[[], float], rng: random.Random | None = None) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self.thresholds = RescoreThresholds()
        self.plan = VerificationPlan(
            ReplicationPolicy(p_new=settings.replication_p_new, probation=settings.replication_probation,
                              p_floor=min(settings.replication_p_floor, settings.replication_p_new)),
            AuditPolicy(settings.audit_rate, settings.audit_records, settings.audit_decoys),
        )

    def plan_for(self, spec: JobSpec, task: Task | None = None,
                 provider: ProviderRecord | None = None) -> VerificationPlan:
        """The coordinator's plan, raised to the job's ``min_replication`` and to the economic
        floor of this task (:meth:`p_min`)."""
        v = spec.verification
        audit = self.plan.audit if v.audit_rate is None else replace(self.plan.audit, rate=v.audit_rate)
        floor = max(v.min_replication or 0.0, self.p_min(task, provider) if task is not None else 0.0)
        return VerificationPlan(self.plan.replication.for_job(floor or None), audit)

    def p_min(self, task: Task, provider: ProviderRecord | None = None) -> float:
        """``C / (R + S)`` for this result: its reward R is what the task earns at its lease price
        for the time it took; the cheater's saving C is taken as all of R (no margin, the worst
        case); S is the stake surely slashable on a catch: ``slash_amount``, at most what one incident
        may take of the provider's collectable stake as last read (after every slash), else of
        ``min_stake``. With nothing slashable every paid result is checked; a coordinator that pays
        nobody needs no floor."""
        if not self.settings.chain_url:
            return 0.0
        reward = task_cost(TaskCharge(task.task_id, "", task.price_per_hour, max(0.0, self.clock() - task.leased_at)))
        return p_floor(reward, reward, self.slashable(provider))

    def slashable(self, provider: ProviderRecord | None) -> int:
        """What one slash can surely collect from ``provider``."""
        stake = provider.stake if provider is not None and provider.stake is not None else self.settings.required_stake
        return min(self.settings.slash_amount, stake * self.settings.registry_max_slash_bps // 10_000)

    # ---- primary results ------------------------------------------------------------------------

    def on_primary(self, task: Task, job: Job, provider: ProviderRecord, output_cid: str,
                   signature: bytes = b"") -> PrimaryDecision:
        """``signature``: the provider's signature of ``result_text(task, output_cid)``, kept with any
        check so a slash can show the registry what the provider committed to."""
        if job.spec.kind == "finetune":
            return self._finetune_primary(task, job, provider, output_cid, signature)
        inp = self.artifacts.get_bytes(task.input_cid)
        out = self.artifacts.get_bytes(output_cid)
        shape = answers(inp, out)
        if not shape.agree:
            return PrimaryDecision(reject=f"result does not answer the task's input: {shape.reason}")
        if why := self._unchecked(provider):
            return PrimaryDecision(verdict=why)
        plan = self.plan_for(job.spec, task, provider)
        check = plan.decide(provider.track, len(records(inp)), self.rng)
        if check is None:
            p = plan.replication.probability(provider.track)
            return PrimaryDecision(verdict=f"accepted unchecked (not drawn: replication p={p:.3f}, "
                                           f"audit rate {plan.audit.rate:.2f})")
        row = self._check_row(task, job, provider, output_cid, signature, inp, out, check)
        return PrimaryDecision(verdict=f"checking ({check.kind})", check=row)

    def _check_row(self, task: Task, job: Job, provider: ProviderRecord, output_cid: str, signature: bytes,
                   inp: bytes, out: bytes, check: Check) -> Task:
        meta: dict[str, Any] = {"primary_provider": provider.provider_id, "primary_output": output_cid,
                                "primary_signature": signature.hex()}
        if job.spec.kind == "embeddings":  # no cheaper check than re-embedding: a sampled audit is a replica
            check = replace(check, kind="replica")
        if check.kind == "replica":
            gen = job.spec.inference  # the replica generates in the primary's batches
            d = disguise(inp, check.seed, batch_size=gen.batch_size, max_new_tokens=gen.max_new_tokens)
            meta["names"] = d.names
            return Task(_check_id(task, "c"), job.job_id, task.index, TaskState.QUEUED,
                        self.artifacts.put_like(task.input_cid, d.data), task.prompts, role=TaskRole.REPLICA,
                        verifies=task.task_id, kind=job.spec.kind, exclude=provider.independence_keys,
                        check_json=json.dumps(meta))
        a = audit_input(inp, out, check, self.rng.getrandbits(63))
        meta["kinds"] = a.kinds
        return Task(_check_id(task, "c"), job.job_id, task.index, TaskState.QUEUED,
                    self.artifacts.put_like(task.input_cid, a.claims), len(a.kinds), role=TaskRole.AUDIT,
                    verifies=task.task_id, kind="rescore", aux_cid=self.artifacts.put_like(task.input_cid, a.prompts),
                    exclude=provider.independence_keys, check_json=json.dumps(meta))

    def _unchecked(self, provider: ProviderRecord) -> str:
        if not self.settings.verify:
            return "accepted unchecked (verification is off)"
        if provider.tier is ProviderTier.CENTRALIZED:
            return "accepted unchecked (trusted centralized provider)"
        return ""

    def _finetune_primary(self, task: Task, job: Job, provider: ProviderRecord, output_cid: str,
                          signature: bytes) -> PrimaryDecision:
        """A fine-tune must have every checkpoint its parameters imply; a replica replays one
        random segment of it (with the adaptive replication probability)."""
        params = FinetuneParams.parse(job.spec.finetune)
        try:
            index = FinetuneOutput.parse(self.artifacts.get_bytes(output_cid))
        except ValueError as exc:
            return PrimaryDecision(reject=str(exc))
        steps = params.steps
        if 1 <= index.steps < steps and self.store.has_job_event(job.job_id, CANCEL_REQUESTED):
            steps = index.steps  # stopped on the submitter's cancel: delivered (and checked) as far as it went
        problem = index.problem(steps, params.checkpoint_every)
        missing = [c for c in (*[c.cid for c in index.checkpoints], index.final, index.loss) if not self.artifacts.has(c)]
        if problem or missing:
            return PrimaryDecision(reject=problem or f"{len(missing)} output artifact(s) were not uploaded")
        if why := self._unchecked(provider):
            return PrimaryDecision(verdict=why)
        policy = self.plan_for(job.spec, task, provider).replication
        # no audit covers a fine-tune: a replay is its only check, so probation replays every result
        policy = replace(policy, p_new=max(policy.p_new, self.settings.replay_p_new))
        if not policy.decide(provider.track, self.rng.random()):
            return PrimaryDecision(verdict=f"accepted unchecked (not drawn: p={policy.probability(provider.track):.3f})")
        seg = choose_segment(index, self.rng.random())
        meta = {"primary_provider": provider.provider_id, "primary_output": output_cid,
                "primary_signature": signature.hex(), "from_step": seg.from_step,
                "to_step": seg.to_step, "claimed": seg.claimed_cid,
                "lease_params": {"finetune": job.spec.finetune, "steps": seg.to_step - seg.from_step}}
        row = Task(_check_id(task, "c"), job.job_id, task.index, TaskState.QUEUED, task.input_cid, task.prompts,
                   role=TaskRole.REPLICA, verifies=task.task_id, kind="replay", aux_cid=seg.start_cid,
                   exclude=provider.independence_keys, check_json=json.dumps(meta))
        return PrimaryDecision(verdict=f"checking (replay of steps {seg.from_step + 1}..{seg.to_step})", check=row)

    def _replay_reading(self, meta: dict, output_cid: str) -> tuple[Verdict, dict | None, dict | None]:
        """A replay's verdict on the claimed checkpoint, and its (start, replayed) tensors (None if malformed)."""
        claimed = claimed_weights(self.artifacts.get_bytes(meta["claimed"]))
        try:
            start, replayed = replay_result(self.artifacts.get_bytes(output_cid), meta["to_step"])
        except ValueError as exc:
            return Verdict(False, (), f"replay output is malformed: {exc}"), None, None
        return judge(claimed, start, replayed), start, replayed

    def slash_for(self, provider: ProviderRecord, task: Task, job: Job, reason: str, *, output_cid: str,
                  signature: bytes, dispute_cost: int = 0) -> Slash:
        """A slash of ``provider`` for its result ``output_cid`` of ``task`` (signed ``signature``),
        paid to the job's submitter, whom the invalid result wronged: ``slash_amount`` plus
        ``dispute_cost``, the loser's share of the referee the submitter's budget paid for (the
        registry's per-incident cap still bounds the whole)."""
        if dispute_cost:
            reason = f"{reason} (and {dispute_cost} for the dispute's referee)"
        return Slash(provider.provider_id, task.task_id, job.job_id, provider.address,
                     self.settings.slash_amount + dispute_cost, job.submitter, reason, output_cid=output_cid,
                     signature=bytes(signature))

    @staticmethod
    def referee_cost(row: Task) -> int:
        """What the referee ``row`` earns from the job's budget: its price for its measured time."""
        return task_cost(TaskCharge(row.task_id, "", row.price_per_hour, row.billed_seconds))

    # ---- check and referee results --------------------------------------------------------------

    def read(self, row: Task) -> VerificationUpdate:
        """What a submitted check (``row.role`` replica/audit) or referee result decides."""
        job = self.store.get_job(row.job_id)
        primary = self.store.get_task(row.verifies)
        meta = json.loads(row.check_json)
        if row.role is TaskRole.REFEREE:
            return self._read_referee(row, job, primary, meta)
        if row.kind == "replay":
            verdict, start, _ = self._replay_reading(meta, row.output_cid)
            reading = CheckReading(verdict.agree, start is not None, f"replay: {verdict.reason}")
        else:
            reading = self._read_inference_check(row, primary, meta)
        current = primary.output_cid == meta["primary_output"] and primary.state is TaskState.SUBMITTED
        if reading.agree:
            return VerificationUpdate(
                job.job_id,
                states=[(row.task_id, TaskState.VERIFIED, reading.reason)],
                verdicts=[(primary.task_id, f"verified by {row.role.value}: {reading.reason}")] if current else [],
                observations=[(meta["primary_provider"], True), (row.provider_id, True)],
            )
        referee = self._referee_row(row, primary, meta, reading.checker_ok)
        return VerificationUpdate(job.job_id, verdicts=[(row.task_id, f"disputed: {reading.reason}")],
                                  new_rows=[referee])

    def _read_inference_check(self, row: Task, primary: Task, meta: dict) -> CheckReading:
        out = self.artifacts.get_bytes(row.output_cid)
        if row.role is TaskRole.REPLICA:
            read = read_embed_replica if row.kind == "embeddings" else read_replica
            return read(self.artifacts.get_bytes(primary.input_cid),
                                   self.artifacts.get_bytes(meta["primary_output"]),
                                   self.artifacts.get_bytes(row.input_cid), out, meta["names"])
        return read_audit(self.artifacts.get_bytes(row.input_cid), out, meta["kinds"], self.thresholds)

    def _referee_row(self, row: Task, primary: Task, meta: dict, checker_ok: bool) -> Task:
        checker = self.store.get_provider(row.provider_id)
        first = self.store.get_provider(meta["primary_provider"])
        ref_meta: dict[str, Any] = {"mode": row.role.value, "check_task": row.task_id, "checker_ok": checker_ok,
                                    "primary_provider": meta["primary_provider"],
                                    "primary_output": meta["primary_output"],
                                    "primary_signature": meta.get("primary_signature", "")}
        if row.kind == "embeddings":  # the referee embeds the task's input itself
            ref_meta["mode"], ref_meta["names"] = "embed", meta["names"]
            return Task(_check_id(primary, "r"), primary.job_id, primary.index, TaskState.QUEUED, primary.input_cid,
                        primary.prompts, role=TaskRole.REFEREE, verifies=primary.task_id, kind="embeddings",
                        exclude=self._referee_exclude(first, checker), require_tier=CENTRALIZED,
                        check_json=json.dumps(ref_meta))
        if row.kind == "replay":  # the referee replays the same segment
            ref_meta.update({k: meta[k] for k in ("from_step", "to_step", "claimed", "lease_params")})
            ref_meta["mode"] = "replay"
            return Task(_check_id(primary, "r"), primary.job_id, primary.index, TaskState.QUEUED, row.input_cid,
                        row.prompts, role=TaskRole.REFEREE, verifies=primary.task_id, kind="replay",
                        aux_cid=row.aux_cid, exclude=self._referee_exclude(first, checker), require_tier=CENTRALIZED,
                        check_json=json.dumps(ref_meta))
        if row.role is TaskRole.AUDIT:
            ref_meta["kinds"] = meta["kinds"]
            claims_cid, prompts_cid, n = row.input_cid, row.aux_cid, row.prompts
        else:  # re-score both sides of a replica dispute
            inp = self.artifacts.get_bytes(primary.input_cid)
            prompts = records(inp)
            claims = records(self.artifacts.get_bytes(meta["primary_output"]))
            kinds = [("primary", i) for i in range(len(claims))]
            if checker_ok:
                mapped = records(undisguise(inp, self.artifacts.get_bytes(row.output_cid), meta["names"]))
                claims += mapped
                kinds += [("replica", i) for i in range(len(mapped))]
            ref_meta["kinds"] = kinds
            claims_cid = self.artifacts.put_like(primary.input_cid,
                                                 jsonl([{k: c[k] for k in CLAIM_FIELDS if k in c} for c in claims]))
            prompts_cid = self.artifacts.put_like(primary.input_cid, jsonl([prompts[i] for _, i in kinds]))
            n = len(kinds)
        return Task(_check_id(primary, "r"), primary.job_id, primary.index, TaskState.QUEUED, claims_cid, n,
                    role=TaskRole.REFEREE, verifies=primary.task_id, kind="rescore", aux_cid=prompts_cid,
                    exclude=self._referee_exclude(first, checker), require_tier=CENTRALIZED,
                    check_json=json.dumps(ref_meta))

    @staticmethod
    def _referee_exclude(first: ProviderRecord, checker: ProviderRecord) -> tuple[str, ...]:
        """Neither side's operator (a referee is the coordinator's own trusted node: its network and
        funding say nothing of collusion); a centralized checker is trusted and may referee its own dispute."""
        return (first.operator_id,) + (() if checker.tier is ProviderTier.CENTRALIZED else (checker.operator_id,))

    def _replay_referee(self, row: Task, checked: Task, meta: dict) -> RefereeReading:
        truth, start, replayed = self._replay_reading(meta, row.output_cid)
        if start is None:
            raise ValueError(f"referee {truth.reason}")
        checker_valid = False
        if meta["checker_ok"]:
            try:
                c_start, c_replayed = replay_result(self.artifacts.get_bytes(checked.output_cid), meta["to_step"])
                checker_valid = judge(c_replayed, start, replayed).agree
            except ValueError:
                pass
        return RefereeReading(truth.agree, checker_valid, f"referee replay: {truth.reason}; replica "
                                                          f"{'agrees' if checker_valid else 'contradicted'}")

    def _read_referee(self, row: Task, job: Job, primary: Task, meta: dict) -> VerificationUpdate:
        checked = self.store.get_task(meta["check_task"])
        first = self.store.get_provider(meta["primary_provider"])
        checker = self.store.get_provider(checked.provider_id)
        if meta["mode"] == "replay":
            reading = self._replay_referee(row, checked, meta)
        elif meta["mode"] == "embed":
            mapped = None
            if meta["checker_ok"] and checked.output_cid:
                try:
                    mapped = undisguise(self.artifacts.get_bytes(primary.input_cid),
                                        self.artifacts.get_bytes(checked.output_cid), meta["names"])
                except ValueError:  # the replica's records do not map back: it loses
                    mapped = None
            reading = read_embed_referee(self.artifacts.get_bytes(meta["primary_output"]), mapped,
                                         self.artifacts.get_bytes(row.output_cid))
        else:
            check_report = (self.artifacts.get_bytes(checked.output_cid)
                            if meta["checker_ok"] and checked.output_cid else b"")
            th = self.thresholds
            referee = self.store.get_provider(row.provider_id)
            if not any(p.verified_gpus for p in (first, checker, referee)):  # all float32 CPUs: a narrow tie band
                th = replace(th, tie_nats=th.tie_nats_fp32)
            reading = read_referee(meta, self.artifacts.get_bytes(row.input_cid),
                                   self.artifacts.get_bytes(row.output_cid),
                                   self.artifacts.get_bytes(checked.input_cid), check_report, th)
        states = [(row.task_id, TaskState.VERIFIED, reading.reason),
                  (checked.task_id, TaskState.VERIFIED if reading.checker_valid else TaskState.REJECTED,
                   f"referee: {reading.reason}")]
        current = primary.output_cid == meta["primary_output"] and primary.state is TaskState.SUBMITTED
        verdicts, requeue, slashes = [], [], []
        # The submitter's budget pays the referee; whoever it proves wrong pays that back from stake.
        losers = (not reading.primary_valid) + (not reading.checker_valid)
        share = -(-self.referee_cost(row) // losers) if losers else 0
        if reading.primary_valid:
            if current:
                verdicts.append((primary.task_id, f"verified by referee: {reading.reason}"))
        else:
            slashes.append(self.slash_for(first, primary, job, f"invalid result: {reading.reason}",
                                          output_cid=meta["primary_output"],
                                          signature=bytes.fromhex(meta.get("primary_signature", "")),
                                          dispute_cost=share))
            if current:
                requeue.append((primary.task_id, f"result rejected by referee: {reading.reason}"))
        if not reading.checker_valid:
            slashes.append(self.slash_for(checker, checked, job, f"invalid {checked.role.value}: {reading.reason}",
                                          output_cid=checked.output_cid, signature=checked.signature,
                                          dispute_cost=share))
        return VerificationUpdate(
            job.job_id, states=states, verdicts=verdicts, requeue=requeue, slashes=slashes,
            observations=[(first.provider_id, reading.primary_valid), (checker.provider_id, reading.checker_valid)],
            edges=[(p.provider_id, n) for p, n in ((first, reading.primary_edges), (checker, reading.checker_edges))
                   if n],
        )
