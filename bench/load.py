"""Sustained submit + complete load on a real coordinator over real gRPC sockets.

A real coordinator process (``gpumesh coordinator serve``; SQLite by default, or PostgreSQL;
embedded blockstore; verification on; rate limits off, as one host drives the whole fleet) on
loopback. Simulated providers run in worker processes (one per 100; one process drives 200 at
~0.12 cores and 10 jobs/s with the same latencies as four), each an asyncio client speaking the
real provider protocol on its own channel: a fresh wallet, a signed registration, one Session
stream, heartbeats, leases; each lease's input (and a check's aux input) is fetched and its CID
verified, an output is computed, uploaded to the ArtifactService and returned with a signed
result commitment, and kept until acknowledged (re-sent after a reconnect).

Outputs are deterministic (a hash of model CID and prompt stands in for greedy decoding: one
JSONL record per prompt with ``completion`` and ``completion_ids``), so verification stays on
with the coordinator's defaults: every result is re-executed by another provider (replica;
compared exactly) or re-scored (audit; a simulated teacher-forced report that accepts exactly
the records whose completion is the model's, so the planted decoys are caught). Check tasks
are part of the load, as they are in production.

Submitters use ``gpumesh.client.Client`` (signed requests) from worker processes: upload the
prompts, submit, watch until terminal. Open loop (Poisson arrivals at ``--rate`` jobs/s; latency
counted from each job's scheduled arrival, so a slow coordinator cannot hide behind a stalled
generator) or closed loop (``--concurrency`` N submitters). After ``--duration`` no new job is
sent and in-flight jobs get ``--drain`` seconds; the store is then read to count lost tasks
(those of accepted jobs that never completed) and the server-side queue wait.

Baseline, in the same run: the same offered load and job shape with ``--baseline-providers``
(10) on a fresh coordinator. The ratios say what a 20x larger fleet costs the coordinator
(200 sessions, their heartbeats, 200 candidates in every scheduling round) at equal work.

    python bench/load.py                                # 60 s, 200 providers, 10 jobs/s open loop
    python bench/load.py --duration 10 --providers 20   # quick mode
    python bench/load.py --concurrency 32               # closed loop
    python bench/load.py --store postgresql --postgres-dsn "host=127.0.0.1 port=5433 user=postgres"

Ramp (bench/loadramp.py): on one coordinator (or cluster) and fleet per configuration, the
offered load rises step by step (open loop, x``--ramp-factor`` every ``--step-duration`` s) until
a step's end-to-end p99 passes ``--ramp-p99`` (2 s), an error or a lost job appears, or
completions fall behind; the knee (the last step that passed) is printed for SQLite, PostgreSQL
with one replica and PostgreSQL with three (a throwaway server unless ``--postgres-dsn``), with
tasks/s and the coordinator's CPU per task, and the 3-replica / 1-replica ratio.

    python bench/load.py --ramp                                       # sqlite, pg1, pg3; 200 providers
    python bench/load.py --ramp --providers 40 --step-duration 5 --ramp-max 20   # quick
    python bench/load.py --ramp --configs pg1,pg3 --postgres-dsn "host=127.0.0.1 user=postgres"
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc import aio

from gpumesh.artifacts.cid import parse_cid
from gpumesh.artifacts.unixfs import FileImporter, cid_of_bytes
from gpumesh.client import Client
from gpumesh.errors import GpumeshError
from gpumesh.identity import Wallet, result_text
from gpumesh.jobspec import JobSpec
from gpumesh.localnet import LocalNetwork, free_port
from gpumesh.rpc import CHANNEL_OPTIONS
from gpumesh.sealing import SealingKey
from gpumesh.signing import ARTIFACTS, STREAM_BODY, sign_registration, sign_request
from gpumesh.v1 import artifacts_pb2, artifacts_pb2_grpc, common_pb2, provider_pb2, provider_pb2_grpc

import pyspy  # bench/pyspy.py (bench/ is on sys.path when this runs as a script)


@dataclass(frozen=True)
class LoadConfig:
    duration: float = 60.0
    providers: int = 200
    rate: float = 10.0  # jobs/s offered (open loop); ignored with concurrency
    concurrency: int = 0  # > 0: closed loop with this many submitters
    prompts: int = 4  # per job
    shard_size: int = 2  # prompts per task
    slots: int = 2  # per provider
    work_ms: float = 20.0  # simulated run time per prompt
    drain: float = 60.0
    provider_procs: int = 0  # 0: one per 100 providers
    submit_procs: int = 1
    store: str = "sqlite"
    postgres_dsn: str = ""
    lease_ttl: float = 30.0
    heartbeat: float = 5.0
    seed: int = 1
    profile: str = ""  # a directory: sample the coordinator with py-spy while sending
    inline_bytes: int = -1  # the coordinator's inline_artifact_bytes (0: every input fetched, every output uploaded)

    @property
    def mode(self) -> str:
        return f"closed loop, {self.concurrency} submitters" if self.concurrency else f"open loop, {self.rate:g} jobs/s"


# ---- deterministic simulated workloads ---------------------------------------------------------


def completion(model_cid: str, prompt: str) -> tuple[list[int], str]:
    """The simulated model's greedy completion of ``prompt``: token ids and their text."""
    h = hashlib.sha256(f"{model_cid}\n{prompt}".encode()).digest()
    ids = [int.from_bytes(h[i:i + 2], "big") % 32_000 for i in range(0, 16, 2)]
    return ids, decode(ids)


