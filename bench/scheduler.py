"""Scheduler v2 throughput and a trace-driven simulation, on Alibaba's GPU cluster inventory and trace.

Providers: ``--providers`` nodes drawn (seeded) from the node shapes of Alibaba's cluster-trace-gpu-v2023
(``bench/data/alibaba_gpu_v2023_nodes.csv``: GPU model, GPUs per node, host memory, node count), one
slot per GPU (CPU nodes: 2), priced per GPU-hour by model with +-30% jitter; 5% are centralized; each
caches 0-2 of 8 model CIDs. G2/G3 are the trace's undisclosed GPU codes (their VRAM is assumed 32 GiB,
their speed is ``scoring.UNKNOWN_GPU_SPEED``). Tasks: ``--tasks`` tasks cycling over the sampled job trace
(``bench/data/alibaba_gpu_v2023_jobs.csv``: arrival, GPUs requested, GPU-type constraint, duration): the
GPU count and type become requirements, the duration ``expected_s``; a third get a deadline.

1. Decisions: the v2 ``Scheduler`` (GPU-class index) decides every task; the baseline, in the same run,
   is the brute-force pool (``LinearPool``: feasible list per demand, a linear scan of it per task, as
   the first scheduler did; identical decisions) on the first ``--baseline-tasks`` tasks.
2. Simulation (simulated time, not wall-clock): ``--sim-providers`` one-slot providers, the job trace
   replayed with arrivals compressed to an offered load of ``--load``; a job runs its trace duration
   scaled by the mean speed of the providers over its provider's speed.
   v2 (best score, any queued demand that fits) vs FIFO first-fit (the queue head on the first free
   feasible provider in list order, nothing passes a blocked head). Reported: mean job completion time
   (arrival to finish) and GPU utilisation (GPU-seconds of running jobs / GPU-seconds available).

    python bench/scheduler.py            # < 2 minutes
    python bench/scheduler.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import csv
import heapq
import random
import time
from collections import deque
from pathlib import Path

from coordinator.models import GpuSpec
from coordinator.scheduling.pool import LinearPool
from coordinator.scheduling.rules import Candidate, Demand, reasons
from coordinator.scheduling.scheduler import PendingTask, Scheduler
from coordinator.scheduling.scoring import gpu_speed
from gpumesh.jobspec import Requirements

DATA = Path(__file__).resolve().parent / "data"
# trace code -> (NVML-style name, MiB, price per GPU-hour)
GPU = {"P100": ("Tesla P100-PCIE-16GB", 16280, 40), "T4": ("Tesla T4", 15360, 35), "A10": ("NVIDIA A10", 23028, 75),
       "V100M16": ("Tesla V100-SXM2-16GB", 16160, 90), "V100M32": ("Tesla V100-SXM2-32GB", 32510, 110),
       "G2": ("G2", 32768, 100), "G3": ("G3", 32768, 130)}
MODELS = [f"bafkmodel{k}" for k in range(8)]


def load_nodes() -> list[tuple[str, int, int, int]]:
    with open(DATA / "alibaba_gpu_v2023_nodes.csv") as f:
        return [(r["gpu_model"], int(r["gpus_per_node"]), int(r["memory_mib"]), int(r["nodes"])) for r in csv.DictReader(f)]


def load_jobs() -> list[tuple[int, int, str, int]]:
    with open(DATA / "alibaba_gpu_v2023_jobs.csv") as f:
        return [(int(r["arrival_s"]), int(r["num_gpu"]), r["gpu_spec"], int(r["duration_s"])) for r in csv.DictReader(f)]


def providers(n: int, rng: random.Random, *, slots: int | None = None, central: float = 0.05) -> list[Candidate]:
    shapes = load_nodes()
    out = []
    for i, (model, count, mem, _) in enumerate(rng.choices(shapes, weights=[s[3] for s in shapes], k=n)):
        name, mib, price = GPU.get(model, ("", 0, 0))
        gpus = tuple(GpuSpec(name, mib) for _ in range(count))
        hourly = max(1, round((price * count or 10) * rng.uniform(0.7, 1.3)))
        out.append(Candidate(
            f"prov{i:05d}", gpus, mem, hourly, slots or max(count, 2), frozenset(rng.sample(MODELS, rng.randint(0, 2))),
            rng.choice([0.5, 0.8, 0.95]), f"0xop{i % (n // 3 + 1)}", "CENTRALIZED" if rng.random() < central else "OPEN",
            rng.choice([0.6, 0.9, 1.0]), rng.random() > 0.01, gpu_speed(gpus), rng.choice([0.0, 600.0, 3_600.0])))
    return out


def requirements(num_gpu: int, spec: str) -> Requirements:
    models = tuple(dict.fromkeys(("V100" if m.startswith("V100") else m) for m in spec.split("|") if m))
    return Requirements(gpu_count=num_gpu, gpu_models=models, allow_cpu=num_gpu == 0)


def tasks(n: int, rng: random.Random, now: float) -> list[PendingTask]:
    jobs, out, demands = load_jobs(), [], {}
    for k in range(n):
        _, num_gpu, spec, dur = jobs[k % len(jobs)]
        expected = float(min(dur, 86_400))
        deadline = now + 3 * expected if k % 3 == 0 else None
        key = (num_gpu, spec, MODELS[k % 5], deadline is not None)
        d = demands.get(key)
        if d is None:  # one Demand per kind of task (as jobs share their spec)
            d = demands[key] = Demand(requirements(num_gpu, spec), 0, MODELS[k % 5], deadline=deadline,
                                      expected_s=expected)
        out.append(PendingTask(f"t{k}", f"job{k // 16}", d))
    return out


def decide_all(sched: Scheduler, batch: list[PendingTask]) -> tuple[float, list[int], int]:
    lat, placed = [], 0
    t0 = time.perf_counter()
    for task in batch:
        s = time.perf_counter_ns()
        placed += sched.decide(task) is not None
        lat.append(time.perf_counter_ns() - s)
    return time.perf_counter() - t0, sorted(lat), placed


def p(lat: list[int], q: float) -> float:
    return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6


def bench_decisions(args, rng: random.Random) -> None:
    now = 1_700_000_000.0
    cands = providers(args.providers, rng)
    queue = tasks(args.tasks, rng, now)
    t0 = time.perf_counter()
    sched = Scheduler(cands, now=now)
    build = time.perf_counter() - t0
    secs, lat, placed = decide_all(sched, queue)
    base = Scheduler(cands, now=now, pool=LinearPool)
    bsecs, blat, bplaced = decide_all(base, queue[: args.baseline_tasks])
    same = Scheduler(cands, now=now).schedule(queue[: args.baseline_tasks]) == base.plan
    plan = sched.plan
    print(f"providers={len(cands)} slots={sum(c.free_slots for c in cands)} tasks={len(queue)} "
          f"classes={len(sched.pool._classes)} index build {build * 1e3:.0f} ms")
    print(f"v2 plan: {placed} assigned ({sum(a.fallback for a in plan.assignments)} on fallback), "
          f"{len(plan.waiting)} waiting, {len(plan.unschedulable)} unschedulable, {len(plan.fallback)} fallback needs")
    print(f"{'scheduler':<34}{'tasks':>8}{'assign/s':>11}{'decide/s':>11}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'v2 GPU-class index':<34}{len(queue):>8}{placed / secs:>11.0f}{len(queue) / secs:>11.0f}"
          f"{p(lat, .5):>9.3f}{p(lat, .99):>9.3f}")
    print(f"{'brute force (baseline)':<34}{len(blat):>8}{bplaced / bsecs:>11.0f}{len(blat) / bsecs:>11.0f}"
          f"{p(blat, .5):>9.3f}{p(blat, .99):>9.3f}")
    print(f"v2 = {(placed / secs) / (bplaced / bsecs):.1f} x baseline assignments/s, p99 "
          f"{p(blat, .99) / p(lat, .99):.1f} x lower; same plan on the baseline's tasks: {same}")
    print(f"targets: >= 5000 assign/s {'met' if placed / secs >= 5000 else 'MISSED'}, "
          f"p99 < 5 ms {'met' if p(lat, .99) < 5 else 'MISSED'}")


def simulate(policy: str, cands: list[Candidate], jobs: list[tuple[float, Demand, float]],
             pay: dict[str, int] | None = None) -> tuple:
    """Mean completion time, GPU and slot utilisation, jobs finished; ``jobs``: (arrival, demand, reference
    seconds, run for ref / speed on a provider). Utilisation counts the arrival window only (first to last
    arrival), so the drain after the last arrival does not dilute it."""
    w0, w1 = (jobs[0][0], jobs[-1][0]) if jobs else (0.0, 1.0)
    free = {c.provider_id: c.free_slots for c in cands}
    gpu_speeds = [c.speed for c in cands if c.gpus] or [1.0]
    ref = sum(gpu_speeds) / len(gpu_speeds)  # the trace ran on the cluster's average GPU
    slowdown = {c.provider_id: min(4.0, max(0.25, ref / c.speed)) for c in cands}
    ngpu = {c.provider_id: len(c.gpus) for c in cands}
    sched = Scheduler(cands)
    events: list[tuple[float, int, int, str]] = [(a, 0, j, "") for j, (a, _, _) in enumerate(jobs)]
    heapq.heapify(events)
    fifo: deque[int] = deque()
    by_demand: dict[Demand, deque[int]] = {}
    busy_gpu_s, busy_slot_s, jct, done, paid = 0.0, 0.0, 0.0, 0, 0.0
    price = pay or {c.provider_id: c.price_per_hour for c in cands}  # what a provider is paid per hour

    def start(j: int, pid: str, t: float) -> None:
        nonlocal busy_gpu_s, busy_slot_s, paid
        run = jobs[j][2] * slowdown[pid] if jobs[j][1].requirements.gpu_count else jobs[j][2]
        paid += price[pid] * run / 3600.0
        inside = max(0.0, min(t + run, w1) - max(t, w0))  # the part of the run within the window
        busy_slot_s += inside
        busy_gpu_s += inside * jobs[j][1].requirements.gpu_count
        heapq.heappush(events, (t + run, 1, j, pid))

    while events:
        t, kind, j, pid = heapq.heappop(events)
        if kind == 0:
            (fifo.append(j) if policy == "fifo" else by_demand.setdefault(jobs[j][1], deque()).append(j))
        else:
            done, jct = done + 1, jct + t - jobs[j][0]
            free[pid] += 1
            if policy != "fifo":
                sched.release(pid)
        if events and events[0][0] == t:
            continue  # place once every event at this instant is in
        if policy == "fifo":
            while fifo:
                d = jobs[fifo[0]][1]
                pid = next((c.provider_id for c in cands if free[c.provider_id] and not reasons(d, c)), None)
                if pid is None:
                    break
                free[pid] -= 1
                start(fifo.popleft(), pid, t)
        else:
            for d, q in sorted(by_demand.items(), key=lambda kv: kv[1][0] if kv[1] else float("inf")):
                while q:
                    a = sched.decide(PendingTask(str(q[0]), "j", d))
                    if a is None:
                        break
                    free[a.provider_id] -= 1
                    start(q.popleft(), a.provider_id, t)
            sched.plan.waiting.clear()
    total_gpus = sum(ngpu.values())
    span = (w1 - w0) or 1.0
    return jct / max(done, 1), busy_gpu_s / (total_gpus * span), busy_slot_s / (len(cands) * span), done, paid


def bench_simulation(args, rng: random.Random) -> None:
    cands = [c for c in providers(args.sim_providers, rng, slots=1, central=0.0)]
    trace = load_jobs()[: args.sim_jobs]
    feasible = [(a, requirements(g, s), min(d, args.max_duration)) for a, g, s, d in trace]
    feasible = [(a, Demand(r, 0, fallback="never"), float(d)) for a, r, d in feasible
                if any(not reasons(Demand(r, 0), c) for c in cands)]
    # A trace duration is the runtime on the cluster's average GPU; a faster or slower provider runs a
    # GPU job in proportion (at most 4x either way), a CPU job as traced; one job per provider at a
    # time. Offered load: the work asked for over the providers' slot-seconds.
    gpu_work = sum(d for _, _, d in feasible)
    capacity = len(cands)
    # The sample's first arrivals are weeks apart (the trace's start): clip each inter-arrival gap
    # to the 95th percentile of gaps, so the window holds the arrival pattern and not idle weeks.
    gaps = [b[0] - a[0] for a, b in zip(feasible, feasible[1:])]
    cap = sorted(gaps)[int(0.95 * (len(gaps) - 1))] if gaps else 0
    t, clipped = 0.0, []
    for k, (a, dm, d) in enumerate(feasible):
        t += min(gaps[k - 1], cap) if k else 0.0
        clipped.append((t, dm, d))
    feasible = clipped
    span0 = (feasible[-1][0] - feasible[0][0]) or 1
    scale = gpu_work / (args.load * capacity) / span0  # arrivals compressed (or stretched) to the offered load
    jobs = [(feasible[0][0] + (a - feasible[0][0]) * scale, dm, d) for a, dm, d in feasible]
    print(f"simulation: {len(jobs)} jobs of the trace ({len(trace) - len(jobs)} no provider fits), "
          f"{len(cands)} one-slot providers, offered load {args.load}")
    # Fixed price: each GPU class posts one price (its providers' median ask) and pays it to whichever
    # provider first-fit hands a job; the reverse auction pays each job's winner its own ask.
    classes: dict[str, list[int]] = {}
    for c in cands:
        classes.setdefault(c.gpus[0].name if c.gpus else "cpu", []).append(c.price_per_hour)
    posted = {k: sorted(v)[len(v) // 2] for k, v in classes.items()}
    fixed = {c.provider_id: posted[c.gpus[0].name if c.gpus else "cpu"] for c in cands}
    ref_h = sum(d for _, _, d in jobs) / 3600.0
    print(f"{'policy':<34}{'mean JCT h':>12}{'GPU util':>10}{'slot util':>10}{'finished':>10}{'paid/ref-h':>12}")
    rows = {}
    for name, policy, pay in (("FIFO first-fit (baseline)", "fifo", None), ("fixed price, FIFO first-fit", "fifo", fixed),
                              ("v2 reverse auction", "v2", None)):
        t0 = time.perf_counter()
        rows[name] = simulate(policy, cands, jobs, pay)
        m, u, su, n, paid = rows[name]
        print(f"{name:<34}{m / 3600:>12.2f}{u:>10.1%}{su:>10.1%}{n:>10}{paid / ref_h:>12.1f}"
              f"   ({time.perf_counter() - t0:.1f} s wall)")
    v2, fifo, fix = rows["v2 reverse auction"], rows["FIFO first-fit (baseline)"], rows["fixed price, FIFO first-fit"]
    print(f"v2 mean JCT = {v2[0] / fifo[0]:.3f} x FIFO; GPU utilisation {v2[1] / max(fifo[1], 1e-12):.3f} x FIFO")
    print(f"price paid: reverse auction = {v2[4] / fix[4]:.3f} x the fixed-price baseline "
          f"({v2[4] / ref_h:.1f} vs {fix[4] / ref_h:.1f} per reference GPU-hour of work)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--baseline-tasks", type=int, default=2_000)
    parser.add_argument("--sim-providers", type=int, default=400)
    parser.add_argument("--sim-jobs", type=int, default=3_000)
    parser.add_argument("--load", type=float, default=0.9)
    parser.add_argument("--max-duration", type=float, default=4 * 3600.0,
                        help="trace durations capped at this many seconds (the trace's tail runs for months)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds")
    args = parser.parse_args()
    if args.quick:
        args.providers, args.tasks, args.baseline_tasks = 2_000, 10_000, 300
        args.sim_providers, args.sim_jobs = 100, 500
    bench_decisions(args, random.Random(args.seed))
    bench_simulation(args, random.Random(args.seed + 1))


if __name__ == "__main__":
    main()
