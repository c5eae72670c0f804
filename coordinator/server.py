"""Composition root of the coordinator process: wires the store, artifacts and gRPC server."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator.api.artifacts import ArtifactServicer
from coordinator.api.errors import ErrorInterceptor
from coordinator.api.provider import ProviderServicer
from coordinator.api.submitter import SubmitterServicer
from coordinator.batches.service import BatchService
from coordinator.config import CoordinatorSettings
from coordinator.core import Coordinator
from coordinator.ratelimit import RateLimitInterceptor
from coordinator.store.sqlite import SqliteStore
from gpumesh.artifacts import open_artifact_store
from gpumesh.errors import InvalidArgument
from gpumesh.identity import sane_recursion_limit
from gpumesh.sealing import SealingKey
from gpumesh.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICES = (
    jobs_pb2.DESCRIPTOR.services_by_name["SubmitterService"].full_name,
    provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
    artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
)


def build_store(settings: CoordinatorSettings):
    if settings.store == "sqlite":
        return SqliteStore(settings.db_path)
    if settings.store == "postgresql":
        from coordinator.store.postgres import PostgresStore

        return PostgresStore(settings.postgres_dsn, pool_size=settings.postgres_pool_size)
    raise InvalidArgument(f"unknown store {settings.store!r} (available: sqlite, postgresql)", field="store")


def build_fallback(settings: CoordinatorSettings):
    """What provisions centralized capacity on demand: SkyPilot, or nothing (a clear status line)."""
    from coordinator.fallback import FallbackManager, NullProvisioner, SkyPilotProvisioner

    provisioner = NullProvisioner()
    max_clusters = 0
    if settings.fallback_launcher == "skypilot":
        if settings.skypilot is None:
            raise InvalidArgument("fallback launcher skypilot needs its settings (at least coordinator_target)",
                                  field="skypilot")
        provisioner, max_clusters = SkyPilotProvisioner(settings.skypilot), settings.skypilot.max_clusters
    return FallbackManager(provisioner, max_clusters=max_clusters or 1, cooldown_s=settings.fallback_cooldown_s,
                           tasks_per_cluster=settings.fallback_tasks_per_cluster,
                           release_after_s=settings.fallback_release_after_s)


def build_cluster(settings: CoordinatorSettings, replica_id: str):
    """Leadership and signal relay: a lone process leads; replicas on PostgreSQL elect one."""
    if settings.store != "postgresql":
        return None, None
    from coordinator.cluster import AdvisoryLockLeadership, PgSignalRelay

    leadership = AdvisoryLockLeadership(settings.postgres_dsn, interval_s=settings.leader_check_s, name=replica_id)
    return leadership, PgSignalRelay(settings.postgres_dsn, replica_id)


def server_credentials(settings: CoordinatorSettings) -> grpc.ServerCredentials | None:
    """TLS (mutual with a client CA) from the settings' PEM files, or None for plaintext."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        if settings.tls_client_ca_file is not None:
            raise InvalidArgument("mutual TLS needs the server's own certificate and key", field="tls_cert_file")
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise InvalidArgument("TLS needs both tls_cert_file and tls_key_file", field="tls_cert_file")

    def read(path, field):
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"cannot read {path}: {exc.strerror}", field=field) from None

    client_ca = read(settings.tls_client_ca_file, "tls_client_ca_file") if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(read(settings.tls_key_file, "tls_key_file"), read(settings.tls_cert_file, "tls_cert_file"))],
        root_certificates=client_ca, require_client_auth=client_ca is not None)


def build_chain(settings: CoordinatorSettings):
    """The settlement chain, or None (jobs run unpaid) when no chain is configured."""
    if not settings.chain_url:
        log.warning("no chain configured: jobs are not escrowed or paid (set chain_url to settle)")
        return None
    from coordinator.settlement.web3_chain import Web3SettlementChain

    return Web3SettlementChain.connect(settings.chain_url, settings.deployment_file, settings.chain_key_file)


class CoordinatorServer:
    """A running coordinator: ``await start()``, ``port``, ``await stop()``."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        sane_recursion_limit()  # request JSON nested too deeply must be an error, not a crash
        self.settings = settings
        credentials = server_credentials(settings)  # a TLS misconfiguration fails before anything opens
        self.dashboard = None
        self.openai = None
        self.store = build_store(settings)
        self.artifacts = open_artifact_store(settings.artifact_store, path=settings.blocks_dir,
                                             kubo_url=settings.kubo_url or None)
        chain = build_chain(settings)
        if not settings.replica_id:
            settings = self.settings = settings.model_copy(update={"replica_id": uuid.uuid4().hex[:12]})
        leadership, relay = build_cluster(settings, settings.replica_id)
        self.core = Coordinator(settings, self.store, self.artifacts, chain=chain, registry=chain,
                                leadership=leadership, relay=relay, fallback=build_fallback(settings),
                                sealing=SealingKey.load_or_create(settings.sealing_key_path))
        self.health = health.aio.HealthServicer()
        limit = settings.max_message_bytes
        self.server = aio.server(
            # Outermost first: a refused call stops before anything else runs.
            interceptors=[*([RateLimitInterceptor(settings.rate_limits)] if settings.rate_limit else []),
                          ErrorInterceptor()],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        self.batches = BatchService(self.core, max_file_bytes=settings.max_batch_file_bytes,
                                    max_batch_lines=settings.max_batch_lines)
        jobs_pb2_grpc.add_SubmitterServiceServicer_to_server(SubmitterServicer(self.core, self.batches), self.server)
        provider_pb2_grpc.add_ProviderServiceServicer_to_server(ProviderServicer(self.core), self.server)
        artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(
            ArtifactServicer(self.core.raw_artifacts, self.core.access, self.core.requests, max_bytes=settings.max_artifact_bytes),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        if credentials is None:
            self.port = self.server.add_insecure_port(settings.listen)
        else:
            self.port = self.server.add_secure_port(settings.listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.listen}")

    async def start(self) -> None:
        await self.core.start()
        if self.settings.metrics_listen:
            self.metrics_port = self.core.metrics.serve(self.settings.metrics_listen)
        if self.settings.dashboard_listen:
            from coordinator.dashboard import Dashboard, parse_listen

            self.dashboard = Dashboard(self.core, *parse_listen(self.settings.dashboard_listen))
            await self.dashboard.start()
            log.info("dashboard on %s", self.dashboard.url)
        if self.settings.openai_listen:
            from coordinator.api.openai.app import OpenAIServer
            from coordinator.dashboard import parse_listen
            from coordinator.finetunes.service import FineTuneService

            host, port = parse_listen(self.settings.openai_listen, field="openai_listen")
            finetunes = FineTuneService(self.batches, tokens_per_s=self.settings.finetune_quote_tokens_per_s)
            self.openai = OpenAIServer(self.batches, host, port, finetunes=finetunes,
                                       limits=self.settings.rate_limits if self.settings.rate_limit else None)
            await self.openai.start()
        await self.server.start()
        for name in ("", *SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("coordinator listening on port %d (data in %s)", self.port, self.settings.data_dir)

    async def stop(self, grace: float = 2.0) -> None:
        if self.openai is not None:
            await self.openai.stop()
        if self.dashboard is not None:
            await self.dashboard.stop()
        await self.core.stop()
        self.core.metrics.close()
        await self.server.stop(grace)
        self.store.close()


async def serve(settings: CoordinatorSettings, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    server = CoordinatorServer(settings)
    await server.start()
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
    await server.stop()