def decode(ids: list[int]) -> str:
    return " ".join(f"t{i}" for i in ids)


def jsonl_records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def inference_output(model_cid: str, data: bytes) -> bytes:
    out = []
    for rec in jsonl_records(data):
        ids, text = completion(model_cid, rec["prompt"])
        out.append({"id": rec.get("id"), "prompt": rec["prompt"], "completion": text, "completion_ids": ids,
                    "prompt_tokens": len(rec["prompt"].split()), "completion_tokens": len(ids)})
    return jsonl(out)


def rescore_report(model_cid: str, claims: bytes, prompts: bytes) -> bytes:
    """What teacher-forced re-scoring reports for a deterministic model: a claimed completion is
    greedy-consistent iff it is the model's own; anything else ranks far outside the top-k."""
    out, claimed, jobs = [], jsonl_records(claims), jsonl_records(prompts)
    for claim, job in zip(claimed, jobs + [{}] * (len(claimed) - len(jobs))):
        ids = list(claim.get("completion_ids") or [])
        honest = ids == completion(model_cid, claim["prompt"])[0]
        n = len(ids)
        out.append({
            "id": claim.get("id"), "n_tokens": n, "n_scored": n, "top_k": 5, "n_outside_topk": 0 if honest else n,
            "n_not_greedy": 0 if honest else n, "greedy_consistent": honest, "max_gap": 0.0 if honest else 12.0,
            "mean_logprob": -0.1 if honest else -14.0, "end": "eos", "ended_properly": True,
            "text_matches_ids": claim.get("completion") == decode(ids), "ids_in_vocab": all(i < 32_000 for i in ids),
            "counts_match": claim.get("completion_tokens") in (None, n),
            "prompt_matches": (claim.get("id"), claim.get("prompt")) == (job.get("id"), job.get("prompt")),
            "temperature": 0.0, "ranks": [0 if honest else 9] * n,
        })
    return jsonl(out)


# ---- simulated providers -----------------------------------------------------------------------


@dataclass
class ProviderStats:
    errors: Counter = field(default_factory=Counter)  # "where: CODE"
    details: dict = field(default_factory=dict)  # the first detail of each error
    leases: Counter = field(default_factory=Counter)  # by kind
    acks: Counter = field(default_factory=Counter)  # accepted / refused
    lease_to_ack: list[float] = field(default_factory=list)
    refusals: Counter = field(default_factory=Counter)
    cancels: Counter = field(default_factory=Counter)  # CancelLease received, by whether it ran
    inline_inputs: int = 0  # inputs that came with their lease (not fetched)


def detail_of(exc: BaseException) -> str:
    for e in (exc, exc.__cause__):
        if isinstance(e, grpc.RpcError) and hasattr(e, "details"):
            return (e.details() or "")[:200]
    return str(exc)[:200]


