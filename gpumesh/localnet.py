"""A local marketplace of real processes on loopback: one coordinator and N providers.

Used by ``gpumesh demo``, the end-to-end tests and the benchmarks. Every process is a real
``gpumesh`` CLI process talking gRPC over a real socket; logs go to files in ``root``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gpumesh.errors import Unavailable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(target: str, timeout: float = 30.0) -> None:
    """Block until the coordinator's gRPC health check says SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"coordinator at {target} not healthy after {timeout:.0f}s")
            time.sleep(0.1)


@dataclass
class Proc:
    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str]
    popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group (a crash: no clean-up runs)."""
        if self.alive:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class LocalNetwork:
    root: Path
    lease_ttl_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    port: int = field(default_factory=free_port)
    coordinator: Proc | None = None
    providers: dict[str, Proc] = field(default_factory=dict)
    chain: Proc | None = None
    chain_port: int = 0
    coordinator_env: dict[str, str] = field(default_factory=dict)  # kept for restarts

    @property
    def chain_url(self) -> str:
        return f"http://127.0.0.1:{self.chain_port}" if self.chain_port else ""

    def start_chain(self) -> Proc:
        """A py-evm dev chain process with the contracts deployed (dev account 0 coordinates)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.chain_port = free_port()
        self.chain = Proc(
            "chain",
            [sys.executable, "-m", "gpumesh", "chain", "serve", "--port", str(self.chain_port),
             "--deploy-to", str(self.root / "chain")],
            self.root / "chain.log",
            self._env(),
        ).start()
        deadline = time.monotonic() + 60
        while not (self.root / "chain" / "deployment.json").exists():
            if not self.chain.alive or time.monotonic() > deadline:
                raise Unavailable(f"chain failed to start:\n{self.chain.log_tail()}")
            time.sleep(0.1)
        return self.chain

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        return env

    def start_coordinator(self, extra_env: dict[str, str] | None = None, *, listen: str | None = None) -> Proc:
        """Start (or restart, with the same settings) the coordinator; ``extra_env`` sets
        ``GPUMESH_COORDINATOR_*`` settings and is remembered for restarts; ``listen`` (e.g.
        ``[::]:PORT`` with ``self.port``, to be reached over IPv6 too) replaces ``target``."""
        if extra_env is not None:
            self.coordinator_env = dict(extra_env)
        if listen is not None:
            self.coordinator_listen = listen
        self.root.mkdir(parents=True, exist_ok=True)
        self.coordinator = Proc(
            "coordinator",
            [sys.executable, "-m", "gpumesh", "coordinator", "serve", "--listen",
             getattr(self, "coordinator_listen", "") or self.target,
             "--data-dir", str(self.root / "coordinator"), "--lease-ttl", str(self.lease_ttl_s),
             "--heartbeat-interval", str(self.heartbeat_interval_s),
             *(["--chain-url", self.chain_url, "--deployment", str(self.root / "chain" / "deployment.json"),
                "--chain-key-file", str(self.root / "chain" / "coordinator.key"),
                # settle within a second, unless the test's settings say otherwise
                *(["--settle-interval", "1"] if "GPUMESH_COORDINATOR_SETTLE_INTERVAL_S" not in self.coordinator_env
                  else [])]
               if self.chain_port else [])],
            self.root / "coordinator.log",
            # every node of a local network is this one host: the network is no independence key here
            self._env() | {"GPUMESH_COORDINATOR_INDEPENDENT_NETWORKS": "false"} | self.coordinator_env,
        ).start()
        try:
            wait_healthy(self.target)
        except Unavailable:
            raise Unavailable(f"coordinator failed to start:\n{self.coordinator.log_tail()}") from None
        return self.coordinator

    def start_provider(self, name: str, *, price: int = 100, slots: int = 1, runtime: str = "auto",
                       threads: int = 0, tier: str = "open", extra_env: dict[str, str] | None = None,
                       coordinator: str = "") -> Proc:
        """Start a provider daemon; ``threads`` per task (0 = cores / slots) keeps several
        providers on one machine from oversubscribing its cores; ``coordinator``: the address it
        dials (default ``target``; e.g. ``[::1]:PORT`` to arrive from another network)."""
        env = self._env() | (extra_env or {})
        if tier == "centralized":  # the operator's own node: trust its wallet first
            from gpumesh.identity import Wallet, provider_key_path

            wallet = Wallet.load_or_create(provider_key_path(self.root / name))
            subprocess.run([sys.executable, "-m", "gpumesh", "coordinator", "trust", wallet.address,
                            "--data-dir", str(self.root / "coordinator"), "--note", name],
                           check=True, env=self._env(), capture_output=True, timeout=120)
        if self.chain_port:
            wallet = self.register_provider(name)
            if tier == "open":
                self._stake_to_minimum(name, wallet.address)
        proc = Proc(
            name,
            [sys.executable, "-m", "gpumesh", "provider", "run", "--coordinator", coordinator or self.target,
             "--data-dir", str(self.root / name), "--name", name, "--price", str(price),
             "--slots", str(slots), "--runtime", runtime, "--threads", str(threads), "--tier", tier,
             *(["--unisolated"] if runtime == "process" else [])],
            self.root / f"{name}.log",
            env,
        ).start()
        self.providers[name] = proc
        return proc

    def _chain_client(self):
        from gpumesh.chain import ChainClient, Deployment

        return ChainClient.connect(self.chain_url, Deployment.load(self.root / "chain" / "deployment.json"))

    def _funded_wallet(self, name: str, chain):
        """Provider ``name``'s wallet (made now if need be; its daemon uses it), with gas money."""
        from gpumesh.chain import fund_dev_gas
        from gpumesh.identity import Wallet, provider_key_path

        wallet = Wallet.load_or_create(provider_key_path(self.root / name))
        fund_dev_gas(chain, wallet.address)
        return wallet

    def register_provider(self, name: str):
        """Register provider ``name``'s wallet in the ProviderRegistry (a settling coordinator
        takes work only from registered providers), as ``gpumesh provider register`` does."""
        from eth_account import Account

        chain = self._chain_client()
        wallet = self._funded_wallet(name, chain)
        if not chain.is_registered(wallet.address):
            chain.register(Account.from_key(wallet.private_key))
        return wallet

    def stake_provider(self, name: str, amount: int):
        """Make provider ``name``'s wallet now (its daemon uses it when started), fund it with gas
        and tokens from the dev accounts, and stake ``amount`` with ``gpumesh provider stake``
        (the coordinator must be running)."""
        from eth_account import Account

        from gpumesh.chain import dev_keys

        chain = self._chain_client()
        wallet = self._funded_wallet(name, chain)
        chain.mint(Account.from_key(dev_keys()[2]), wallet.address, amount)
        subprocess.run([sys.executable, "-m", "gpumesh", "provider", "stake", "--coordinator", self.target,
                        "--data-dir", str(self.root / name), "--amount", str(amount)],
                       check=True, env=self._env(), capture_output=True, timeout=120)
        return wallet

    def _stake_to_minimum(self, name: str, address: str) -> None:
        """Stake the coordinator's minimum for open-market work for provider ``name`` (registered,
        with gas, at ``address``), unless it has staked already (a stake made is kept as it is)."""
        from gpumesh.client import Client

        with Client.connect(self.target) as client:
            required = int(client.settlement_info().min_stake or 0)
        if required and not self._chain_client().stake_of(address).active:
            self.stake_provider(name, required)

    def wait_providers(self, n: int, timeout: float = 60.0, *, checked: bool = True) -> None:
        """Block until ``n`` providers hold a live session and, with ``checked``, have answered
        their hardware check (the coordinator gives no work before it: a market that counts
        unchecked providers as ready hands all of a job to the first one checked)."""
        from gpumesh.client import Client

        deadline = time.monotonic() + timeout
        with Client.connect(self.target) as client:
            while len([p for p in client.list_providers(connected_only=True)
                       if p.hardware_verified or not checked]) < n:
                if time.monotonic() > deadline:
                    logs = "\n".join(f"--- {p.name}\n{p.log_tail(1500)}" for p in self.providers.values())
                    state = "ready (connected, hardware checked)" if checked else "connected"
                    raise Unavailable(f"fewer than {n} providers {state} after {timeout:.0f}s\n{logs}")
                time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.providers.values():
            proc.stop()
        if self.coordinator is not None:
            self.coordinator.stop()
        if self.chain is not None:
            self.chain.stop()

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
