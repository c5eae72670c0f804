"""Quote against actual, on the trace simulation: is what ``gpumesh quote`` says what jobs cost?

Providers: ``--providers`` one-slot nodes drawn from Alibaba's GPU node inventory (as
``bench/scheduler.py``), open market only. Jobs: the trace's arrivals, GPU requests and durations
(``bench/data``), compressed to an offered load of ``--load``; each becomes one batch-inference
task whose lines allow ``duration x REF_TOKENS_PER_S / fill`` output tokens and use a ``fill``
share of them (drawn per job, unknown to the quote), generated at the provider's speed with +-15%
noise per run. A third of the jobs have a deadline of three times their work.

At each arrival the job is quoted by the production code (``coordinator.market.quote``) against the
market as it is then (free slots, expected waits, the throughput the market measured from jobs
finished so far: ``coordinator.market.throughput``), then scheduled by the production scheduler
(deadline-priced). Its actual cost is its provider's ask x its actual runtime (plus the model
fetch), its actual time arrival -> done. Printed: median and p90 relative error of cost and of
ETA, the share within +-20%, and how often the actual cost fell inside the quoted band.

    python bench/quote_accuracy.py            # seconds
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scheduler import load_jobs, providers, requirements  # noqa: E402

from coordinator.estimates import REF_TOKENS_PER_S, STARTUP_S  # noqa: E402
from coordinator.market.classes import device_class  # noqa: E402
from coordinator.market.quote import Work, quote  # noqa: E402
from coordinator.market.throughput import Throughput  # noqa: E402
from coordinator.scheduling.rules import Demand, reasons  # noqa: E402
from coordinator.scheduling.scheduler import PendingTask, Scheduler  # noqa: E402
from coordinator.scheduling.scoring import DEFAULT_WEIGHTS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--providers", type=int, default=120)
    ap.add_argument("--jobs", type=int, default=600)
    ap.add_argument("--load", type=float, default=0.7)
    ap.add_argument("--max-duration", type=float, default=2 * 3600.0)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cands = [replace(c, busy_s=0.0, free_slots=1, cached_models=frozenset())
             for c in providers(args.providers, rng, slots=1, central=0.0)]
    cands = [c for c in cands if c.eligible]
    trace = [(a, requirements(g, s), min(float(d), args.max_duration)) for a, g, s, d in load_jobs()[: args.jobs]]
    trace = [t for t in trace if any(not reasons(Demand(t[1], 0), c) for c in cands)]
    work_s = sum(d for _, _, d in trace)
    span = (trace[-1][0] - trace[0][0]) or 1.0
    scale = work_s / (args.load * len(cands)) / span
    jobs = []
    for k, (a, req, d) in enumerate(trace):
        fill = rng.uniform(0.3, 1.0)
        ceiling = int(max(1.0, d - STARTUP_S) * REF_TOKENS_PER_S / fill)
        deadline = 3 * d if k % 3 == 0 else None
        jobs.append(((a - trace[0][0]) * scale, req, ceiling, fill, deadline))

    by_id = {c.provider_id: c for c in cands}
    free = {c.provider_id: True for c in cands}
    ends: dict[str, float] = {}
    tput = Throughput(window_s=10 ** 9)
    events = [(a, 0, j, "") for j, (a, *_rest) in enumerate(jobs)]
    heapq.heapify(events)
    queue: list[int] = []
    quotes, actual_cost, start_at = {}, {}, {}
    cost_err, eta_err, in_band = [], [], 0
    fetch = DEFAULT_WEIGHTS.fetch_s

    def market(t: float):
        return [replace(c, free_slots=1 if free[c.provider_id] else 0,
                        busy_s=0.0 if free[c.provider_id] else max(1.0, ends[c.provider_id] - t)) for c in cands]

    def demand_of(j: int, t: float) -> Demand:
        _, req, ceiling, _, deadline = jobs[j]
        return Demand(req, 0, "bafymodel", deadline=jobs[j][0] + deadline if deadline else None,
                      expected_s=STARTUP_S + ceiling / REF_TOKENS_PER_S, fallback="never")

    while events:
        t, kind, j, pid = heapq.heappop(events)
        if kind == 0:
            a, req, ceiling, fill, deadline = jobs[j]
            w = Work("inference", 1, 1, 0, ceiling, STARTUP_S + ceiling / REF_TOKENS_PER_S)
            quotes[j] = quote(w, demand_of(j, t), market(t), tput.rates(t), now=t, deadline_s=deadline)
            queue.append(j)
        else:
            free[pid] = True
            c = by_id[pid]
            _, _, ceiling, fill, _ = jobs[j]
            tput.observe(kind="inference", cls=device_class(c.gpus).key, tokens=int(ceiling * fill), ceiling=ceiling,
                         seconds=t - start_at[j] - fetch, now=t)
            q = quotes[j]
            real = actual_cost[j]
            cost_err.append(abs(q.cost_expected - real) / max(real, 1e-9))
            eta_err.append(abs(q.eta_s - (t - jobs[j][0])) / max(t - jobs[j][0], 1e-9))
            in_band += q.cost_low <= real <= q.cost_high
        if events and events[0][0] == t:
            continue
        sched = Scheduler(market(t), now=t, rng=random.Random(0))
        for j2 in list(queue):
            a2 = sched.decide(PendingTask(str(j2), str(j2), demand_of(j2, t)))
            if a2 is None:
                continue
            queue.remove(j2)
            c = by_id[a2.provider_id]
            _, _, ceiling, fill, _ = jobs[j2]
            run = fetch + STARTUP_S / c.speed + ceiling * fill / (REF_TOKENS_PER_S * c.speed) * rng.uniform(0.85, 1.15)
            free[c.provider_id], ends[c.provider_id], start_at[j2] = False, t + run, t
            actual_cost[j2] = c.price_per_hour * run / 3600.0
            heapq.heappush(events, (t + run, 1, j2, c.provider_id))

    def med(xs):
        return statistics.median(xs) if xs else float("nan")

    def p90(xs):
        return sorted(xs)[int(0.9 * (len(xs) - 1))] if xs else float("nan")

    n = len(cost_err)
    measured = sum(1 for q in quotes.values() if q.basis == "measured")
    print(f"trace simulation: {n} jobs on {len(cands)} one-slot providers, offered load {args.load}, "
          f"{measured} quotes on measured throughput ({n - measured} on the prior)")
    print(f"{'':<10}{'median err':>12}{'p90 err':>10}{'within 20%':>12}")
    print(f"{'cost':<10}{med(cost_err):>12.1%}{p90(cost_err):>10.1%}{sum(e <= 0.2 for e in cost_err) / n:>12.1%}")
    print(f"{'ETA':<10}{med(eta_err):>12.1%}{p90(eta_err):>10.1%}{sum(e <= 0.2 for e in eta_err) / n:>12.1%}")
    print(f"actual cost inside the quoted band: {in_band / n:.1%}")
    print(f"target: median cost error within 20%: {'met' if med(cost_err) <= 0.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
