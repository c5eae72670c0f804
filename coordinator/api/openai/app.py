"""The OpenAI-compatible server: a FastAPI app on uvicorn, on the coordinator's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING

from fastapi import FastAPI

from coordinator.api.openai import batches, errors, files, fine_tuning, models
from coordinator.ratelimit import Limits

if TYPE_CHECKING:
    from coordinator.batches.service import BatchService
    from coordinator.finetunes.service import FineTuneService

log = logging.getLogger(__name__)


def create_app(service: BatchService, *, finetunes: FineTuneService | None = None,
               limits: Limits | None = None) -> FastAPI:
    """The app over ``service``; calls are rate-limited per API key by ``limits``' ``openai`` class
    (None: not limited)."""
    app = FastAPI(title="gpumesh OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url="/v1/openapi.json")
    app.state.service = service
    app.state.finetunes = finetunes
    app.state.limiter = limits.limiter("openai", service.clock) if limits is not None else None
    errors.install(app)
    for router in (files.router, batches.router, fine_tuning.router, models.router):
        app.include_router(router, prefix="/v1")
    return app


class OpenAIServer:
    """``await start()`` serves the API on ``host:port`` (``port`` is the bound one after it)."""

    def __init__(self, service: BatchService, host: str = "127.0.0.1", port: int = 0, **options) -> None:
        self.app = create_app(service, **options)
        self.host, self.port = host, port
        self._server = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._server.capture_signals = contextlib.nullcontext  # the coordinator's process owns its signals
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        log.info("OpenAI-compatible API on http://%s:%d/v1", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
