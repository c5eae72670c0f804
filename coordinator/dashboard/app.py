"""The dashboard's HTTP server, on the coordinator's own event loop (aiohttp).

Read-only: GET only, JSON under ``/api/``, one page and its static files, nothing fetched from
elsewhere (a Content-Security-Policy of 'self' only). Live state (sessions, leadership) is read
on the loop; store queries, all bounded pages, run in a worker thread so a slow database never
stalls the coordinator. Answers are kept ``cache_s`` (default 1 s), so many open pages cost the
store no more than one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

from coordinator.dashboard import views
from coordinator.market.quote_request import quote_args
from coordinator.ratelimit import retry_after_s
from coordinator.models import SettlementState, TaskState
from gpumesh.errors import GpumeshError, InvalidArgument, NotFound

if TYPE_CHECKING:
    from coordinator.core import Coordinator

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CHARGED = (TaskState.SUBMITTED, TaskState.VERIFIED, TaskState.SETTLED)  # results a job is charged for
MAX_CACHED = 256
HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATUS = {InvalidArgument: 400, NotFound: 404}


def parse_listen(listen: str, *, field: str = "dashboard_listen") -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6; port 0 picks a free one) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"expected host:port, got {listen!r}", field=field)
    return host.strip("[]") or "127.0.0.1", int(port)


class Dashboard:
    """``await start()`` serves ``core``'s dashboard on ``host:port`` (``port`` is the bound one
    after start); ``await stop()``."""

    def __init__(self, core: Coordinator, host: str = "127.0.0.1", port: int = 0, *,
                 refresh_s: float = 3.0, cache_s: float = 1.0) -> None:
        self.core = core
        self.host = host
        self.port = port
        self.refresh_s = refresh_s
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._runner: web.AppRunner | None = None
        s = core.settings
        self._limiter = s.rate_limits.limiter("read", time.monotonic) if s.rate_limit else None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/market", self._market_page)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        api = {
            "/api/summary": self._summary,
            "/api/providers": self._providers,
            "/api/jobs": self._jobs,
            "/api/jobs/{job_id}": self._job,
            "/api/payouts": self._payouts,
        }
        for path, build in api.items():
            app.router.add_get(path, self._json(build))
        # Public and unauthenticated (submitters and GPU owners read them): rate-limited per peer.
        app.router.add_get("/api/market", self._limited(self._json(self._market)))
        app.router.add_get("/api/quote", self._limited(self._json(self._quote)))
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(f"dashboard cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        self.port = self._runner.addresses[0][1]
        log.info("dashboard on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- plumbing ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except GpumeshError as exc:
            status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
            response = web.json_response({"error": exc.message, "field": exc.field}, status=status)
        except web.HTTPException as exc:  # unknown path, wrong method: aiohttp's answer, our headers
            exc.headers.update(HEADERS)
            raise
        except Exception:
            log.exception("dashboard request %s failed", request.path)
            response = web.json_response({"error": "internal error (see the coordinator's log)"}, status=500)
        response.headers.update(HEADERS)
        return response

    def _json(self, build: Callable[[web.Request], Awaitable[dict[str, Any]]]):
        async def handle(request: web.Request) -> web.Response:
            key = request.path_qs
            now = time.monotonic()
            hit = self._cache.get(key)
            if hit is None or hit[0] <= now:
                body = json.dumps(await build(request), separators=(",", ":")).encode()
                if len(self._cache) >= MAX_CACHED:
                    self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                    if len(self._cache) >= MAX_CACHED:
                        self._cache.clear()
                hit = self._cache[key] = (now + self.cache_s, body)
            return web.Response(body=hit[1], content_type="application/json")

        return handle

    def _limited(self, handler):
        """429 with Retry-After past the coordinator's ``read`` limit, per peer address."""
        async def handle(request: web.Request) -> web.StreamResponse:
            if self._limiter is not None:
                wait = self._limiter.allow(request.remote or "")
                if wait > 0:
                    return web.json_response({"error": "rate limited: retry later"}, status=429,
                                             headers={"Retry-After": retry_after_s(wait)})
            return await handler(request)

        return handle

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _market_page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "market.html")

    def _live(self) -> dict[str, views.Live]:
        """This replica's sessions (read on the loop, which owns them)."""
        return {s.record.provider_id: views.Live("here", len(s.running),
                                                 tuple(t.utilization_pct for t in s.telemetry))
                for s in self.core.sessions.sessions()}

    # ---- endpoints ----------------------------------------------------------------------------

    async def _summary(self, request: web.Request) -> dict[str, Any]:
        core = self.core
        here = core.sessions.sessions()
        leases, leader = sum(len(s.running) for s in here), core.is_leader

        def read():
            remote = core.remote_providers()
            return views.summary_view(
                core.store.task_counts(), providers_connected=len(here) + len(remote), providers_here=len(here),
                leases_running=leases, leader=leader, replica_id=core.replica_id, settles=core.chain is not None,
                refresh_s=self.refresh_s, now=core.clock())

        return await asyncio.to_thread(read)

    async def _providers(self, request: web.Request) -> dict[str, Any]:
        limit = views.parse_limit(request.query.get("limit"), default=100, maximum=500)
        after = request.query.get("after", "")
        if len(after) > views.MAX_ID:
            raise InvalidArgument("not a provider id", field="after")
        core, live = self.core, self._live()

        def read():
            remote = core.remote_providers()
            page = core.store.page_providers(limit=limit + 1, after=after)
            now, s = core.clock(), core.settings
            rows = []
            for record in page[:limit]:
                seen = live.get(record.provider_id)
                if seen is None and record.provider_id in remote:
                    p = remote[record.provider_id]
                    seen = views.Live(f"replica {p.replica_id}", p.leased)
                rows.append(views.provider_view(record, seen, now=now, half_life_s=s.reputation_half_life_s,
                                                max_invalid_rate=s.max_invalid_rate))
            return {"providers": rows, "next": page[limit - 1].provider_id if len(page) > limit else None}

        return await asyncio.to_thread(read)

    async def _jobs(self, request: web.Request) -> dict[str, Any]:
        q = request.query
        state = views.parse_job_state(q.get("state"))
        limit = views.parse_limit(q.get("limit"), default=50, maximum=200)
        before = views.parse_job_cursor(q.get("before"))
        store = self.core.store

        def read():
            page = store.recent_jobs(state=state, limit=limit + 1, before=before)
            jobs = page[:limit]
            ids = [j.job_id for j in jobs]
            progress = store.jobs_progress(ids)
            charges: dict[str, list] = {}
            for c in store.job_charges(ids, CHARGED):
                charges.setdefault(c.job_id, []).append(c)
            return {
                "jobs": [views.job_view(j, progress.get(j.job_id), charges.get(j.job_id, ())) for j in jobs],
                "next": views.job_cursor(jobs[-1]) if len(page) > limit else None,
            }

        return await asyncio.to_thread(read)

    async def _job(self, request: web.Request) -> dict[str, Any]:
        job_id = views.check_id(request.match_info["job_id"], field="job_id")
        limit = views.parse_limit(request.query.get("limit"), default=200, maximum=1000)
        after = views.parse_task_cursor(request.query.get("after"))
        store = self.core.store

        def read():
            job = store.get_job(job_id)
            tasks = store.page_tasks(job_id, limit=limit + 1, after=after)
            checks = store.page_tasks(job_id, checks=True, limit=limit) if job.state.is_terminal() else []
            return views.job_detail_view(
                job, store.jobs_progress([job_id]).get(job_id), store.job_charges([job_id], CHARGED), tasks[:limit],
                checks, next_after=views.task_cursor(tasks[limit - 1]) if len(tasks) > limit else None)

        return await asyncio.to_thread(read)

    async def _payouts(self, request: web.Request) -> dict[str, Any]:
        limit = views.parse_limit(request.query.get("limit"), default=50, maximum=200)
        store = self.core.store

        def read():
            jobs = store.latest_in_settlement(SettlementState.SETTLED, limit)
            charges = store.job_charges([j.job_id for j in jobs], (TaskState.SETTLED,))
            slashes = store.recent_slashes(limit)
            names = {c.provider_id: c.name for c in charges}
            for pid in {s.provider_id for s in slashes} - names.keys():
                try:
                    names[pid] = store.get_provider(pid).name
                except NotFound:
                    names[pid] = ""
            claims = {j.job_id: store.claims_of(j.job_id) for j in jobs}
            return {**views.payouts_view(jobs, charges, slashes, names, claims), "limit": limit}

        return await asyncio.to_thread(read)

    async def _market(self, request: web.Request) -> dict[str, Any]:
        return (await asyncio.to_thread(self.core.market.view)).as_dict()

    async def _quote(self, request: web.Request) -> dict[str, Any]:
        core = self.core
        spec, counts, deadline_s = await asyncio.to_thread(quote_args, request.query, core.store)
        q = await asyncio.to_thread(core.market.quote, spec, deadline_s=deadline_s, **counts)
        return q.as_dict()