def code_of(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code().name
    cause = exc.__cause__
    if isinstance(cause, grpc.RpcError) and hasattr(cause, "code"):
        return cause.code().name
    return type(exc).__name__


GET, PUT = ARTIFACTS + "Get", ARTIFACTS + "Put"


class SimProvider:
    """One provider: its own channel, wallet and Session stream; reconnects like the daemon."""

    def __init__(self, target: str, slots: int, work_s: float, stats: ProviderStats) -> None:
        self.target, self.slots, self.work_s, self.stats = target, slots, work_s, stats
        self.wallet = Wallet.generate()
        self.address = self.wallet.address
        self.token = ""
        self.models: set[str] = set()
        self.running: dict[str, asyncio.Task] = {}  # lease id -> task
        self.unacked: dict[str, tuple[float, provider_pb2.ProviderMessage]] = {}  # task id -> (leased at, msg)
        self.outbox: asyncio.Queue | None = None
        self.heartbeat_s = 5.0

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        async with aio.insecure_channel(self.target, options=CHANNEL_OPTIONS) as channel:
            self.stub = provider_pb2_grpc.ProviderServiceStub(channel)
            self.blobs = artifacts_pb2_grpc.ArtifactServiceStub(channel)
            while not stop.is_set():
                try:
                    if not self.token:
                        await self._register()
                    await self._session(stop)
                    backoff = 0.5
                except (grpc.RpcError, GpumeshError, OSError) as exc:
                    code = code_of(exc)
                    self.stats.errors[f"provider session: {code}"] += 1
                    self.stats.details.setdefault(f"provider session: {code}", detail_of(exc))
                    if code == "UNAUTHENTICATED":
                        self.token = ""
                if not stop.is_set():
                    await asyncio.sleep(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, 10.0)

    async def _register(self) -> None:
        ch = await self.stub.GetChallenge(provider_pb2.GetChallengeRequest(address=self.address), timeout=30)
        req = provider_pb2.RegisterRequest(
            address=self.address, challenge=ch.challenge, name=f"sim-{self.address[2:8].lower()}",
            hardware=common_pb2.Hardware(cpu_count=8, memory_total_mb=32_000, platform="sim"),
            price_per_hour="100", tier=common_pb2.PROVIDER_TIER_OPEN, slots=self.slots, runtime="sim",
            sealing_public_key=SealingKey.derive(self.wallet.private_key).public_bytes)
        resp = await self.stub.Register(sign_registration(self.wallet, req), timeout=30)
        self.token = resp.session_token
        self.heartbeat_s = resp.heartbeat_interval_s or 5

    async def _session(self, stop: asyncio.Event) -> None:
        call = self.stub.Session(metadata=(("authorization", f"Bearer {self.token}"),))
        self.outbox = outbox = asyncio.Queue()
        for _, msg in self.unacked.values():  # results the last session did not confirm
            outbox.put_nowait(msg)
        helpers = [asyncio.create_task(self._write(call, outbox)), asyncio.create_task(self._heartbeats(outbox)),
                   asyncio.create_task(self._read(call))]
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*helpers, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()
            if not stop.is_set():
                raise aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None, "session closed by coordinator")
        finally:
            self.outbox = None
            for task in (*helpers, stopper, *self.running.values()):
                task.cancel()
            call.cancel()
            await asyncio.gather(*helpers, stopper, *self.running.values(), return_exceptions=True)
            self.running.clear()

    async def _write(self, call, outbox: asyncio.Queue) -> None:
        while True:
            await call.write(await outbox.get())

    async def _heartbeats(self, outbox: asyncio.Queue) -> None:
        await asyncio.sleep(self.heartbeat_s * random.random())  # a fleet does not beat in step
        while True:
            outbox.put_nowait(self._heartbeat())
            await asyncio.sleep(self.heartbeat_s)

    def _heartbeat(self) -> provider_pb2.ProviderMessage:
        leases = set(self.running) | {m.result.lease_id for _, m in self.unacked.values()}
        return provider_pb2.ProviderMessage(heartbeat=provider_pb2.Heartbeat(
            lease_ids=sorted(leases), free_slots=max(0, self.slots - len(self.running)),
            cached_model_cids=sorted(self.models)))

    async def _read(self, call) -> None:
        while (msg := await call.read()) is not aio.EOF:
            kind = msg.WhichOneof("body")
            if kind == "lease" and msg.lease.lease_id not in self.running:
                self.stats.leases[msg.lease.kind or "inference"] += 1
                self.running[msg.lease.lease_id] = asyncio.create_task(self._lease(msg.lease, time.monotonic()))
            elif kind == "cancel":
                task = self.running.pop(msg.cancel.lease_id, None)
                self.stats.cancels[f"{'running' if task else 'not running'}: {msg.cancel.reason[:80]}"] += 1
                if task is not None:
                    task.cancel()
            elif kind == "ack":
                leased_at, _ = self.unacked.pop(msg.ack.task_id, (None, None))
                self.stats.acks["accepted" if msg.ack.accepted else "refused"] += 1
                if not msg.ack.accepted:
                    self.stats.refusals[msg.ack.reason[:120]] += 1
                elif leased_at is not None:
                    self.stats.lease_to_ack.append(time.monotonic() - leased_at)

    async def _get(self, cid: str) -> bytes:
        importer, parts = FileImporter(lambda _c, _d: None), []
        req = artifacts_pb2.GetRequest(cid=cid)  # signed: the coordinator lets a lease's provider read its inputs
        async for chunk in self.blobs.Get(req, timeout=60, metadata=sign_request(self.wallet, GET, req)):
            importer.update(chunk.data)
            parts.append(chunk.data)
        if str(importer.finish()) != str(parse_cid(cid)):
            raise GpumeshError(f"fetched bytes do not hash to {cid}")
        return b"".join(parts)

    async def _input(self, lease: provider_pb2.TaskLease, cid: str) -> bytes:
        """An input the lease carries (once it hashes to its CID, as the daemon checks), else fetched."""
        for item in lease.inline:
            if item.cid == cid and cid_of_bytes(item.data) == str(parse_cid(cid)):
                self.stats.inline_inputs += 1
                return item.data
        return await self._get(cid)

    async def _lease(self, lease: provider_pb2.TaskLease, leased_at: float) -> None:
        try:
            if lease.model_cid not in self.models:  # a model cache: fetched once per provider
                await self._get(lease.model_cid)
                self.models.add(lease.model_cid)
            data = await self._input(lease, lease.input_cid)
            if lease.kind == "rescore":
                prompts = await self._input(lease, lease.aux_cid) if lease.aux_cid else b""
                output = rescore_report(lease.model_cid, data, prompts)
            else:
                output = inference_output(lease.model_cid, data)
            await asyncio.sleep(self.work_s * len(jsonl_records(data)))
            inline = b""
            if 0 < len(output) <= lease.inline_output_bytes:  # the result carries it: no upload
                cid, inline = cid_of_bytes(output), output
            else:
                cid = (await self.blobs.Put(iter([artifacts_pb2.PutChunk(data=output)]), timeout=60,
                                            metadata=sign_request(self.wallet, PUT, STREAM_BODY))).cid
            msg = provider_pb2.ProviderMessage(result=provider_pb2.TaskResult(
                lease_id=lease.lease_id, task_id=lease.task_id, output_cid=cid, output_data=inline,
                signature=self.wallet.sign_text(result_text(lease.task_id, cid)),
                metrics_json=json.dumps({"engine": "sim", "prompts": len(output.splitlines())})))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a real provider reports the failure; so does this one
            self.stats.errors[f"provider lease: {code_of(exc)}"] += 1
            self.stats.details.setdefault(f"provider lease: {code_of(exc)}", detail_of(exc))
            msg = provider_pb2.ProviderMessage(failure=provider_pb2.TaskFailure(
                lease_id=lease.lease_id, task_id=lease.task_id, error=str(exc)[:500], retryable=True))
        self.running.pop(lease.lease_id, None)
        if msg.WhichOneof("body") == "result":
            self.unacked[lease.task_id] = (leased_at, msg)
        if self.outbox is not None:
            self.outbox.put_nowait(msg)
            self.outbox.put_nowait(self._heartbeat())  # the free slot, now


