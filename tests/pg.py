"""A throwaway PostgreSQL server for tests, from the installed binaries (initdb + pg_ctl on a
spare loopback port; as user ``postgres`` when the tests run as root), one database per test."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Postgres:
    bindir: Path
    datadir: Path
    port: int
    as_user: list[str]
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=5"

    def create_db(self) -> str:
        """A fresh empty database; returns its DSN."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
                        "-w", "stop"], capture_output=True, timeout=60)


def start_postgres(root: Path) -> tuple[Postgres | None, str]:
    """The server, or None and why it cannot run here."""
    bindir = _bindir()
    if bindir is None:
        return None, "PostgreSQL binaries (initdb, pg_ctl) are not installed"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg is not installed (pip install 'gpumesh[postgres]')"
    as_user: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # initdb refuses root
        if shutil.which("runuser") is None:
            return None, "running as root and runuser is missing"
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    datadir = root / "data"
    init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres",
                           "--no-sync", "-E", "UTF8"], capture_output=True, text=True, timeout=120)
    if init.returncode:
        return None, f"initdb failed: {init.stderr[-800:]}"
    port = _free_port()
    opts = (f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off -c max_connections=200 "
            "-c shared_buffers=64MB")
    start = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(datadir), "-o", opts, "-l",
                            str(root / "postgres.log"), "-w", "-t", "60", "start"],
                           capture_output=True, text=True, timeout=90)
    if start.returncode:
        log = (root / "postgres.log").read_text(errors="replace")[-800:] if (root / "postgres.log").exists() else ""
        return None, f"pg_ctl start failed: {start.stderr[-400:]} {log}"
    return Postgres(bindir, datadir, port, as_user), ""
