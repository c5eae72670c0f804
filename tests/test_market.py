"""The market: quotes (pure), deadline-priced scheduling, and the view over real sockets (gRPC,
the dashboard's JSON, and its page in headless Chromium)."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from coordinator.dashboard import Dashboard
from coordinator.market.quote import Work, quote
from coordinator.market.throughput import Rate, Throughput
from coordinator.market.view import quantile
from coordinator.models import GpuSpec
from coordinator.scheduling.rules import Candidate, Demand
from coordinator.scheduling.scheduler import PendingTask, Scheduler
from gpumesh.client import Client
from gpumesh.jobspec import JobSpec, Requirements
from tests.conftest import ServerThread
from tests.scripted import ScriptedProvider
from tests.test_dashboard import XSS, api, browser_page, get

H100, A10, T4 = GpuSpec("NVIDIA H100", 81_559), GpuSpec("NVIDIA A10", 23_028), GpuSpec("Tesla T4", 15_360)
SPEED = {"NVIDIA H100": 3.2, "NVIDIA A10": 0.4, "Tesla T4": 0.21}


def cand(pid, gpu, price, *, free=1, busy_s=0.0, tier="OPEN", cached=()):
    return Candidate(pid, (gpu,), 64_000, price, free, frozenset(cached), reliability=1.0, operator=pid, tier=tier,
                     speed=SPEED[gpu.name], busy_s=busy_s)


def work(tasks=20, prior=60.0):
    return Work("inference", tasks * 16, tasks, 0, tasks * 16 * 256, prior)


# ---- quotes (pure) ---------------------------------------------------------------------------


def test_a_later_deadline_buys_cheaper_capacity_and_a_tight_one_needs_fallback():
    # H100s are dearer per hour but cheaper per unit of work; A10s are free now, the H100 is busy.
    market = [cand("a1", A10, 1500), cand("a2", A10, 1600), cand("h1", H100, 9000, free=0, busy_s=600)]
    d = Demand(Requirements(), 0, "bafymodel")
    asap = quote(work(), d, market, {}, now=0.0)
    day = quote(work(), d, market, {}, now=0.0, deadline_s=86_400)
    assert asap.servable and day.servable
    assert day.cost_expected < asap.cost_expected  # waiting for the H100 is cheaper
    assert day.chosen.key == "h100" and day.eta_s > asap.eta_s
    assert {c.key for c in asap.classes if c.chosen} >= {"a10"}
    assert asap.cost_low < asap.cost_expected < asap.cost_high
    costs = [quote(work(), d, market, {}, now=0.0, deadline_s=s).cost_expected for s in (1500, 3600, 86_400)]
    assert costs == sorted(costs, reverse=True)  # never dearer for a later deadline

    tight = quote(work(), d, market, {}, now=0.0, deadline_s=60)
    assert tight.fallback_needed and "can finish within 60 s" in tight.fallback_reason
    never = quote(work(), Demand(Requirements(), 0, "bafymodel", fallback="never"), market, {}, now=0.0, deadline_s=60)
    assert "the deadline would be missed" in never.fallback_reason


def test_measured_throughput_replaces_the_prior_and_narrows_the_band():
    market = [cand("a1", A10, 3600)]
    d = Demand(Requirements(), 0, "bafymodel", )
    w = work(tasks=1, prior=1000.0)
    prior = quote(w, d, market, {}, now=0.0)
    measured = quote(w, d, market, {"a10": Rate(tokens_per_s=40.96, fill=0.5, samples=5)}, now=0.0)
    assert prior.basis == "prior" and measured.basis == "measured"
    # 4096 tokens at most, half of it used at 40.96 tok/s: 50 s (+120 s model fetch), at 1 unit/s
    assert measured.cost_expected == 170 and measured.eta_s == pytest.approx(170.0)
    assert measured.cost_high >= 2 * 50 + 120  # every line to its max_tokens stays within the band
    assert (measured.cost_high - measured.cost_low) / measured.cost_expected < \
        (prior.cost_high - prior.cost_low) / prior.cost_expected


def test_a_model_no_provider_can_fit_is_answered_with_the_missing_memory():
    market = [cand("a1", A10, 1500), cand("t1", T4, 500)]
    d = Demand(Requirements(model_memory_mb=80_000, min_memory_mb=0), 0, "bafymodel")
    q = quote(work(), d, market, {}, now=0.0)
    assert not q.servable and q.cost_expected == 0
    assert q.reason == ("no provider can fit this model: it needs 80000 MiB of GPU memory, and the largest verified "
                        "GPU online has 23028 MiB (NVIDIA A10), 56972 MiB short")
    assert quote(work(), d, [], {}, now=0.0).reason == "no provider is connected"


def test_throughput_caps_what_a_provider_reports_at_its_lines_ceiling():
    t = Throughput(window_s=100)
    t.observe(kind="inference", cls="a10", tokens=10**9, ceiling=512, seconds=2.0, now=0.0)  # inflated
    t.observe(kind="inference", cls="a10", tokens=256, ceiling=512, seconds=2.0, now=50.0)
    r = t.rates(60.0)["a10"]
    assert r.samples == 2 and r.tokens_per_s == pytest.approx(192.0) and r.fill == pytest.approx(0.75)
    assert t.rates(140.0)["a10"].samples == 1  # the first left the window
    assert [quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], q) for q in (0.1, 0.5, 0.9)] == [1, 5, 9]


# ---- deadline-priced scheduling -------------------------------------------------------------


def _task(deadline):
    return PendingTask("t1", "j1", Demand(Requirements(), 0, "", deadline=deadline, expected_s=300.0))


def test_the_scheduler_waits_for_cheaper_capacity_only_while_the_deadline_allows():
    market = [cand("a1", A10, 1500), cand("h1", H100, 9000, free=0, busy_s=600)]
    # a day left: the busy H100 (cheaper per unit of work) will free and still finish in time
    s = Scheduler(market, now=0.0)
    assert s.decide(_task(86_400.0)) is None
    assert s.plan.waiting["t1"].startswith("waiting for cheaper capacity that meets the deadline (9000/h")
    # 1000 s left: waiting would leave the free A10 no time to finish if the H100 were late
    s = Scheduler(market, now=0.0)
    assert s.decide(_task(1_000.0)).provider_id == "a1"
    # no deadline: free capacity at once, as before
    assert Scheduler(market, now=0.0).decide(_task(None)).provider_id == "a1"
    # an unknown wait never counts
    unknown = [cand("a1", A10, 1500), cand("h1", H100, 9000, free=0, busy_s=0.0)]
    assert Scheduler(unknown, now=0.0).decide(_task(86_400.0)).provider_id == "a1"


def test_waiting_tasks_queue_on_the_busy_provider_they_count_on():
    market = [cand("a1", A10, 1500, free=8), cand("h1", H100, 9000, free=0, busy_s=600)]
    s = Scheduler(market, now=0.0)
    # each waiting task takes the H100's next run; once they would overrun the deadline, A10s serve
    deadline = 600 + 5 * (300 / 3.2) + 300 / 0.4  # room for 5 tasks after the wait, leaving the A10 time
    placed = [s.decide(PendingTask(f"t{k}", "j1", Demand(Requirements(), 0, "", deadline=deadline, expected_s=300.0)))
              for k in range(8)]
    assert [p is None for p in placed] == [True] * 5 + [False] * 3


# ---- over real sockets -------------------------------------------------------------------------


@pytest.fixture
def market_stack(coordinator_settings):
    """A coordinator trusting claimed hardware (checks off) with three scripted providers."""
    settings = coordinator_settings.model_copy(update={"verify": False, "hardware_checks": False, "lease_ttl_s": 60.0})
    srv = ServerThread(settings).start()
    dash = Dashboard(srv.core, "127.0.0.1", 0, cache_s=0.05)
    srv.call(dash.start())
    srv.core.market.cache_s = 0.05
    providers = [ScriptedProvider(srv.target, name=XSS, price=9000),
                 ScriptedProvider(srv.target, name="a10-1", price=1500, gpus=(("NVIDIA A10", 23_028),), slots=2),
                 ScriptedProvider(srv.target, name="a10-2", price=2500, gpus=(("NVIDIA A10", 23_028),))]
    deadline = time.monotonic() + 10
    while len(srv.core.sessions.sessions()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield srv, dash, providers
    for p in providers:
        p.close()
    srv.call(dash.stop())
    srv.stop()


def test_market_and_quotes_over_grpc_and_http(market_stack):
    srv, dash, providers = market_stack
    with Client.connect(srv.target) as client:
        m = client.market()
        by = {c.key: c for c in m.classes}
        assert [c.key for c in m.classes] == ["h100", "a10"]  # fastest first
        assert (by["a10"].providers, by["a10"].slots_total, by["a10"].slots_free) == (2, 3, 3)
        assert (by["a10"].price_min, by["a10"].price_p50, by["a10"].price_p90) == ("1500", "1500", "2500")
        assert by["h100"].price_p50 == "9000" and by["h100"].memory_mb == 81_559 and m.queue_depth == 0

        model = client.upload(b"GGUF" + bytes(60))
        big_name = f"{client.wallet.address}/big-model"
        client.add_model(big_name, model, min_memory_mb=90_000)
        spec = JobSpec(name="q", model_cid=client.upload(b"other model"), input_cid="bafkqaaa")
        asap = client.quote(spec, requests=1000)
        day = client.quote(spec, requests=1000, deadline_s=86_400)
        assert asap.servable and asap.tasks == 63 and asap.output_tokens == 1000 * 32
        assert int(day.cost_expected) <= int(asap.cost_expected)
        assert int(asap.cost_low) < int(asap.cost_expected) < int(asap.cost_high)
        assert any(c.chosen for c in asap.classes) and asap.basis == "prior"
        big = client.quote(JobSpec(name="q", model_cid=model, input_cid="bafkqaaa"), requests=10)
        assert not big.servable and "needs 90000 MiB of GPU memory" in big.reason and "8441 MiB short" in big.reason
        from gpumesh.errors import InvalidArgument as Bad

        with pytest.raises(Bad) as err:
            client.quote(spec, requests=0)
        assert err.value.field == "requests"

    view = api(dash, "/api/market")
    assert [c["key"] for c in view["classes"]] == ["h100", "a10"] and view["providers"] == 3
    assert view["classes"][1]["price_p90"] == "2500" and view["fallback"]["centralized_providers"] == 0
    q = api(dash, f"/api/quote?model={urllib.parse.quote(big_name)}&requests=10")
    assert q["servable"] is False and "8441 MiB short" in q["reason"]
    q = api(dash, "/api/quote?model=bafkqaaa&requests=100&max_tokens=64&deadline=1h")
    assert q["servable"] and q["deadline_s"] == 3600 and q["output_tokens"] == 6400
    status, _, body = get(dash, "/api/quote?model=bafkqaaa&requests=ten")
    assert status == 400 and json.loads(body)["field"] == "requests"
    status, _, body = get(dash, "/api/quote?model=bafkqaaa&requests=1&deadline=soon")
    assert status == 400 and json.loads(body)["field"] == "deadline"
    status, _, body = get(dash, "/api/quote?model=no-such-model&requests=1")
    assert status == 404 and json.loads(body)["field"] == "model"


def test_the_market_endpoint_is_rate_limited_per_peer(coordinator_settings):
    limits = coordinator_settings.rate_limits.model_copy(update={"read_per_s": 0.01, "read_burst": 3})
    srv = ServerThread(coordinator_settings.model_copy(update={"rate_limits": limits})).start()
    dash = Dashboard(srv.core, "127.0.0.1", 0)
    srv.call(dash.start())
    try:
        codes = [get(dash, "/api/market")[0] for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        status, headers, _ = get(dash, "/api/market")
        assert status == 429 and int(headers["Retry-After"]) >= 1
    finally:
        srv.call(dash.stop())
        srv.stop()


def test_the_market_page_charts_the_classes_and_quotes(market_stack):
    srv, dash, providers = market_stack
    with browser_page() as page:
        from playwright.sync_api import expect

        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
        page.goto(dash.url + "market")
        rows = page.locator("#classes tbody tr.class-row")
        expect(rows).to_have_count(2)
        expect(rows.nth(0).locator("td").nth(0)).to_have_text("NVIDIA H100")
        expect(rows.nth(1).locator("td").nth(3)).to_have_text("3 of 3")
        expect(page.locator("#m-providers")).to_have_text("3")
        expect(page.locator('#chart-prices rect[data-class="a10"]')).to_have_count(1)
        expect(page.locator("#chart-throughput text.empty")).to_contain_text("no finished task")

        page.fill("#q-model", "bafkqaaa")
        page.fill("#q-requests", "200")
        page.fill("#q-deadline", "24h")
        page.click("#quote-form button")
        expect(page.locator("#quote-result")).to_contain_text("13 task(s)")
        expect(page.locator("#quote-classes tbody tr")).to_have_count(2)
        expect(page.locator("#quote-classes tbody")).to_contain_text("chosen")
        page.fill("#q-deadline", "never")
        page.click("#quote-form button")
        expect(page.locator("#quote-result")).to_contain_text("Quote failed: deadline:")
        assert not [p for p in problems if "400" not in p], problems


def test_the_cli_quotes_batch_files_and_a_job_keeps_its_quote_next_to_its_cost(market_stack, tmp_path):
    from click.testing import CliRunner

    from gpumesh.cli.main import main

    srv, dash, providers = market_stack
    with Client.connect(srv.target) as client:
        small = client.upload(b"GGUF" + bytes(60))
        client.add_model(f"{client.wallet.address}/small", small)
        big = client.upload(b"GGUF" + bytes(61))
        client.add_model(f"{client.wallet.address}/big", big, min_memory_mb=90_000)
        batch = tmp_path / "batch.jsonl"
        lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": f"{client.wallet.address}/small", "max_tokens": 100,
                           "messages": [{"role": "user", "content": "x" * 40}]}} for i in range(50)]
        batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
        run = CliRunner().invoke(main, ["quote", str(batch), "-c", srv.target, "--deadline", "24h"])
        assert run.exit_code == 0, run.output
        assert "50 requests in 4 task(s): ~500 prompt tokens, at most 5,000 output tokens" in run.output
        assert "deadline 24.0 h" in run.output and "chosen" in run.output and "NVIDIA A10" in run.output
        as_json = json.loads(CliRunner().invoke(main, ["quote", str(batch), "-c", srv.target, "--json"]).output)
        assert as_json["servable"] and int(as_json["cost_expected"]) > 0

        batch.write_text(batch.read_text().replace("/small", "/big"))
        run = CliRunner().invoke(main, ["quote", str(batch), "-c", srv.target])
        assert run.exit_code == 1 and "cannot be served: no provider can fit this model" in run.output
        assert "8441 MiB short" in run.output and "Traceback" not in run.output
        run = CliRunner().invoke(main, ["quote", str(batch), "-c", srv.target, "--deadline", "soon"])
        assert run.exit_code == 1 and "--deadline: expected a duration" in run.output

        # a submitted job carries the quote it was given, and reports its cost when done
        data = "".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(3)).encode()
        handle = client.submit(JobSpec(name="j", model_cid=small, input_cid=client.upload(data), shard_size=8,
                                       requirements=Requirements(gpu_count=1, gpu_models=("A10",))))
        lease = providers[1].next("lease")
        providers[1].answer(lease, client)
        done = handle.wait(timeout=30)
        assert done.state == "COMPLETED"
        job = client.get_job(handle.id).raw
        assert job.quote.servable and job.quote.tasks == 1 and int(job.quote.cost_expected) > 0
        assert [c.key for c in job.quote.classes] == ["a10"]  # what the job's requirements admit
        assert int(job.cost) >= 1  # price x the measured lease-to-result time, rounded up
