"""Ramp mode of bench/load.py (``--ramp``): raise the offered load step by step to the knee.

Per configuration one coordinator (or cluster) and one simulated fleet, kept across the steps:
``sqlite`` (one coordinator), ``pg1`` and ``pg3`` (one and three replicas on a fresh PostgreSQL
database each; a throwaway server from the installed binaries, tests/pg.py, unless a DSN is
given). Replicas share one data dir (the embedded blockstore and the sealing key, as in
tests/test_cluster.py), listen on their own ports and elect one scheduling leader; providers
and submitters' jobs are spread round-robin over their ports.

The steps follow each other with no pause (open loop, Poisson arrivals; a backlog carries
over): step k offers ``start * factor**k`` jobs/s for ``step_s`` seconds, up to ``max``.
Submitter processes stay up and get each step as a command just before it starts. A step passes
when its jobs (those scheduled in it) have a p99 end-to-end latency (scheduled arrival ->
COMPLETED) of at most ``p99_s``, none failed or was unfinished ``drain_s`` after the step,
nothing reported an error during it (submitters, providers), and completions kept up: at least
``KEEP_UP`` of its jobs completed by the step's end plus their median latency. The ramp stops
at the first step that fails; the knee is the last step before it. Tasks/s and CPU per task
come from the store afterwards (tasks, primary and check, whose result was stored inside the
step) and /proc (the coordinator's CPU summed over replicas; PostgreSQL's server separately).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from gpumesh.client import Client
from gpumesh.errors import Unavailable
from gpumesh.identity import Wallet
from gpumesh.localnet import Proc, free_port, wait_healthy

import load  # bench/load.py

REPO = Path(__file__).resolve().parent.parent
KEEP_UP = 0.9  # of a step's jobs completed by its end + their median latency
LEAD_S = 1.0  # a step's command goes out this long before the step starts
CONFIGS = {"sqlite": ("sqlite", 1), "pg1": ("postgresql", 1), "pg3": ("postgresql", 3)}  # store, replicas


@dataclass(frozen=True)
class RampConfig:
    start: float = 2.0  # jobs/s of the first step
    factor: float = 1.5
    max: float = 400.0
    step_s: float = 10.0
    p99_s: float = 2.0
    drain_s: float = 15.0  # a step's jobs not terminal this long after it count as unfinished
    submit_procs: int = 2
    configs: tuple[str, ...] = ("sqlite", "pg1", "pg3")

    def rates(self) -> list[float]:
        rates = [self.start]
        while rates[-1] * self.factor <= self.max * (1 + 1e-9):
            rates.append(rates[-1] * self.factor)
        return rates


@dataclass(frozen=True)
class Step:
    k: int
    rate: float
    start: float
    end: float
    drain_end: float


@dataclass
class StepResult:
    step: Step
    scheduled: int = 0
    subs: list[dict] = field(default_factory=list)  # one SubmitStats (as a dict) per submitter process
    provider_errors: Counter = field(default_factory=Counter)
    verdict: list[str] | None = None  # None: not judged; []: passed; else why it failed

    def merged(self, key: str) -> list:
        return [v for s in self.subs for v in s[key]]

    def counter(self, key: str) -> Counter:
        return sum((Counter(s[key]) for s in self.subs), Counter())

    def latencies(self) -> list[float]:
        """End-to-end latency of every job scheduled in the step; inf for those not COMPLETED."""
        done = self.merged("e2e_s")
        return done + [math.inf] * (self.scheduled - len(done))


# ---- the coordinators and PostgreSQL -----------------------------------------------------------


@dataclass
class Cluster:
    """``replicas`` coordinator processes on one store and one data dir (one: a lone coordinator)."""

    procs: list[Proc] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path, replicas: int, cfg: load.LoadConfig) -> Cluster:
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls()
        try:
            for i in range(replicas):  # one after another: the first makes the shared sealing key
                target, metrics_at = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
                env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                       # every node is this one host: the network is no independence key here
                       "GPUMESH_COORDINATOR_INDEPENDENT_NETWORKS": "false", **load.coordinator_env(cfg, metrics_at)}
                proc = Proc(f"r{i}", [sys.executable, "-m", "gpumesh", "coordinator", "serve", "--listen", target,
                                      "--data-dir", str(root / "coordinator"), "--replica-id", f"r{i}",
                                      "--lease-ttl", str(cfg.lease_ttl), "--heartbeat-interval", str(cfg.heartbeat)],
                            root / f"coordinator-r{i}.log", env).start()
                cluster.procs.append(proc)
                cluster.targets.append(target)
                cluster.metrics.append(f"http://{metrics_at}/metrics")
                try:
                    wait_healthy(target, 60)
                except Unavailable:
                    raise Unavailable(f"replica r{i} failed to start:\n{proc.log_tail()}") from None
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def alive(self) -> bool:
        return all(p.alive for p in self.procs)

    def cpu(self) -> float:
        return sum(load.cpu_seconds(p.popen.pid) for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    def log_errors(self) -> list[str]:
        return [f"{p.name}: {line}" for p in self.procs
                for line in p.log_path.read_text(errors="replace").splitlines() if " ERROR " in line or "Traceback" in line]


def tree_cpu(root_pid: int) -> float:
    """CPU seconds of a process, its live children and those it reaped (PostgreSQL's backends)."""
    hz, total = os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
        except (OSError, IndexError, ValueError):
            continue
        if pid == root_pid:
            total += sum(int(f) for f in fields[11:15]) / hz  # utime stime cutime cstime
        elif fields[1] == str(root_pid):
            total += (int(fields[11]) + int(fields[12])) / hz
    return total


class Postgres:
    """Fresh databases: on a throwaway server (tests/pg.py; started on first use) or on ``dsn``'s."""

    def __init__(self, dsn: str = "") -> None:
        self.dsn, self.server, self.root, self.made = dsn, None, None, []

    def create_db(self) -> str:
        if self.dsn:
            import psycopg
            from psycopg.conninfo import make_conninfo

            name = f"gpumesh_load_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            self.made.append(name)
            return make_conninfo(self.dsn, dbname=name)
        if self.server is None:
            if str(REPO) not in sys.path:
                sys.path.insert(0, str(REPO))
            from tests.pg import start_postgres

            self.root = Path(tempfile.mkdtemp(prefix="gpumesh-load-pg-"))  # postgres must reach it (not under 0700)
            self.server, why = start_postgres(self.root)
            if self.server is None:
                raise RuntimeError(f"no PostgreSQL server: {why} (or pass --postgres-dsn)")
        return self.server.create_db()

    def cpu(self) -> float:
        """The throwaway server's CPU seconds so far (nan for a server given by DSN)."""
        if self.server is None:
            return math.nan
        try:
            return tree_cpu(int((self.server.datadir / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            return math.nan

    def close(self) -> None:
        if self.made:
            import psycopg

            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for name in self.made:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if self.server is not None:
            self.server.stop()
            shutil.rmtree(self.root, ignore_errors=True)


# ---- submitters: one process sends every step ---------------------------------------------------


def ramp_submitter_worker(targets: list[str], cfg: load.LoadConfig, model: bytes, index: int, procs: int,
                          threads: int, commands, stop, out, parent: int) -> None:
    """A process sending each ``Step`` it gets on ``commands`` (its 1/``procs`` share of the
    step's Poisson arrivals, jobs round-robin over ``targets``), each step on its own thread;
    once all of a step's jobs are terminal (or its drain ended) it sends the step's figures."""
    load._worker_signals()
    wallet = Wallet.generate()
    clients = [Client.connect(t, wallet=wallet, timeout=60) for t in targets]
    model_cid = clients[0].upload(model)  # one store behind every replica: all of them see the grant
    rng = random.Random(cfg.seed * 1000 + index)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="submit")
    out.put(("ready", index))
    while not stop.is_set() and not load._orphaned(parent):
        try:
            step = commands.get(timeout=0.1)
        except queue.Empty:
            continue
        threading.Thread(target=_send_step, args=(step, clients, cfg, model_cid, rng, pool, procs, index, stop, out),
                         daemon=True).start()
    for client in clients:  # in-flight watches end now
        client.close()
    pool.shutdown(wait=False, cancel_futures=True)


def _send_step(step: Step, clients: list[Client], cfg: load.LoadConfig, model_cid: str, rng: random.Random,
               pool: ThreadPoolExecutor, procs: int, index: int, stop, out) -> None:
    stats, lock, jobs = load.SubmitStats(), threading.Lock(), []
    arrivals = random.Random(f"{cfg.seed}/{index}/{step.k}")  # its own stream: the prompts draw from rng
    at, turn = step.start, index
    time.sleep(max(0.0, step.start - time.time()))
    while (at := at + arrivals.expovariate(step.rate / procs)) < step.end and not stop.is_set():
        time.sleep(max(0.0, at - time.time()))
        jobs.append(pool.submit(load.run_job, clients[turn % len(clients)], cfg, model_cid, rng, stats, lock, at,
                                step.drain_end))
        turn += 1
    wait(jobs, timeout=max(0.0, step.drain_end - time.time()) + 10)
    if not stop.is_set():
        with lock:
            out.put(("step", (step.k, index, len(jobs), load.plain(stats))))


# ---- one configuration ---------------------------------------------------------------------------


def judge(r: StepResult, ramp: RampConfig, cluster_alive: bool) -> list[str]:
    """Why the step fails ([] when it passes)."""
    why, lat = [], r.latencies()
    if not r.scheduled:
        why.append("no job was sent")
    elif (p99 := load.pct(lat, .99)) > ramp.p99_s:
        why.append(f"e2e p99 {'> drain' if math.isinf(p99) else f'{p99:.2f} s'} > {ramp.p99_s:g} s")
    errors = r.counter("errors") + r.provider_errors
    if errors:
        why.append(f"{sum(errors.values())} errors {dict(errors.most_common(3))}")
    if lost := {state: n for state, n in r.counter("states").items() if state != "COMPLETED"}:
        why.append(f"jobs not completed {lost}")
    if (done := r.merged("e2e_s")) and r.scheduled:
        kept = sum(1 for t in r.merged("done_at") if t <= r.step.end + load.pct(done, .5)) / r.scheduled
        if kept < KEEP_UP:
            why.append(f"behind: {kept:.0%} of its jobs completed by the step's end + their p50")
    if not cluster_alive:
        why.append("a coordinator exited")
    return why


def wait_connected(cluster: Cluster, n: int, timeout: float = 180.0) -> None:
    """Until replica 0 lists ``n`` connected providers (those of other replicas through presence)."""
    deadline = time.monotonic() + timeout
    with Client.connect(cluster.targets[0]) as client:
        while (have := len(client.list_providers(connected_only=True))) < n:
            if time.monotonic() > deadline or not cluster.alive:
                raise RuntimeError(f"only {have} of {n} providers connected\n{cluster.procs[0].log_tail()}")
            time.sleep(0.5)


def run_config(name: str, ramp: RampConfig, base: load.LoadConfig, root: Path, pg: Postgres) -> dict:
    """Ramp one configuration to its knee; the steps, CPU samples and the store's task times."""
    store, replicas = CONFIGS[name]
    cfg = replace(base, store=store, postgres_dsn=pg.create_db() if store == "postgresql" else "")
    ctx = mp.get_context("spawn")  # no forked gRPC state in the workers
    fleet = load.Fleet(ctx, ctx.Event(), ctx.Queue())
    procs = ramp.submit_procs
    cluster = Cluster.start(root, replicas, cfg)
    rates = ramp.rates()
    results: list[StepResult] = []
    samples: list[list[float]] = []  # at each step boundary: time, coordinator, postgres, providers, submitters, busy, total
    last_errors: dict[int, Counter] = {}

    def sample() -> list[float]:
        return [time.time(), cluster.cpu(), pg.cpu() if store == "postgresql" else 0.0,
                sum(load.cpu_seconds(p.pid) for p in fleet.sims), sum(load.cpu_seconds(p.pid) for p in fleet.subs),
                *load.machine_busy()]

    def dispatch(timeout: float) -> None:
        try:
            kind, body = fleet.results.get(timeout=timeout)
        except queue.Empty:
            return
        if kind == "step":
            k, _index, n, stats = body
            results[k].subs.append(stats)
            results[k].scheduled += n
        elif kind == "provider errors":
            pid, at, counts = body
            new, last_errors[pid] = Counter(counts) - last_errors.get(pid, Counter()), Counter(counts)
            for r in results:
                if r.step.start <= at < r.step.end:
                    r.provider_errors.update(new)
        else:
            fleet.got.append((kind, body))

    try:
        nprov = cfg.provider_procs or max(1, -(-cfg.providers // 100))
        for i in range(nprov):
            fleet.start(load.provider_worker, ",".join(cluster.targets),
                        cfg.providers // nprov + (i < cfg.providers % nprov), cfg)
        wait_connected(cluster, cfg.providers)
        commands = [ctx.Queue() for _ in range(procs)]
        threads = min(1000, 64 + int(4 * ramp.max / procs))
        model = b"simulated model weights " + uuid.uuid4().bytes
        for i, q in enumerate(commands):
            fleet.start(ramp_submitter_worker, cluster.targets, cfg, model, i, procs, threads, q)
        deadline = time.time() + 120
        while sum(1 for kind, _ in fleet.got if kind == "ready") < procs:
            if time.time() > deadline or not all(p.is_alive() for p in fleet.subs):
                raise RuntimeError("submitter processes did not start")
            dispatch(0.2)

        t0 = time.time() + LEAD_S + 0.5
        results.extend(StepResult(Step(k, r, t0 + k * ramp.step_s, t0 + (k + 1) * ramp.step_s,
                                       t0 + (k + 1) * ramp.step_s + ramp.drain_s)) for k, r in enumerate(rates))
        sent = judged = 0
        failed = False
        while True:
            now = time.time()
            while len(samples) <= sent and now >= t0 + len(samples) * ramp.step_s:
                samples.append(sample())
            if sent < len(results) and not failed and now >= results[sent].step.start - LEAD_S:
                for q in commands:
                    q.put(results[sent].step)
                sent += 1
            while judged < sent and not failed:
                r = results[judged]
                complete = len(r.subs) == procs and now >= r.step.end + 0.5
                if not complete and now < r.step.drain_end + 20:
                    break
                r.verdict = judge(r, ramp, cluster.alive) if complete else [
                    f"{procs - len(r.subs)} of {procs} submitter processes sent no figures"]
                failed = bool(r.verdict)
                judged += 1
                lat = r.latencies()
                print(f"  {name} step {r.step.k}: {r.step.rate:.2f} jobs/s offered, e2e p50 "
                      f"{load.ms(lat, .5)} ms p99 {load.ms(lat, .99)} ms: {'; '.join(r.verdict) or 'passed'}",
                      flush=True)
            if (failed or judged == len(results)) and len(samples) > judged:
                break
            dispatch(0.05)
        metrics = [load.scrape(url) for url in cluster.metrics]
        alive = cluster.alive
    finally:
        fleet.stop.set()
        fleet.collect("providers", len(fleet.sims), time.time() + 30)
        fleet.close()
        cluster.stop()
    judged_steps = [r for r in results if r.verdict is not None]
    db = root / "coordinator" / "coordinator.db"
    reported = [j for r in results for j in r.merged("job_ids")]
    passed = [j for r in judged_steps if not r.verdict for j in r.merged("job_ids")]
    return {"name": name, "cfg": cfg, "replicas": replicas, "steps": judged_steps, "samples": samples,
            "results": load.scan_store(cfg, db, reported)["results"], "check": load.scan_store(cfg, db, passed),
            "metrics": metrics, "alive": alive, "log_errors": cluster.log_errors(),
            "provider_stats": fleet.stats("providers")}


# ---- report --------------------------------------------------------------------------------------


def figures(run: dict, r: StepResult) -> dict:
    """One step's rates, latencies and CPU (over the step's window)."""
    s, e, k = r.step.start, r.step.end, r.step.k
    d = e - s
    (ta, *a), (tb, *b) = run["samples"][k], run["samples"][k + 1]
    dt = tb - ta
    coord, pg, sims, subs, busy, total = (y - x for x, y in zip(a, b))
    primary = sum(1 for role, t in run["results"] if role == "primary" and s <= t < e)
    checks = sum(1 for role, t in run["results"] if role != "primary" and s <= t < e)
    done = [t for step in run["steps"] for t in step.merged("done_at") if s <= t < e]
    machine = busy / total * os.cpu_count() if total else math.nan
    lat = r.latencies()
    return {"k": k, "rate": r.step.rate, "offered": r.scheduled / d, "jobs_per_s": len(done) / d,
            "primary_per_s": primary / d, "checks_per_s": checks / d, "tasks_per_s": (primary + checks) / d,
            "p50": load.pct(lat, .5), "p99": load.pct(lat, .99), "lag": load.pct(r.merged("lag_s"), .99),
            "coord": coord / dt,
            "ms_per_task": 1000 * coord / (primary + checks) if primary + checks else math.nan,
            "pg": pg / dt, "bench": (sims + subs) / dt, "machine": machine,
            "other": machine - (coord + (0.0 if math.isnan(pg) else pg) + sims + subs) / dt,  # a given server's in it
            "verdict": r.verdict}


def knee(run: dict) -> tuple[dict | None, dict | None]:
    """(the last step that passed, the step that stopped the ramp (None: it reached the maximum))."""
    rows = [figures(run, r) for r in run["steps"]]
    passed = [f for f in rows if not f["verdict"]]
    stopped = next((f for f in rows if f["verdict"]), None)
    return (passed[-1] if passed else None), stopped


def _ms(v: float) -> str:
    return "inf" if math.isinf(v) else f"{1000 * v:.0f}"


def print_config(run: dict, ramp: RampConfig) -> None:
    cfg = run["cfg"]
    store = "SQLite" if cfg.store == "sqlite" else f"PostgreSQL, {run['replicas']} replica{'s' * (run['replicas'] > 1)}"
    print(f"\n== {run['name']} ({store}): {cfg.providers} providers x {cfg.slots} slots, {cfg.prompts} prompts/job "
          f"in {-(-cfg.prompts // cfg.shard_size)} tasks, {cfg.work_ms:g} ms/prompt; steps of {ramp.step_s:g} s "
          f"from {ramp.start:g} jobs/s x{ramp.factor:g}")
    print(f"{'step':>4}{'jobs/s':>8}{'sent':>7}{'done':>7}{'tasks/s':>9}{'prim':>7}{'chk':>7}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'lag ms':>7}{'coord':>7}{'ms/task':>8}{'pg':>6}{'bench':>6}{'other':>7}  verdict")
    for r in run["steps"]:
        f = figures(run, r)
        print(f"{f['k']:>4}{f['rate']:>8.2f}{f['offered']:>7.2f}{f['jobs_per_s']:>7.2f}{f['tasks_per_s']:>9.1f}"
              f"{f['primary_per_s']:>7.1f}{f['checks_per_s']:>7.1f}{_ms(f['p50']):>8}{_ms(f['p99']):>8}"
              f"{_ms(f['lag']):>7}{f['coord']:>7.2f}{f['ms_per_task']:>8.2f}{f['pg']:>6.2f}{f['bench']:>6.2f}{f['other']:>7.2f}  "
              f"{'; '.join(f['verdict']) or 'passed'}")
    print("(jobs/s: offered, sent, completed in the step; tasks/s: results stored in the step, primary + checks; "
          "lag: p99 of the submitters' start behind schedule (inside e2e); CPU in cores: coordinator (all "
          "replicas), PostgreSQL server, this bench's providers and submitters, other processes on the machine "
          f"({os.cpu_count()} cores))")
    details = {}
    for r in run["steps"]:
        for s in r.subs:
            details = {**s["details"], **details}
    for p in run["provider_stats"]:
        details = {**p["details"], **details}
    for key, detail in details.items():
        print(f"  {key}: first detail: {detail}")
    rounds = sum(m.get("gpumesh_schedule_round_seconds_count", 0) for m in run["metrics"])
    spent = sum(m.get("gpumesh_schedule_round_seconds_sum", 0) for m in run["metrics"])
    chk = run["check"]
    print(f"coordinator: {rounds:.0f} scheduling rounds of {1000 * spent / rounds if rounds else math.nan:.2f} ms mean; "
          f"all alive at the end: {run['alive']}; store ({cfg.store}) check of the passing steps' "
          f"{sum(chk['jobs'].values())} jobs: lost tasks {_lost(chk)}, missing jobs {chk['missing_jobs']}")
    if run["log_errors"]:
        print(f"coordinator logs: {len(run['log_errors'])} ERROR lines; first: {run['log_errors'][:3]}")
    best, stopped = knee(run)
    print(f"knee ({run['name']}): " + (_knee_line(best) if best else "none: the first step failed") + "; "
          + (f"stopped at step {stopped['k']} ({stopped['rate']:.2f} jobs/s): {'; '.join(stopped['verdict'])}"
             if stopped else f"no step failed up to --ramp-max {ramp.max:g} jobs/s"), flush=True)


def _lost(scan: dict) -> int:
    return sum(n for (role, _state, job_state), n in scan["tasks"].items() if role == "primary" and job_state != "COMPLETED")


def _knee_line(f: dict) -> str:
    return (f"step {f['k']}, {f['rate']:.2f} jobs/s offered ({f['offered']:.2f} sent), {f['jobs_per_s']:.2f} jobs/s "
            f"completed, {f['tasks_per_s']:.1f} tasks/s ({f['primary_per_s']:.1f} primary + {f['checks_per_s']:.1f} "
            f"checks), e2e p50 {_ms(f['p50'])} ms p99 {_ms(f['p99'])} ms, coordinator {f['ms_per_task']:.2f} ms "
            f"CPU/task ({f['coord']:.2f} cores), PostgreSQL {f['pg']:.2f} cores, bench {f['bench']:.2f} cores, "
            f"other processes {f['other']:.2f} cores")


def print_summary(runs: list[dict]) -> None:
    print(f"\n== knees\n{'config':<8}{'replicas':>9}{'jobs/s':>8}{'done':>7}{'tasks/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'ms/task':>9}{'coord':>7}{'pg':>6}{'bench':>6}{'other':>7}  stopped by")
    knees = {}
    for run in runs:
        best, stopped = knee(run)
        knees[run["name"]] = best
        why = f"{stopped['rate']:.2f} jobs/s: {'; '.join(stopped['verdict'])}" if stopped else "--ramp-max reached"
        if best is None:
            print(f"{run['name']:<8}{run['replicas']:>9}{'-':>8}{'':>7}{'':>9}{'':>8}{'':>8}{'':>9}{'':>7}{'':>6}{'':>6}{'':>7}  {why}")
            continue
        print(f"{run['name']:<8}{run['replicas']:>9}{best['rate']:>8.2f}{best['jobs_per_s']:>7.2f}{best['tasks_per_s']:>9.1f}"
              f"{_ms(best['p50']):>8}{_ms(best['p99']):>8}{best['ms_per_task']:>9.2f}{best['coord']:>7.2f}"
              f"{best['pg']:>6.2f}{best['bench']:>6.2f}{best['other']:>7.2f}  {why}")
    if knees.get("pg1") and knees.get("pg3"):
        print(f"3-replica knee / 1-replica knee (tasks/s): "
              f"{knees['pg3']['tasks_per_s'] / knees['pg1']['tasks_per_s']:.2f}x")


def run(ramp: RampConfig, base: dict, keep: Path | None) -> int:
    """Every configuration of ``ramp`` in turn; 0 when each ran to a verdict."""
    pg = Postgres(base.get("postgres_dsn", ""))
    runs, broken = [], []
    with tempfile.TemporaryDirectory(prefix="gpumesh-ramp-") as tmp:
        root = keep or Path(tmp)
        try:
            for name in ramp.configs:
                try:
                    runs.append(run_config(name, ramp, load.LoadConfig(**base), root / name, pg))
                except (RuntimeError, Unavailable, OSError) as exc:
                    broken.append(name)
                    print(f"\n== {name}: did not run: {exc}", flush=True)
                    continue
                print_config(runs[-1], ramp)
        finally:
            pg.close()
    print_summary(runs)
    return 1 if broken else 0
