"""A throwaway Docker daemon for tests (Debian docker.io's dockerd, started as root on a private
socket and data root, vfs storage, no bridge or iptables) and the host-env base image in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_S = 60.0


@dataclass
class Dockerd:
    url: str
    proc: subprocess.Popen
    log: Path

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.url, timeout=120)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_dockerd(root: Path) -> tuple[Dockerd | None, str]:
    """The daemon, or None and why it cannot run here."""
    binary = shutil.which("dockerd")
    if binary is None:
        return None, "dockerd is not installed (Debian package docker.io)"
    if os.geteuid() != 0:
        return None, "dockerd needs root here"
    try:
        import docker
    except ImportError:
        return None, "the Docker SDK (pip install docker) is not installed"
    sock = root / "docker.sock"
    log = root / "dockerd.log"
    argv = [binary, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{sock}", "--iptables=false",
            "--ip6tables=false", "--bridge=none", "--storage-driver=vfs"]
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    daemon = Dockerd(url=f"unix://{sock}", proc=proc, log=log)
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, f"dockerd exited {proc.returncode}: {log.read_text(errors='replace')[-1500:]}"
        if sock.exists():
            try:
                docker.DockerClient(base_url=daemon.url, timeout=5).ping()
                return daemon, ""
            except Exception:  # noqa: BLE001 - not up yet
                pass
        time.sleep(0.2)
    daemon.stop()
    return None, f"dockerd did not answer within {START_S:.0f}s: {log.read_text(errors='replace')[-1500:]}"
