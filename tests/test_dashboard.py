"""The coordinator's dashboard: its views (pure), its JSON API on a real coordinator, and the page
itself in headless Chromium following a job driven through the real gRPC API."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from coordinator.dashboard import Dashboard, parse_listen
from coordinator.dashboard import views
from coordinator.models import (
    GpuSpec,
    Job,
    JobProgress,
    JobState,
    ProviderRecord,
    ProviderTier,
    SettlementState as S,
    Task,
    TaskRole,
    TaskState,
)
from coordinator.settlement.payouts import TaskCharge, job_payout
from coordinator.settlement.settler import BatchPolicy, Settler
from coordinator.store.base import Charge, Slash, SlashState, VerificationUpdate
from gpumesh.client import Client
from gpumesh.errors import InvalidArgument
from gpumesh.jobspec import JobSpec
from tests.conftest import ServerThread
from tests.scripted import ScriptedProvider

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
XSS = "<img src=x onerror=alert(1)>"
CHROMIUM = os.environ.get("GPUMESH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _record(pid="prov_a", *, name="alice", tier=ProviderTier.OPEN, price=10, gpus=(), **kw) -> ProviderRecord:
    return ProviderRecord(pid, "0x" + pid[-1] * 40, name, "{}", tuple(gpus), 8, 64_000, price, tier, 1, "process",
                          False, **kw)


def _job(job_id="job_1", *, state=JobState.RUNNING, budget=0, tasks=2, name="job") -> Job:
    return Job(job_id, JobSpec(name=name, model_cid=CID, input_cid=CID), state, tasks, tasks * 2, 100.0, 101.0,
               budget=budget, submitter="0x" + "ee" * 20)


# ---- views (pure) ------------------------------------------------------------------------------------


def test_request_parameters_are_checked_and_name_their_field():
    assert views.parse_limit(None, default=50, maximum=200) == 50
    assert views.parse_limit("200", default=50, maximum=200) == 200
    for bad in ("0", "201", "-1", "1e3", "ten"):
        with pytest.raises(InvalidArgument) as err:
            views.parse_limit(bad, default=50, maximum=200)
        assert err.value.field == "limit"
    assert views.parse_job_state("running") is JobState.RUNNING and views.parse_job_state("") is None
    with pytest.raises(InvalidArgument, match="QUEUED"):
        views.parse_job_state("DONE")
    job = _job()
    assert views.parse_job_cursor(views.job_cursor(job)) == (job.created_at, job.job_id)
    for bad in ("nan~job_1", "100.0", "x~job", "100.0~"):
        with pytest.raises(InvalidArgument):
            views.parse_job_cursor(bad)
    task = Task("job_1-t00003", "job_1", 3, TaskState.QUEUED, CID, 1)
    assert views.parse_task_cursor(views.task_cursor(task)) == (3, "job_1-t00003")
    with pytest.raises(InvalidArgument):
        views.parse_task_cursor("-1~t")
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080) and parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    with pytest.raises(InvalidArgument):
        parse_listen("localhost")


def test_provider_view_shows_reputation_as_the_scheduler_ranks_it():
    fresh = views.provider_view(_record(), None, now=1000.0, half_life_s=1e9, max_invalid_rate=0.1)
    assert fresh["connected"] is False and fresh["where"] == ""
    assert fresh["reputation"]["mean"] == 0.5 and fresh["reputation"]["lower"] == pytest.approx(0.05)
    assert fresh["reputation"]["eligible"] and not fresh["reputation"]["trusted"]
    assert fresh["gpu_summary"] == "CPU only"
    good = views.provider_view(
        _record(rep_alpha=21.0, rep_updated_at=1000.0, tasks_completed=20, total_valid=20, price=150 * 10**18,
                gpus=(GpuSpec("H100", 81_559), GpuSpec("H100", 81_559))),
        views.Live("here", running=1, gpu_utilization=(87.0, 5.0)), now=1000.0, half_life_s=1e9, max_invalid_rate=0.1)
    assert good["connected"] and good["where"] == "here" and good["running"] == 1
    assert good["reputation"]["lower"] > 0.8 > fresh["reputation"]["lower"]
    assert good["price_per_hour"] == str(150 * 10**18)  # beyond int64 and JavaScript numbers: a string
    assert good["gpu_summary"] == "2x H100 (80 GB)" and good["gpu_utilization"] == [87.0, 5.0]
    cheat = views.provider_view(_record(rep_beta=4.0, rep_updated_at=1000.0, total_invalid=3), None, now=1000.0,
                                half_life_s=1e9, max_invalid_rate=0.1)
    assert cheat["tasks_rejected"] == 3 and not cheat["reputation"]["eligible"]
    ops = views.provider_view(_record(tier=ProviderTier.CENTRALIZED, rep_beta=4.0), None, now=1000.0,
                              half_life_s=1e9, max_invalid_rate=0.1)
    assert ops["reputation"]["trusted"] and ops["reputation"]["eligible"]
    assert "hardware_json" not in good and not any("token" in k for k in good)


def test_job_cost_is_what_the_settler_would_pay_capped_at_the_budget():
    charges = [Charge("job_1", "prov_a", "0x" + "a" * 40, "alice", 3600, 10.0, 1),
               Charge("job_1", "prov_b", "0x" + "b" * 40, "bob", 7200, 0.5, 1)]
    progress = JobProgress({TaskState.SUBMITTED: 1, TaskState.LEASED: 1})
    free = views.job_view(_job(), progress, charges)  # no escrow: uncapped
    assert free["cost"] == "11" and free["budget"] == "0"
    assert (free["tasks_done"], free["tasks_running"], free["progress"]) == (1, 1, 0.5)
    settler = job_payout([TaskCharge("t1", "0x" + "a" * 40, 3600, 10.0), TaskCharge("t2", "0x" + "b" * 40, 7200, 0.5)],
                         budget=1000)
    assert views.owed(charges, 1000) == settler  # one task per provider: exactly the settler's figures
    capped = views.job_view(_job(budget=5), progress, charges)
    assert capped["cost"] == "4"  # scaled down as the settler does (10*5//11 + 1*5//11): never over the escrow
    assert views.job_view(_job(), None, ())["cost"] == "0" and views.job_view(_job(), None, ())["progress"] == 0.0


def test_a_running_job_does_not_tell_which_of_its_tasks_are_checked():
    primary = Task("job_1-t0", "job_1", 0, TaskState.SUBMITTED, CID, 2, verdict="checking (replica)",
                   leased_at=10.0, submitted_at=14.5)
    check = Task("job_1-t0-c", "job_1", 0, TaskState.QUEUED, CID, 2, role=TaskRole.REPLICA, verifies="job_1-t0")
    running = views.job_detail_view(_job(), None, (), [primary], [check], next_after=None)
    assert running["tasks"][0]["verdict"] == "" and running["checks"] == [] and running["checks_hidden"]
    assert running["tasks"][0]["seconds"] == 4.5
    done = views.job_detail_view(_job(state=JobState.COMPLETED), None, (), [primary], [check], next_after="0~x")
    assert done["tasks"][0]["verdict"] == "checking (replica)" and done["checks"][0]["role"] == "replica"
    assert done["next"] == "0~x" and not done["checks_hidden"]
    assert "signature" not in done["tasks"][0] and "check_json" not in done["checks"][0]


def test_payouts_per_job_and_per_provider_with_slashes():
    a, b = "0x" + "a" * 40, "0x" + "b" * 40
    jobs = [_job("job_2", state=JobState.COMPLETED, budget=100), _job("job_1", state=JobState.COMPLETED, budget=10)]
    charges = [Charge("job_1", "prov_a", a, "alice", 3600, 20.0, 2),  # 20 owed, over the budget of 10
               Charge("job_2", "prov_a", a, "alice", 3600, 5.0, 1), Charge("job_2", "prov_b", b, "bob", 3600, 7.0, 1)]
    slash = Slash("prov_b", "job_2-t1", "job_2", b, 10, "0xbene", "<script>bad</script>", SlashState.DONE, 7, "0xtx")
    out = views.payouts_view(jobs, charges, [slash], {"prov_b": "bob"}, {})  # no escrow: no claims bound them
    assert [j["job_id"] for j in out["jobs"]] == ["job_2", "job_1"]
    j2, j1 = out["jobs"]
    assert (j2["paid"], j2["refund"], [p["amount"] for p in j2["payouts"]]) == ("12", "88", ["5", "7"])
    assert (j1["paid"], j1["refund"], j1["payouts"][0]["name"]) == ("10", "0", "alice")
    assert out["providers"] == [
        {"address": a, "provider_id": "prov_a", "name": "alice", "amount": "15", "jobs": 2},
        {"address": b, "provider_id": "prov_b", "name": "bob", "amount": "7", "jobs": 1}]
    (s,) = out["slashes"]
    assert (s["name"], s["amount"], s["slashed_amount"], s["state"], s["reason"]) == (
        "bob", "10", "7", "DONE", "<script>bad</script>")  # escaping is the page's job: it renders text


# ---- the JSON API on a real coordinator --------------------------------------------------------------


@pytest.fixture
def dashboard(coordinator_settings):
    """A coordinator (verification off: one provider suffices) with its dashboard on its loop."""
    settings = coordinator_settings.model_copy(update={"verify": False, "lease_ttl_s": 60.0})
    srv = ServerThread(settings).start()
    dash = Dashboard(srv.core, "127.0.0.1", 0, refresh_s=0.5, cache_s=0.1)
    srv.call(dash.start())
    yield srv, dash
    srv.call(dash.stop())
    srv.stop()


def get(dash: Dashboard, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(dash.url.rstrip("/") + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def api(dash: Dashboard, path: str) -> dict:
    status, _, body = get(dash, path)
    assert status == 200, body
    return json.loads(body)


def _submit(client: Client, prompts: int, *, name="job", shard_size=2) -> str:
    data = "".join(json.dumps({"prompt": f"prompt {i}"}) + "\n" for i in range(prompts)).encode()
    spec = JobSpec(name=name, model_cid=client.upload(b"model bytes"), input_cid=client.upload(data),
                   shard_size=shard_size)
    return client.submit(spec).id


def test_the_api_serves_bounded_pages_and_refuses_bad_requests(dashboard):
    srv, dash = dashboard
    with Client.connect(srv.target) as client:
        ids = [_submit(client, 2, name=f"job {i}") for i in range(3)]
        summary = api(dash, "/api/summary")
        assert summary["queue_depth"] == 3 and summary["tasks"] == {"QUEUED": 3}
        assert summary["leader"] is True and summary["providers_connected"] == 0 and summary["refresh_s"] == 0.5
        first = api(dash, "/api/jobs?limit=2")
        assert [j["job_id"] for j in first["jobs"]] == ids[:0:-1]  # newest first
        assert first["jobs"][0]["state"] == "QUEUED" and first["jobs"][0]["submitter"] == client.wallet.address
        rest = api(dash, f"/api/jobs?limit=2&before={urllib.request.quote(first['next'])}")
        assert [j["job_id"] for j in rest["jobs"]] == ids[:1] and rest["next"] is None
        assert api(dash, "/api/jobs?state=running")["jobs"] == []
        detail = api(dash, f"/api/jobs/{ids[0]}?limit=1")
        assert [t["index"] for t in detail["tasks"]] == [0] and detail["next"] is None and detail["checks_hidden"]
        provider = ScriptedProvider(srv.target, name="alice", price=100)
        try:
            provider.next("lease")
            page = api(dash, "/api/providers")
            (p,) = page["providers"]
            assert (p["provider_id"], p["connected"], p["where"], p["gpu_summary"]) == (
                provider.provider_id, True, "here", "1x H100 (80 GB)")
            assert p["running"] == 1 and page["next"] is None
            everything = b"".join(get(dash, path)[2] for path in (
                "/api/summary", "/api/providers", "/api/jobs", f"/api/jobs/{ids[0]}", "/api/payouts"))
            assert provider.session_token.encode() not in everything  # no secrets, whatever the call
            for key in (b'"signature"', b'"escrow_key"', b'"hardware_json"', b'"session', b'"check_json"'):
                assert key not in everything
        finally:
            provider.close()
    for path, field in (("/api/jobs?limit=0", "limit"), ("/api/jobs?state=DONE", "state"),
                        ("/api/jobs?before=yesterday", "before"), ("/api/providers?limit=9999", "limit"),
                        (f"/api/jobs/{ids[0]}?after=-1", "after")):
        status, headers, body = get(dash, path)
        assert status == 400 and json.loads(body)["field"] == field, (path, body)
        assert headers["Content-Type"].startswith("application/json")
    status, _, body = get(dash, "/api/jobs/job_nope")
    assert status == 404 and "job_nope" in json.loads(body)["error"]
    assert get(dash, "/api/summary", method="POST")[0] == 405  # read-only
    assert get(dash, "/static/../config.py")[0] == 404 and get(dash, "/static/")[0] in (403, 404)
    status, headers, body = get(dash, "/")
    assert status == 200 and b'src="/static/app.js"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    assert get(dash, "/static/app.js")[0] == 200 and get(dash, "/static/style.css")[0] == 200


def test_payouts_agree_with_what_the_settler_pays(dashboard):
    srv, dash = dashboard
    store = srv.core.store
    for pid, price in (("prov_a", 3600), ("prov_b", 7200)):
        store.upsert_provider(_record(pid, name=f"{pid} name", price=price))
    now = time.time()
    spec = JobSpec(model_cid=CID, input_cid=CID)
    for job_id, budget, key in (("job_paid", 10**6, "0x" + "01" * 32), ("job_capped", 5, "0x" + "02" * 32)):
        store.create_job(Job(job_id, spec, JobState.QUEUED, 2, 2, now, now, escrow_key=key, budget=budget),
                         [Task(f"{job_id}-t{i}", job_id, i, TaskState.QUEUED, CID, 1) for i in range(2)])
        for i, (pid, took) in enumerate((("prov_a", 7.25), ("prov_b", 3.5))):
            lease = store.lease_task(f"{job_id}-t{i}", pid, ttl=600, now=now)
            store.submit_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id=pid, output_cid=CID,
                                signature=b"s", metrics_json="{}", now=now + took)
        slash = Slash("prov_b", f"{job_id}-t1", job_id, "0x" + "b" * 40, 10, "", f"wrong in {job_id}")
        store.apply_verification(VerificationUpdate(job_id, slashes=[slash]), now=now + 9, half_life_s=1e9)
        store.finish_job(job_id, output_cid=CID, now=now + 10)
        for pid, claimed in (("prov_a", 10**6), ("prov_b", 1 if job_id == "job_paid" else 10**6)):
            store.record_claim(job_id, "0x" + pid[-1] * 40, claimed, b"sig")  # prov_b claimed less than it is owed
    store.queue_settlements(now=now + 11)
    store.set_settlement(["job_paid", "job_capped"], S.PENDING, S.SETTLED, now=now + 12, tx="0xfeed")

    class Registered:  # every payee is registered (the settler asks the chain)
        def is_registered(self, address: str) -> bool:
            return True

    settler = Settler(store, Registered(), BatchPolicy(), clock=time.time)
    page = api(dash, "/api/payouts")
    assert {j["job_id"] for j in page["jobs"]} == {"job_paid", "job_capped"}
    for row in page["jobs"]:
        expected, _ = settler.payout_for(store.get_job(row["job_id"]))
        assert row["paid"] == str(expected.paid) and row["refund"] == str(expected.refund)
        assert [(p["address"], p["amount"]) for p in row["payouts"]] == [(a, str(n)) for a, n in expected.payouts]
        assert row["settle_tx"] == "0xfeed"
    capped = next(j for j in page["jobs"] if j["job_id"] == "job_capped")
    assert (capped["paid"], capped["refund"]) == ("4", "1")  # 8 + 7 owed, scaled to the budget of 5 and floored
    assert [(p["name"], p["amount"], p["jobs"]) for p in page["providers"]] == [
        ("prov_a name", "10", 2), ("prov_b name", "3", 2)]  # over both jobs: 8 + 2 and min(7, its claim 1) + 2
    assert [(s["name"], s["state"], s["reason"]) for s in page["slashes"]] == [
        ("prov_b name", "PENDING", "wrong in job_capped"), ("prov_b name", "PENDING", "wrong in job_paid")]
    jobs = {j["job_id"]: j for j in api(dash, "/api/jobs")["jobs"]}
    paid = page["jobs"][[j["job_id"] for j in page["jobs"]].index("job_paid")]["paid"]
    assert (jobs["job_paid"]["cost"], paid) == ("15", "9")  # the work's price x time; what the claims let be paid
    assert jobs["job_paid"]["settlement"] == "SETTLED"


# ---- the page in headless Chromium -----------------------------------------------------------------------


@contextmanager
def browser_page():
    """A page of headless Debian Chromium, driven by Playwright (skipped where either is missing,
    unless GPUMESH_REQUIRE_BROWSER=1, as in CI)."""
    why = ""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "Python Playwright is not installed (pip install playwright)"
    if not why and not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if why:
        if os.environ.get("GPUMESH_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium.new_page(viewport={"width": 1440, "height": 1000})
        finally:
            chromium.close()


def test_the_page_follows_a_job_and_shows_names_as_text(dashboard, tmp_path):
    srv, dash = dashboard
    with Client.connect(srv.target) as client, browser_page() as page:
        from playwright.sync_api import expect

        problems: list[str] = []
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status} for {r.url}"))
        job_id = _submit(client, 2, name="<b>bold</b> job")
        page.goto(dash.url)
        page.evaluate("window.__loadedOnce = true")  # gone if the page reloaded: updates must come by polling
        job = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
        expect(job.locator(".state")).to_have_text("QUEUED")
        expect(job.locator("td.name")).to_have_text("<b>bold</b> job")
        expect(page.locator("#queue-depth")).to_have_text("1")
        expect(page.locator("#role")).to_have_text("leader")

        provider = ScriptedProvider(srv.target, name=XSS, price=3600)
        try:
            lease = provider.next("lease")
            row = page.locator(f'#providers tr[data-provider-id="{provider.provider_id}"]')
            expect(row.locator("td.name")).to_have_text(XSS)  # the markup shown as text
            expect(row.locator("td.conn")).to_have_text("connected")
            expect(page.locator("#providers-connected")).to_have_text("1")
            expect(job.locator(".state")).to_have_text("RUNNING")
            expect(job.locator(".progress")).to_contain_text("0/1")
            assert page.locator("main img, main b").count() == 0  # no element was made from a name

            provider.answer(lease, client)
            expect(job.locator(".state")).to_have_text("COMPLETED")
            output = client.get_job(job_id).raw.output_cid
            assert output
            expect(job.locator(".progress")).to_contain_text("1/1")
            expect(job.locator(".output")).to_have_text("yes")
            assert output not in page.content()  # no CID is shown to an anonymous viewer
            expect(row.locator("td.isolation")).to_have_text("process · unisolated")
            expect(job.locator("td.submitter")).to_have_attribute("title", client.wallet.address)
            expect(row.locator("td.tasks-done")).to_have_text("1")
            assert int(job.locator(".cost").inner_text().replace(",", "")) > 0  # 3600/h: one unit a second

            job.locator("a").click()  # the job's own panel, with its tasks
            expect(page.locator("#detail-id")).to_have_text(job_id)
            task = page.locator("#tasks tbody tr")
            expect(task).to_have_count(1)
            expect(task.locator(".state")).to_have_text("VERIFIED")
            expect(task.locator(".reason")).to_have_text("accepted unchecked (verification is off)")
            assert page.evaluate("window.__loadedOnce") is True
            assert int(page.evaluate("document.body.dataset.refreshes")) >= 3
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            provider.close()
        assert problems == []
