"""The relational schema both SQL adapters share, and the row -> record mappers.

Written in the SQL SQLite and PostgreSQL both accept; ``coordinator.store.postgres`` maps the
few type names that differ (REAL, BLOB).
"""

from __future__ import annotations

import json
from functools import lru_cache

from coordinator.models import (
    GpuSpec,
    Job,
    JobState,
    ProviderRecord,
    ProviderTier,
    SettlementState,
    Task,
    TaskRole,
    TaskState,
)
from coordinator.store.base import Slash, SlashState
from coordinator.verification.hardware import DeviceCheck
from gpumesh.jobspec import JobSpec


def checks_json(checks) -> str | None:
    """Hardware checks as stored (None: never checked)."""
    return None if checks is None else json.dumps([c.as_dict() for c in checks])

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    spec_json TEXT NOT NULL,
    state TEXT NOT NULL,
    tasks_total INTEGER NOT NULL,
    prompts_total INTEGER NOT NULL,
    output_cid TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    deadline REAL,
    escrow_key TEXT UNIQUE,
    budget TEXT NOT NULL DEFAULT '0',  -- uint256 token amounts exceed SQLite's int64
    submitter TEXT NOT NULL DEFAULT '',
    settlement TEXT NOT NULL DEFAULT '',
    settle_tx TEXT NOT NULL DEFAULT '',
    settle_since REAL NOT NULL DEFAULT 0,
    pending_reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_settlement ON jobs(settlement, settle_since) WHERE settlement != '';