def plain(stats) -> dict:
    """A stats dataclass as a dict to send back (``asdict`` would turn Counters into nonsense)."""
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(stats).items()}


def _orphaned(parent: int) -> bool:
    return os.getppid() != parent


def _worker_signals() -> None:
    """Ctrl-C reaches the whole process group: the parent alone decides how workers stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def provider_worker(target: str, n: int, cfg: LoadConfig, stop, out, parent: int) -> None:
    """A process running ``n`` simulated providers until ``stop`` (or its parent dies); ``target``
    may name several coordinators, comma-separated: the providers are spread round-robin. Each
    time its error count grows it sends the counts so far, with the time (``provider errors``)."""
    _worker_signals()
    stats = ProviderStats()
    targets = target.split(",")

    async def main() -> None:
        halt = asyncio.Event()
        sims = [SimProvider(targets[i % len(targets)], cfg.slots, cfg.work_ms / 1000, stats) for i in range(n)]
        tasks = []
        for sim in sims:  # a fleet comes up over a moment, not in one instant
            tasks.append(asyncio.create_task(sim.run(halt)))
            await asyncio.sleep(0.005)
        reported = 0
        while not stop.is_set() and not _orphaned(parent):
            await asyncio.sleep(0.1)
            if (errors := sum(stats.errors.values())) != reported:
                reported = errors
                out.put(("provider errors", (os.getpid(), time.time(), dict(stats.errors))))
        halt.set()
        await asyncio.wait(tasks, timeout=10)

    asyncio.run(main())
    out.put(("providers", plain(stats)))


# ---- submitters --------------------------------------------------------------------------------


@dataclass
class SubmitStats:
    wallet_key: str = ""
    upload_s: list[float] = field(default_factory=list)
    submit_s: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)  # start behind schedule (open loop)
    e2e_s: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # wall time each job completed (server clock)
    states: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # "rpc: CODE"
    details: dict = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)


def run_job(client: Client, cfg: LoadConfig, model_cid: str, rng: random.Random, stats: SubmitStats,
            lock: threading.Lock, scheduled: float, drain_end: float) -> None:
    """One job arriving at ``scheduled``: upload its prompts, submit, watch until terminal (at
    most until ``drain_end``); its figures go into ``stats``."""
    began = time.time()
    prompts = [f"job {uuid.uuid4().hex[:12]} prompt {i}: tell me about load number {rng.random():.6f}"
               for i in range(cfg.prompts)]
    where = "ArtifactService.Put"
    try:
        cid = client.upload(jsonl([{"prompt": p} for p in prompts]))
        uploaded = time.time()
        where = "SubmitJob"
        handle = client.submit(JobSpec(name="load", model_cid=model_cid, input_cid=cid, shard_size=cfg.shard_size))
        submitted = time.time()
        with lock:
            stats.job_ids.append(handle.id)
            stats.upload_s.append(uploaded - began)
            stats.submit_s.append(submitted - uploaded)
            stats.lag_s.append(began - scheduled)
        where = "WatchJob"
        status = None
        for status in client.watch(handle.id, timeout=max(1.0, drain_end - time.time()), reconnect_for=30):
            pass
        finished = status.raw.updated_at.ToMicroseconds() / 1e6
        with lock:
            stats.states[status.state] += 1
            if status.state == "COMPLETED":
                stats.e2e_s.append(finished - scheduled)
                stats.done_at.append(finished)
    except TimeoutError:
        with lock:
            stats.states["unfinished after drain"] += 1
    except (GpumeshError, grpc.RpcError) as exc:
        with lock:
            stats.errors[f"{where}: {code_of(exc)}"] += 1
            stats.details.setdefault(f"{where}: {code_of(exc)}", detail_of(exc))


def submitter_worker(target: str, cfg: LoadConfig, model: bytes, start: float, index: int,
                     stop, out, parent: int) -> None:
    """A process sending jobs from ``start`` for ``cfg.duration`` s (or until ``stop``); waits
    ``cfg.drain`` s for them to finish. It uploads ``model`` first: a wallet submits jobs only on
    artifacts it may read."""
    _worker_signals()
    stats, lock = SubmitStats(), threading.Lock()
    wallet = Wallet.generate()
    stats.wallet_key = wallet.private_key.hex()
    end, drain_end = start + cfg.duration, start + cfg.duration + cfg.drain
    client = Client.connect(target, wallet=wallet, timeout=60)
    model_cid = client.upload(model)
    rng = random.Random(cfg.seed * 1000 + index)

    def one_job(scheduled: float) -> None:
        run_job(client, cfg, model_cid, rng, stats, lock, scheduled, drain_end)

    workers = max(8, cfg.concurrency or int(cfg.rate / cfg.submit_procs * 30) + 8)
    with ThreadPoolExecutor(workers, thread_name_prefix="submit") as pool:
        while time.time() < start:
            time.sleep(0.01)
        if cfg.concurrency:
            def loop() -> None:
                while time.time() < end and not stop.is_set() and not _orphaned(parent):
                    one_job(time.time())

            for _ in range(cfg.concurrency // cfg.submit_procs + (index < cfg.concurrency % cfg.submit_procs)):
                pool.submit(loop)
        else:
            at = start
            while (at := at + rng.expovariate(cfg.rate / cfg.submit_procs)) < end and not stop.is_set() \
                    and not _orphaned(parent):
                time.sleep(max(0.0, at - time.time()))
                pool.submit(one_job, at)
    client.close()
    out.put(("submitter", plain(stats)))


# ---- one phase: coordinator, fleet, submitters, drain, store scan -----------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    idle = ticks[3] + ticks[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def scrape(url: str) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def connect_store(cfg: LoadConfig, db_path: Path):
    """A read connection to the phase's store and its parameter mark."""
    if cfg.store == "postgresql":
        import psycopg

        return psycopg.connect(cfg.postgres_dsn), "%s"
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True), "?"


