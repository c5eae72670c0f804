"""Typed coordinator settings: defaults here, overridden by env (GPUMESH_COORDINATOR_*) and flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from coordinator.fallback.skypilot import SkyPilotConfig
from coordinator.ratelimit import Limits
from coordinator.verification.policy import deterring_stake


def default_home() -> Path:
    return Path.home() / ".gpumesh"


class CoordinatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUMESH_COORDINATOR_", extra="forbid", env_nested_delimiter="__")

    listen: str = "127.0.0.1:50051"
    # TLS: the server's certificate chain and key (PEM); with a client CA, clients must present a
    # certificate it signed (mutual TLS). Unset: plaintext (loopback and tests).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    metrics_listen: str = ""  # host:port serving Prometheus /metrics ("" = off)
    # host:port serving the read-only web dashboard ("" = off). It shows every submitter's jobs:
    # keep it on loopback or behind an authenticating proxy.
    dashboard_listen: str = ""
    # host:port serving the OpenAI-compatible HTTP API (/v1/files, /v1/batches, /v1/models; "" = off).
    # Calls carry an API key bound to a wallet (gpumesh keys create): plain HTTP is for loopback
    # or behind a TLS-terminating proxy.
    openai_listen: str = ""
    max_batch_file_bytes: int = Field(512 * 1024**2, gt=0)  # an uploaded file (OpenAI allows 200 MB)
    max_batch_lines: int = Field(50_000, gt=0)  # requests per batch (OpenAI's limit)
    # What a batch escrows from its wallet's prepaid account (JobEscrow.openJob) when settling on-chain,
    # at most: less if the account, its on-chain spend limit or the key's cap leave less. Unspent, it returns.
    openai_batch_budget: int = Field(10**18, gt=0)
    # The training speed a fine-tuning quote assumes (tokens/s), until the market view measures it.
    finetune_quote_tokens_per_s: float = Field(500.0, gt=0)
    # Wallets that may register model names (AddModel) as they like; the operator's trusted wallets
    # may too. Any other wallet registers names under its own address only ("0xADDR/name"), so a
    # stranger cannot squat a well-known name with other weights.
    model_registrars: list[str] = Field(default_factory=list)
    # Submitters sign every SubmitterService call that names a job (EIP-191 over method, body digest,
    # nonce and timestamp; gpumesh.signing); a replayed nonce or a timestamp off by more than the skew
    # is refused. Off: unsigned calls are served too, and their jobs belong to nobody.
    require_signed_requests: bool = True
    # X25519 key that sealed inputs' data keys are wrapped to (default: data_dir/sealing.key, made on
    # first start). Replicas on one database must share it.
    sealing_key_file: Path | None = None
    request_max_skew_s: float = Field(300.0, gt=0)
    # Per-identity rate limits of every face (coordinator.ratelimit): gRPC per session token, else per
    # client host, answered with RESOURCE_EXHAUSTED and retry-after-ms; the OpenAI API per key and the
    # dashboard's public JSON per peer, with 429 and Retry-After. E.g.
    # GPUMESH_COORDINATOR_RATE_LIMITS__SUBMIT_PER_S=5, ..._RATE_LIMITS__OPENAI_PER_S=10; off: RATE_LIMIT=false.
    rate_limit: bool = True
    rate_limits: Limits = Field(default_factory=Limits)
    data_dir: Path = Field(default_factory=lambda: default_home() / "coordinator")
    # Where artifacts live: the embedded blockstore in data_dir, or an IPFS node's RPC API (Kubo,
    # e.g. http://127.0.0.1:5001), which replicas on one database can share.
    artifact_store: Literal["embedded", "kubo"] = "embedded"
    kubo_url: str = ""
    store: Literal["sqlite", "postgresql"] = "sqlite"  # postgresql: several replicas on one database
    postgres_dsn: str = ""  # libpq connection string, e.g. "host=db port=5432 dbname=gpumesh user=gpumesh"
    postgres_pool_size: int = Field(8, ge=1, le=256)
    replica_id: str = ""  # this replica's name in the presence table (default: random per process)
    leader_check_s: float = Field(1.0, gt=0)  # how often a replica campaigns for (or checks) the leadership
    lease_ttl_s: float = Field(30.0, gt=0)
    heartbeat_interval_s: float = Field(5.0, gt=0)
    challenge_ttl_s: float = Field(300.0, gt=0)
    session_ttl_s: float = Field(7 * 24 * 3600.0, gt=0)
    # Largest gRPC message either way; artifacts stream in 128 KiB chunks, so at least 256 KiB.
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=256 * 1024)
    max_artifact_bytes: int = Field(8 * 1024**3, gt=0)
    # Small artifacts ride in messages: a lease carries its task's inputs up to this size and the
    # result may carry the output (TaskLease.inline, TaskResult.output_data); 0: always fetch and
    # upload. Kept below a quarter of max_message_bytes. The coordinator holds the bytes of such
    # small artifacts in memory, at most artifact_cache_bytes in all (least recently used out).
    inline_artifact_bytes: int = Field(256 * 1024, ge=0, le=1024 * 1024)
    artifact_cache_bytes: int = Field(128 * 1024 * 1024, ge=0)
    max_prompts_per_job: int = Field(1_000_000, gt=0)
    max_prompt_bytes: int = Field(256 * 1024, gt=0)
    # Per submitter wallet: what it may store (its uploads, each CID once) and keep queued or running
    # (tasks of its unfinished jobs); over either, RESOURCE_EXHAUSTED. A fresh wallet costs nothing.
    max_stored_bytes_per_submitter: int = Field(32 * 1024**3, gt=0)
    max_open_tasks_per_submitter: int = Field(10_000, gt=0)
    schedule_batch: int = Field(1000, gt=0)
    # On-chain settlement: off unless a JSON-RPC endpoint and a deployment are given.
    chain_url: str = ""
    chain_key_file: Path | None = None  # hex key of the account holding COORDINATOR_ROLE
    deployment_file: Path | None = None  # JSON with the token, registry and escrow addresses
    settle_batch_size: int = Field(100, ge=1, le=500)
    settle_interval_s: float = Field(30.0, gt=0)
    # how long a batch waits for its providers' invoices (one signature per payee and batch); 0: never ask
    settle_invoice_timeout_s: float = Field(5.0, ge=0, le=60)
    min_escrow_window_s: float = Field(3600.0, ge=0)
    settle_margin_s: float = Field(600.0, ge=0)
    sweep_interval_s: float = Field(1.0, gt=0)
    # WatchJob streams wake on the job's change signals; without one they re-read it this often.
    watch_refresh_s: float = Field(10.0, gt=0)
    # Verification (coordinator.verifier): adaptive replication, sampled re-scoring audits,
    # referees on centralized providers, slashing through the ProviderRegistry.
    verify: bool = True
    replication_p_new: float = Field(0.1, ge=0, le=1)  # full audits check the rest
    replication_probation: int = Field(9, ge=0)
    replay_p_new: float = Field(1.0, ge=0, le=1)  # fine-tunes on probation (a segment replay is their only check)
    replication_p_floor: float = Field(0.02, ge=0, le=1)  # >= cost / (reward + stake), see policy.p_floor
    audit_rate: float = Field(1.0, ge=0, le=1)  # of results not replicated
    audit_records: int = Field(0, ge=0)  # 0: every record of the result (full coverage); k: a sample of k
    audit_decoys: int = Field(1, ge=0)
    # A replica/audit no independent provider takes this long goes to centralized capacity, or, where
    # the job allows unchecked results, is given up and its result paid unchecked_price_bps of its price.
    check_wait_s: float = Field(300.0, gt=0)
    unchecked_price_bps: int = Field(5000, ge=0, le=10_000)
    # Independence (coordinator.verification.independence): checks never go to a provider sharing
    # the checked one's operator, network (/24, /48) or stake funder. A local network of one host
    # (gpumesh localnet) turns the network key off; exchanges and faucets fund strangers alike.
    independent_networks: bool = True
    network_prefix_v4: int = Field(24, ge=8, le=32)
    network_prefix_v6: int = Field(48, ge=16, le=128)
    public_funders: tuple[str, ...] = ()
    # Hardware truth (gpumesh.hwclasses, coordinator.hwchecks): open-market providers answer a timed,
    # seeded matmul check per claimed device when their session opens and at random times after
    # (exponential, this mean); only verified GPUs are scheduled. Off: claims are trusted as given.
    hardware_checks: bool = True
    hardware_recheck_s: float = Field(6 * 3600.0, gt=0)
    hardware_target_s: float = Field(0.5, gt=0)  # a GPU check's duration at its class's nominal TFLOPS
    hardware_pass_fraction: float = Field(0.3, gt=0, le=1)  # of nominal TFLOPS, measured end to end
    hardware_slack_s: float = Field(1.0, ge=0)  # network allowance on each check's deadline
    reputation_half_life_s: float = Field(30 * 24 * 3600.0, gt=0)
    max_invalid_rate: float = Field(0.1, gt=0, le=1)  # above it (upper 95% bound) a provider gets no work
    slash_amount: int = Field(10**18, ge=0)  # stake taken per invalid result (at most what is staked)
    # Active stake an open-market provider needs to take work (settling coordinators), checked at
    # registration and after every slash: a provider slashed below it gets no more work. Unset:
    # derived from the floor check rate (``required_stake``); 0 lets identities take work for free.
    min_stake: int | None = Field(None, ge=0)
    # The task reward the floor check rate is sized for: a fresh identity then stakes more than
    # it expects to be paid before its first check (policy.deterring_stake). Tasks paying more are
    # checked more often (verifier.p_min). 0.02 GMT is ~10 minutes of a 120 GMT/hour provider.
    floor_task_reward: int = Field(2 * 10**16, ge=0)
    registry_max_slash_bps: int = Field(2500, ge=0, le=10_000)  # the registry's per-incident cap (as deployed)
    # Who receives a slash when the job has no submitter to compensate (never the coordinator's own
    # key: the registry refuses that); "" skips such slashes.
    slash_beneficiary: str = ""
    # Wallets that may register as tier centralized (the operator's own trusted nodes), besides
    # those trusted in the store (`gpumesh coordinator trust ADDRESS`, or launched by the fallback).
    centralized_addresses: tuple[str, ...] = ()
    # Fallback (coordinator.fallback): tasks the open market cannot serve in time go to centralized
    # providers; with a launcher, missing centralized capacity is provisioned on demand.
    fallback_launcher: Literal["none", "skypilot"] = "none"
    skypilot: SkyPilotConfig | None = None  # launcher skypilot (env GPUMESH_COORDINATOR_SKYPILOT__CLOUD=aws, ...)
    fallback_cooldown_s: float = Field(300.0, ge=0)  # after a failed launch, per requirements
    fallback_tasks_per_cluster: int = Field(8, ge=1)
    fallback_release_after_s: float = Field(600.0, ge=0)  # tear down a cluster no task has needed this long

    @property
    def required_stake(self) -> int:
        """``min_stake``, or the least stake that makes the floor check rate deter cheating on a
        task paying ``floor_task_reward`` and lets one slash collect ``slash_amount`` in full:
        ``ceil(max(R * (1 - p_floor) / p_floor, slash_amount) * 10000 / registry_max_slash_bps)``
        (4 GMT at the defaults: p_floor 0.02, R 0.02 GMT, slash 1 GMT, cap 25%)."""
        if self.min_stake is not None:
            return self.min_stake
        if self.replication_p_floor <= 0 or self.registry_max_slash_bps == 0:
            return 0  # no floor rate (or an unslashable registry): stake buys nothing
        per_incident = max(deterring_stake(self.replication_p_floor, self.floor_task_reward),
                           self.slash_amount)
        return -(-per_incident * 10_000 // self.registry_max_slash_bps)

    @property
    def fallback_trust_s(self) -> float:
        """How long a launched node's wallet may register as centralized (its cluster's lifetime)."""
        minutes = self.skypilot.max_runtime_minutes if self.skypilot is not None else 0
        return (minutes or 12 * 60) * 60 + 3600

    @property
    def inline_bytes(self) -> int:
        """The largest artifact a lease or result carries (a quarter of a message at most)."""
        return min(self.inline_artifact_bytes, self.max_message_bytes // 4)

    @property
    def sealing_key_path(self) -> Path:
        return self.sealing_key_file or self.data_dir / "sealing.key"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "coordinator.db"

    @property
    def blocks_dir(self) -> Path:
        return self.data_dir / "ipfs"