CREATE INDEX IF NOT EXISTS jobs_deadline ON jobs(deadline) WHERE deadline IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_recent ON jobs(created_at, job_id);  -- newest first, paged (dashboard)
CREATE INDEX IF NOT EXISTS jobs_state_recent ON jobs(state, created_at, job_id);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    input_cid TEXT NOT NULL,
    prompts INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    provider_id TEXT NOT NULL DEFAULT '',
    lease_id TEXT NOT NULL DEFAULT '',
    lease_expires_at REAL NOT NULL DEFAULT 0,
    output_cid TEXT NOT NULL DEFAULT '',
    signature BLOB NOT NULL DEFAULT x'',
    metrics_json TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    leased_at REAL NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL DEFAULT 0,
    price_per_hour TEXT NOT NULL DEFAULT '0',
    queued_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    role TEXT NOT NULL DEFAULT 'primary',
    verifies TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT 'inference',
    aux_cid TEXT NOT NULL DEFAULT '',
    exclude_json TEXT NOT NULL DEFAULT '[]',
    require_tier TEXT NOT NULL DEFAULT '',
    check_json TEXT NOT NULL DEFAULT '',
    verdict TEXT NOT NULL DEFAULT '',
    avoid_json TEXT NOT NULL DEFAULT '[]',  -- providers whose attempts failed: others go first
    final_by TEXT NOT NULL DEFAULT ''  -- who reported it bad for good, awaiting confirmation (coordinator.failures)
);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks(job_id, role, idx);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks(state, queued_at, idx);
CREATE INDEX IF NOT EXISTS tasks_lease ON tasks(state, lease_expires_at);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_lease_id ON tasks(lease_id) WHERE lease_id != '';
CREATE TABLE IF NOT EXISTS providers (
    provider_id TEXT PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    hardware_json TEXT NOT NULL,
    gpus_json TEXT NOT NULL,
    cpu_count INTEGER NOT NULL,
    memory_total_mb INTEGER NOT NULL,
    price_per_hour TEXT NOT NULL,
    tier TEXT NOT NULL,
    slots INTEGER NOT NULL,
    runtime TEXT NOT NULL,
    isolated INTEGER NOT NULL,
    cached_models_json TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    tasks_completed INTEGER NOT NULL DEFAULT 0,
    leases_abandoned INTEGER NOT NULL DEFAULT 0,
    operator TEXT NOT NULL DEFAULT '',
    consecutive_valid INTEGER NOT NULL DEFAULT 0,
    total_valid INTEGER NOT NULL DEFAULT 0,
    total_invalid INTEGER NOT NULL DEFAULT 0,
    rep_alpha REAL NOT NULL DEFAULT 1.0,
    rep_beta REAL NOT NULL DEFAULT 1.0,
    rep_updated_at REAL,
    slashed INTEGER NOT NULL DEFAULT 0,
    sealing_key TEXT NOT NULL DEFAULT '',  -- hex X25519 public key that input data keys are wrapped to
    network TEXT NOT NULL DEFAULT '',  -- the /24 or /48 it registered from
    funder TEXT NOT NULL DEFAULT '',  -- the address that funded its stake
    stake TEXT NOT NULL DEFAULT '',  -- collectable active stake last read ('' = not read)
    hardware_checks TEXT,  -- JSON: per device, claimed vs verified by timed checks (NULL = never checked)
    edge_records INTEGER NOT NULL DEFAULT 0  -- records that lost a referee's tie band to the other side
);
CREATE INDEX IF NOT EXISTS providers_address ON providers(lower(address));  -- a wallet's registrations
CREATE TABLE IF NOT EXISTS slashes (
    provider_id TEXT NOT NULL,
    task_id TEXT NOT NULL,  -- the result (or check) found invalid
    job_id TEXT NOT NULL,
    address TEXT NOT NULL,
    amount TEXT NOT NULL,
    beneficiary TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,  -- PENDING -> SENT -> DONE
    slashed_amount TEXT NOT NULL DEFAULT '0',
    tx TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    output_cid TEXT NOT NULL DEFAULT '',  -- the result found invalid, as the provider signed it
    signature TEXT NOT NULL DEFAULT '',  -- hex: its signature of result_text(task_id, output_cid)
    PRIMARY KEY (provider_id, task_id)
);
CREATE INDEX IF NOT EXISTS slashes_state ON slashes(state, created_at);
CREATE INDEX IF NOT EXISTS slashes_recent ON slashes(created_at);
CREATE TABLE IF NOT EXISTS claims (
    job_id TEXT NOT NULL,
    address TEXT NOT NULL,  -- lower-case provider address
    amount TEXT NOT NULL,  -- its largest signed running total for the job (token base units)
    signature TEXT NOT NULL,  -- hex EIP-712 Claim signature (gpumesh.chain.claims)
    PRIMARY KEY (job_id, address)
);
CREATE TABLE IF NOT EXISTS challenges (
    address TEXT NOT NULL,
    text TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (address, text)
);
CREATE TABLE IF NOT EXISTS presence (  -- which coordinator replica holds each connected provider
    provider_id TEXT PRIMARY KEY,
    replica_id TEXT NOT NULL,
    opened_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    cached_models_json TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS presence_replica ON presence(replica_id);
CREATE INDEX IF NOT EXISTS tasks_provider ON tasks(provider_id, state) WHERE provider_id != '';
CREATE TABLE IF NOT EXISTS trusted (  -- wallets allowed to register as the operator's centralized capacity
    address TEXT PRIMARY KEY,
    note TEXT NOT NULL DEFAULT '',
    expires_at REAL  -- NULL: until revoked
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL REFERENCES providers(provider_id),
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (  -- signed requests' nonces, kept while their timestamp is acceptable
    address TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (address, nonce)
);
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces(expires_at);
CREATE TABLE IF NOT EXISTS sealed_keys (  -- data keys of encrypted artifacts, wrapped to the coordinator
    cid TEXT PRIMARY KEY,
    wrapped TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS artifact_grants (  -- who may read a CID (coordinator.access)
    cid TEXT NOT NULL,
    principal TEXT NOT NULL,  -- a wallet address, lower-case ('' = the anonymous caller, unsigned mode)
    size INTEGER NOT NULL DEFAULT 0,
    uploaded INTEGER NOT NULL DEFAULT 0,  -- 1: the principal uploaded it (counted in its quota)
    created_at REAL NOT NULL,
    PRIMARY KEY (cid, principal)
);
CREATE INDEX IF NOT EXISTS artifact_grants_uploads ON artifact_grants(principal) WHERE uploaded = 1;
CREATE INDEX IF NOT EXISTS jobs_submitter ON jobs(submitter, state);
CREATE INDEX IF NOT EXISTS jobs_submitter_recent ON jobs(submitter, created_at, job_id);
CREATE TABLE IF NOT EXISTS api_keys (  -- HTTP API keys: only their SHA-256 is kept
    key_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    wallet TEXT NOT NULL,  -- the address whose escrow pays, as it signs ('' = anonymous, unsigned mode)
    name TEXT NOT NULL DEFAULT '',
    spend_cap TEXT NOT NULL DEFAULT '',  -- token base units, decimal; '' = no cap
    spent TEXT NOT NULL DEFAULT '0',
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS models (  -- served models by name
    name TEXT PRIMARY KEY,
    cid TEXT NOT NULL,
    format TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    min_memory_mb INTEGER NOT NULL DEFAULT 0,
    owned_by TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    base TEXT NOT NULL DEFAULT ''  -- format 'lora': the base model's CID
);
CREATE TABLE IF NOT EXISTS api_files (  -- OpenAI-style files: an artifact with a name and an owner
    file_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    cid TEXT NOT NULL,
    created_at REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS api_files_owner ON api_files(owner, created_at, file_id);
CREATE TABLE IF NOT EXISTS api_batches (  -- OpenAI-style batches: one job each
    batch_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    body_json TEXT NOT NULL,  -- what OpenAI's batch object needs that the job does not hold
    job_id TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS api_batches_owner ON api_batches(owner, created_at, batch_id);
CREATE TABLE IF NOT EXISTS api_finetunes (  -- OpenAI-style fine-tuning jobs: one job each
    ft_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    body_json TEXT NOT NULL,
    job_id TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS api_finetunes_owner ON api_finetunes(owner, created_at, ft_id);
CREATE TABLE IF NOT EXISTS job_events (  -- what happened to a job, in order (progress, checks, the end)
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    level TEXT NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    data_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (job_id, seq)
);
"""

TASK_COLS = (
    "task_id, job_id, idx, state, input_cid, prompts, attempts, provider_id, lease_id, "
    "lease_expires_at, output_cid, signature, metrics_json, error, updated_at, leased_at, submitted_at, price_per_hour, "
    "role, verifies, kind, aux_cid, exclude_json, require_tier, check_json, verdict, avoid_json, final_by"
)


JOB_COLS = (
    "job_id, spec_json, state, tasks_total, prompts_total, created_at, updated_at, output_cid, "
    "error, idempotency_key, escrow_key, budget, submitter, settlement, settle_tx, pending_reason"
)
DONE = tuple(s.value for s in TaskState if s.is_done())
OPEN = (TaskState.QUEUED.value, TaskState.LEASED.value)


def task_row(row: tuple) -> Task:
    return Task(
        task_id=row[0],
        job_id=row[1],
        index=row[2],
        state=TaskState(row[3]),
        input_cid=row[4],
        prompts=row[5],
        attempts=row[6],
        provider_id=row[7],
        lease_id=row[8],
        lease_expires_at=row[9],
        output_cid=row[10],
        signature=bytes(row[11]),
        metrics_json=row[12],
        error=row[13],
        updated_at=row[14],
        leased_at=row[15],
        submitted_at=row[16],
        price_per_hour=int(row[17]),
        role=TaskRole(row[18]),
        verifies=row[19],
        kind=row[20],
        aux_cid=row[21],
        exclude=tuple(json.loads(row[22])),
        require_tier=row[23],
        check_json=row[24],
        verdict=row[25],
        avoid=tuple(json.loads(row[26])),
        final_by=row[27],
    )


@lru_cache(maxsize=4096)  # a job's spec never changes (and JobSpec is frozen): parse each once
def _spec(text: str) -> JobSpec:
    return JobSpec.model_validate_json(text)


def job_row(row: tuple) -> Job:
    return Job(
        job_id=row[0],
        spec=_spec(row[1]),
        state=JobState(row[2]),
        tasks_total=row[3],
        prompts_total=row[4],
        created_at=row[5],
        updated_at=row[6],
        output_cid=row[7],
        error=row[8],
        idempotency_key=row[9] or "",
        escrow_key=row[10] or "",
        budget=int(row[11]),
        submitter=row[12],
        settlement=SettlementState(row[13]),
        settle_tx=row[14],
        pending_reason=row[15],
    )


def provider_row(row: tuple) -> ProviderRecord:
    return ProviderRecord(
        provider_id=row[0],
        address=row[1],
        name=row[2],
        hardware_json=row[3],
        gpus=tuple(GpuSpec(g["name"], g["memory_total_mb"]) for g in json.loads(row[4])),
        cpu_count=row[5],
        memory_total_mb=row[6],
        price_per_hour=int(row[7]),
        tier=ProviderTier(row[8]),
        slots=row[9],
        runtime=row[10],
        isolated=bool(row[11]),
        cached_models=tuple(json.loads(row[12])),
        registered_at=row[13],
        last_seen=row[14],
        tasks_completed=row[15],
        leases_abandoned=row[16],
        operator=row[17],
        consecutive_valid=row[18],
        total_valid=row[19],
        total_invalid=row[20],
        rep_alpha=row[21],
        rep_beta=row[22],
        rep_updated_at=row[23],
        slashed=row[24],
        sealing_key=row[25],
        network=row[26],
        funder=row[27],
        stake=int(row[28]) if row[28] != "" else None,
        hardware_checks=(tuple(DeviceCheck.from_dict(d) for d in json.loads(row[29])) if row[29] is not None
                         else None),
        edge_records=row[30],
    )


SLASH_COLS = ("provider_id, task_id, job_id, address, amount, beneficiary, reason, state, slashed_amount, tx, "
              "output_cid, signature")


def slash_row(r: tuple) -> Slash:
    return Slash(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], SlashState(r[7]), int(r[8]), r[9], r[10],
                 bytes.fromhex(r[11]))