def scan_store(cfg: LoadConfig, db_path: Path, job_ids: list[str]) -> dict:
    """Jobs and tasks of this phase as the store has them (read after the coordinator stopped)."""
    conn, mark = connect_store(cfg, db_path)
    jobs, tasks, waits, runs, results = Counter(), Counter(), [], [], []
    try:
        for i in range(0, len(job_ids), 500):
            ids = job_ids[i:i + 500]
            marks = ",".join([mark] * len(ids))
            for (state,) in conn.execute(f"SELECT state FROM jobs WHERE job_id IN ({marks})", ids).fetchall():
                jobs[state] += 1
            rows = conn.execute(
                f"SELECT t.role, t.state, j.state, t.queued_at, t.leased_at, t.submitted_at FROM tasks t "
                f"JOIN jobs j ON j.job_id = t.job_id WHERE t.job_id IN ({marks})", ids).fetchall()
            for role, state, job_state, queued, leased, submitted in rows:
                tasks[(role, state, job_state)] += 1
                if submitted:
                    results.append((role, submitted))
                if role == "primary" and leased and submitted:
                    waits.append(leased - queued)
                    runs.append(submitted - leased)
    finally:
        conn.close()
    return {"jobs": jobs, "tasks": tasks, "missing_jobs": len(job_ids) - sum(jobs.values()),
            "queue_wait": waits, "lease_to_submit": runs, "results": results}  # results: (role, stored at)


@dataclass
class Fleet:
    """The worker processes of one phase and the queue their figures come back on."""

    ctx: object
    stop: object
    results: object
    sims: list = field(default_factory=list)
    subs: list = field(default_factory=list)
    got: list = field(default_factory=list)  # (kind, stats)

    def start(self, target, *args) -> None:
        p = self.ctx.Process(target=target, args=(*args, self.stop, self.results, os.getpid()), daemon=True)
        p.start()
        (self.sims if target is provider_worker else self.subs).append(p)

    def collect(self, kind: str, want: int, until: float) -> None:
        while sum(1 for k, _ in self.got if k == kind) < want and time.time() < until:
            try:
                self.got.append(self.results.get(timeout=1))
            except queue.Empty:
                if not any(p.is_alive() for p in (self.subs if kind == "submitter" else self.sims)):
                    break

    def stats(self, kind: str) -> list[dict]:
        return [s for k, s in self.got if k == kind]

    def close(self) -> None:
        self.stop.set()
        for p in (*self.subs, *self.sims):
            p.join(timeout=15)
            if p.is_alive():  # ours, by its handle: nothing else is signalled
                p.terminate()
                p.join(timeout=5)


def coordinator_env(cfg: LoadConfig, metrics_at: str) -> dict[str, str]:
    """The coordinator settings every phase runs with."""
    env = {"GPUMESH_COORDINATOR_RATE_LIMIT": "false",  # one host drives the whole fleet
           # the simulated fleet has no devices to time: claims are trusted (a check is per session, not per task)
           "GPUMESH_COORDINATOR_HARDWARE_CHECKS": "false",
           "GPUMESH_COORDINATOR_METRICS_LISTEN": metrics_at}
    if cfg.inline_bytes >= 0:  # else the coordinator's default
        env["GPUMESH_COORDINATOR_INLINE_ARTIFACT_BYTES"] = str(cfg.inline_bytes)
    if cfg.store == "postgresql":
        env |= {"GPUMESH_COORDINATOR_STORE": "postgresql", "GPUMESH_COORDINATOR_POSTGRES_DSN": cfg.postgres_dsn}
    return env


def run_phase(label: str, cfg: LoadConfig, root: Path) -> dict:
    """One coordinator, its fleet and submitters for ``cfg.duration`` s plus the drain; the
    figures, the store's view after the coordinator stopped, and its log."""
    ctx = mp.get_context("spawn")  # no forked gRPC state in the workers
    metrics_at = f"127.0.0.1:{free_port()}"
    env = coordinator_env(cfg, metrics_at)
    fleet = Fleet(ctx, ctx.Event(), ctx.Queue())
    nprocs = cfg.provider_procs or max(1, -(-cfg.providers // 100))
    with LocalNetwork(root, lease_ttl_s=cfg.lease_ttl, heartbeat_interval_s=cfg.heartbeat) as net:
        try:
            coord = net.start_coordinator(env)
            with Client.connect(net.target) as client:
                model = b"simulated model weights " + uuid.uuid4().bytes
                client.upload(model)
                for i in range(nprocs):
                    fleet.start(provider_worker, net.target, cfg.providers // nprocs + (i < cfg.providers % nprocs), cfg)
                deadline = time.monotonic() + 120
                while (n := len(client.list_providers(connected_only=True))) < cfg.providers:
                    if time.monotonic() > deadline or not coord.alive:
                        raise RuntimeError(f"only {n} of {cfg.providers} providers connected\n{coord.log_tail()}")
                    time.sleep(0.2)
            start = time.time() + 2.0
            for i in range(cfg.submit_procs):
                fleet.start(submitter_worker, net.target, cfg, model, start, i)

            def sample() -> list[float]:
                return [cpu_seconds(coord.popen.pid), sum(cpu_seconds(p.pid) for p in fleet.sims),
                        sum(cpu_seconds(p.pid) for p in fleet.subs), *machine_busy()]

            time.sleep(max(0.0, start - time.time()))
            spy = pyspy.record(coord.popen.pid, cfg.duration, Path(cfg.profile) / f"{label}.txt") if cfg.profile else None
            before = sample()
            time.sleep(max(0.0, start + cfg.duration - time.time()))  # CPU over the sending window
            used = [b - a for a, b in zip(before, sample())]
            cpu = [u / cfg.duration for u in used[:3]]
            machine = used[3] / used[4] * os.cpu_count() if used[4] else float("nan")
            if spy is not None:
                spy.wait(timeout=60)
            fleet.collect("submitter", cfg.submit_procs, start + cfg.duration + cfg.drain + 60)
            metrics, alive = scrape(f"http://{metrics_at}/metrics"), coord.alive
            fleet.stop.set()
            fleet.collect("providers", nprocs, time.time() + 30)
        finally:
            fleet.close()
            net.stop()
        log_text = (root / "coordinator.log").read_text(errors="replace")
    subs, provs = fleet.stats("submitter"), fleet.stats("providers")
    scan = scan_store(cfg, root / "coordinator" / "coordinator.db", [j for s in subs for j in s["job_ids"]])
    return {"label": label, "cfg": cfg, "start": start, "subs": subs, "provs": provs, "scan": scan,
            "cpu": cpu[0], "sim_cpu": cpu[1], "sub_cpu": cpu[2], "machine": machine, "metrics": metrics,
            "alive": alive, "log": log_text, "lost_submitters": cfg.submit_procs - len(subs),
            "lost_provider_procs": nprocs - len(provs)}


# ---- report ------------------------------------------------------------------------------------


def summarize(r: dict) -> dict:
    cfg, subs, provs, scan = r["cfg"], r["subs"], r["provs"], r["scan"]
    merged = lambda key: [v for s in subs for v in s[key]]  # noqa: E731
    # Completions inside the sending window: the sustained rate, not the drain's tail.
    window = [t for t in merged("done_at") if r["start"] <= t <= r["start"] + cfg.duration]
    jobs_per_s = len(window) / cfg.duration
    tasks_per_job = -(-cfg.prompts // cfg.shard_size)
    checks = sum(n for (role, state, _), n in scan["tasks"].items() if role != "primary" and state == "VERIFIED")
    completed_jobs = sum(s["states"].get("COMPLETED", 0) for s in subs)
    errors, details = Counter(), {}
    for s in (*subs, *provs):
        errors.update(s["errors"])
        details = {**s["details"], **details}
    lost = sum(n for (role, state, job_state), n in scan["tasks"].items()
               if role == "primary" and job_state != "COMPLETED")
    stuck = sum(n for (role, state, job_state), n in scan["tasks"].items()
                if state in ("QUEUED", "LEASED", "SUBMITTED") and job_state not in ("COMPLETED", "FAILED", "CANCELLED"))
    m = r["metrics"]
    rounds = m.get("gpumesh_schedule_round_seconds_count", 0)
    return {
        "submitted": sum(len(s["job_ids"]) for s in subs), "completed": completed_jobs,
        "states": sum((Counter(s["states"]) for s in subs), Counter()),
        "jobs_per_s": jobs_per_s, "tasks_per_s": jobs_per_s * tasks_per_job,
        "checks_per_job": checks / max(1, scan["jobs"].get("COMPLETED", 0)),
        "upload": merged("upload_s"), "submit": merged("submit_s"), "lag": merged("lag_s"), "e2e": merged("e2e_s"),
        "lease_to_ack": [v for p in provs for v in p["lease_to_ack"]],
        "queue_wait": scan["queue_wait"], "lease_to_submit": scan["lease_to_submit"],
        "leases": sum((Counter(p["leases"]) for p in provs), Counter()),
        "acks": sum((Counter(p["acks"]) for p in provs), Counter()),
        "refusals": sum((Counter(p["refusals"]) for p in provs), Counter()),
        "cancels": sum((Counter(p["cancels"]) for p in provs), Counter()),
        "inline_inputs": sum(p.get("inline_inputs", 0) for p in provs),
        "errors": errors, "details": details, "lost": lost, "stuck": stuck, "missing_jobs": scan["missing_jobs"],
        "round_ms": 1000 * m.get("gpumesh_schedule_round_seconds_sum", 0) / rounds if rounds else float("nan"),
        "rounds": rounds, "cpu": r["cpu"], "sim_cpu": r["sim_cpu"], "sub_cpu": r["sub_cpu"], "machine": r["machine"],
    }


def ms(values: list[float], q: float) -> str:
    return f"{1000 * pct(values, q):.0f}"


def print_phase(r: dict, s: dict) -> None:
    cfg = r["cfg"]
    print(f"\n== {r['label']}: {cfg.providers} providers x {cfg.slots} slots, {cfg.duration:g}s, {cfg.mode}, "
          f"{cfg.prompts} prompts/job in {-(-cfg.prompts // cfg.shard_size)} tasks, {cfg.work_ms:g} ms/prompt, "
          f"store {cfg.store}")
    print(f"jobs: {s['submitted']} accepted ({s['submitted'] / cfg.duration:.2f}/s offered), {s['completed']} "
          f"completed; final states {dict(s['states'])}")
    checks = s["jobs_per_s"] * s["checks_per_job"]
    print(f"throughput (completed within the sending window): {s['jobs_per_s']:.2f} jobs/s, "
          f"{s['tasks_per_s']:.2f} primary tasks/s + {checks:.2f} verification tasks/s "
          f"= {s['tasks_per_s'] + checks:.2f} tasks/s")
    print(f"{'latency, ms':<42}{'p50':>8}{'p99':>8}{'n':>8}")
    for name, key in (("upload prompts (Put)", "upload"), ("submit (SubmitJob)", "submit"),
                      ("end-to-end (scheduled arrival -> COMPLETED)", "e2e"),
                      ("lease -> result ack (at the provider)", "lease_to_ack"),
                      ("task queued -> leased (store)", "queue_wait"),
                      ("task leased -> result stored (store)", "lease_to_submit"),
                      ("generator lag behind schedule", "lag")):
        print(f"{name:<42}{ms(s[key], .5):>8}{ms(s[key], .99):>8}{len(s[key]):>8}")
    print(f"leases by kind {dict(s['leases'])}; result acks {dict(s['acks'])}; "
          f"inputs that came with their lease {s['inline_inputs']}")
    for reason, n in s["refusals"].most_common(5):
        print(f"  refused x{n}: {reason}")
    print(f"CancelLease received: {dict(s['cancels']) or 'none'}")
    print(f"errors by status code: {dict(s['errors']) or 'none'}")
    for key, detail in s["details"].items():
        print(f"  {key}: first detail: {detail}")
    print(f"lost tasks (primary tasks of accepted jobs not COMPLETED after a {cfg.drain:g}s drain): {s['lost']} "
          f"({s['stuck']} still queued/leased/submitted; accepted jobs missing from the store: {s['missing_jobs']})")
    print(f"coordinator: {s['rounds']:.0f} scheduling rounds of {s['round_ms']:.2f} ms "
          f"mean; alive at the end: {r['alive']}")
    print(f"CPU while sending (cores): coordinator {s['cpu']:.2f}, simulated providers {s['sim_cpu']:.2f}, "
          f"submitters {s['sub_cpu']:.2f}; whole machine {s['machine']:.2f} of {os.cpu_count()} (other processes "
          f"{s['machine'] - s['cpu'] - s['sim_cpu'] - s['sub_cpu']:.2f})")
    bad = [line for line in r["log"].splitlines() if " ERROR " in line or "Traceback" in line]
    if bad or not r["alive"] or r["lost_submitters"] or r["lost_provider_procs"]:
        print(f"coordinator log: {len(bad)} ERROR lines; first: {bad[:5]}; "
              f"workers without results: {r['lost_submitters']} submitters, {r['lost_provider_procs']} provider procs")


def print_ratios(base: dict, main: dict, bcfg: LoadConfig, cfg: LoadConfig) -> None:
    def ratio(key: str, q: float) -> str:
        b = pct(base[key], q)
        return f"{pct(main[key], q) / b:.2f}x" if b and b == b else "n/a"

    # The share of the offered load completed in the window: the two phases' Poisson arrivals differ.
    share = lambda s, c: s["jobs_per_s"] / (s["submitted"] / c.duration) if s["submitted"] else float("nan")  # noqa: E731
    tput = share(main, cfg) / share(base, bcfg)
    print(f"\n== {cfg.providers} providers vs baseline {bcfg.providers} providers (same offered load and jobs)")
    print(f"completed share of the offered load {tput:.2f}x; end-to-end p50 {ratio('e2e', .5)} p99 {ratio('e2e', .99)}; "
          f"submit p50 {ratio('submit', .5)} p99 {ratio('submit', .99)}; "
          f"lease->ack p50 {ratio('lease_to_ack', .5)}; queue wait p50 {ratio('queue_wait', .5)}; "
          f"scheduling round {main['round_ms'] / base['round_ms']:.2f}x; "
          f"coordinator CPU {main['cpu'] / base['cpu']:.2f}x")


def run_ramp(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    import loadramp  # bench/loadramp.py

    configs = tuple(c.strip() for c in a.configs.split(",") if c.strip())
    if not configs or set(configs) - set(loadramp.CONFIGS):
        p.error(f"--configs: a comma-separated subset of {','.join(loadramp.CONFIGS)}")
    if a.ramp_factor <= 1 or a.ramp_start <= 0 or a.ramp_max < a.ramp_start or a.step_duration <= 0:
        p.error("the ramp needs --ramp-factor > 1, 0 < --ramp-start <= --ramp-max and --step-duration > 0")
    ramp = loadramp.RampConfig(start=a.ramp_start, factor=a.ramp_factor, max=a.ramp_max, step_s=a.step_duration,
                               p99_s=a.ramp_p99, drain_s=a.ramp_drain, submit_procs=a.submit_procs or 2,
                               configs=configs)
    base = LoadConfig(providers=a.providers, prompts=a.prompts, shard_size=a.shard_size, slots=a.slots,
                      work_ms=a.work_ms, provider_procs=a.provider_procs, postgres_dsn=a.postgres_dsn,
                      inline_bytes=a.inline_bytes)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (coordinators, workers) on kill too
    try:
        sys.exit(loadramp.run(ramp, asdict(base), a.keep))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    d = LoadConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of sending")
    p.add_argument("--providers", type=int, default=d.providers)
    p.add_argument("--rate", type=float, default=d.rate, help="open loop: jobs/s offered (Poisson)")
    p.add_argument("--concurrency", type=int, default=0, help="closed loop: N submitters instead of --rate")
    p.add_argument("--prompts", type=int, default=d.prompts, help="prompts per job")
    p.add_argument("--shard-size", type=int, default=d.shard_size)
    p.add_argument("--slots", type=int, default=d.slots, help="tasks each provider runs at once")
    p.add_argument("--work-ms", type=float, default=d.work_ms, help="simulated run time per prompt")
    p.add_argument("--drain", type=float, default=d.drain, help="seconds in-flight jobs get after sending stops")
    p.add_argument("--provider-procs", type=int, default=0, help="worker processes for providers (0: 1 per 100)")
    p.add_argument("--submit-procs", type=int, default=0, help="submitter processes (0: 1, or 2 with --ramp)")
    p.add_argument("--baseline-providers", type=int, default=10, help="0: no baseline phase")
    p.add_argument("--baseline-duration", type=float, default=0, help="default: min(20, duration)")
    p.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--postgres-dsn", default="")
    p.add_argument("--keep", type=Path, default=None, help="keep data and logs under this directory")
    p.add_argument("--profile", type=Path, default=None,
                   help="sample the coordinator with py-spy while sending; stacks and top 10 under this directory")
    p.add_argument("--inline-bytes", type=int, default=-1,
                   help="the coordinator's inline_artifact_bytes (0: inputs fetched and outputs uploaded; "
                        "default: its own default)")
    ramp = p.add_argument_group("ramp", "raise the offered load step by step to the knee (bench/loadramp.py); "
                                "--duration, --rate, --concurrency, --store and the baseline do not apply")
    ramp.add_argument("--ramp", action="store_true")
    ramp.add_argument("--ramp-start", type=float, default=2.0, help="jobs/s of the first step")
    ramp.add_argument("--ramp-factor", type=float, default=1.5, help="each step offers this times the last")
    ramp.add_argument("--ramp-max", type=float, default=400.0, help="jobs/s of the last step at most")
    ramp.add_argument("--step-duration", type=float, default=10.0, help="seconds per step")
    ramp.add_argument("--ramp-p99", type=float, default=2.0, help="a step passes with end-to-end p99 at most this (s)")
    ramp.add_argument("--ramp-drain", type=float, default=15.0,
                      help="a step's jobs not terminal this long after it count as unfinished")
    ramp.add_argument("--configs", default="sqlite,pg1,pg3", help="subset of sqlite,pg1,pg3")
    a = p.parse_args()
    if a.ramp:
        run_ramp(p, a)
    if a.profile:
        a.profile.mkdir(parents=True, exist_ok=True)
    if a.store == "postgresql" and not a.postgres_dsn:
        p.error("--store postgresql needs --postgres-dsn")
    cfg = LoadConfig(duration=a.duration, providers=a.providers, rate=a.rate, concurrency=a.concurrency,
                     prompts=a.prompts, shard_size=a.shard_size, slots=a.slots, work_ms=a.work_ms, drain=a.drain,
                     provider_procs=a.provider_procs, submit_procs=a.submit_procs or 1, store=a.store,
                     postgres_dsn=a.postgres_dsn, profile=str(a.profile or ""), inline_bytes=a.inline_bytes)
    bcfg = LoadConfig(**{**asdict(cfg), "providers": a.baseline_providers, "provider_procs": 0,
                         "duration": a.baseline_duration or min(20.0, cfg.duration)})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (coordinator, workers) on kill too
    with tempfile.TemporaryDirectory(prefix="gpumesh-load-") as tmp:
        root = a.keep or Path(tmp)
        try:
            base = run_phase("baseline", bcfg, root / "baseline") if a.baseline_providers else None
            if base is not None:
                bs = summarize(base)
                print_phase(base, bs)
            main_r = run_phase("load", cfg, root / "load")
            ms_ = summarize(main_r)
            print_phase(main_r, ms_)
            if cfg.profile and (cfg_out := Path(cfg.profile) / "load.txt").exists():
                print(pyspy.report(cfg_out))
            if base is not None:
                print_ratios(bs, ms_, bcfg, cfg)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    ok = ms_["lost"] == 0 and ms_["missing_jobs"] == 0 and main_r["alive"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
