"""The npm packages some tests run, installed from their lock files on first use.

``contracts/`` holds the pinned solcjs, OpenZeppelin and anvil; ``tests/js/`` holds js-ipfs under a
pinned Node 22. ``require(pkg)`` (or ``anvil()``, ``contracts_node()``) is called where a test needs
them: when ``node_modules`` is missing or differs from ``package-lock.json`` it runs
``npm install --prefix DIR`` (``npm install`` honours the lock; ``npm ci`` trips over a lock that
lists other platforms' anvil builds), at most once per process and under a file lock so that
sessions sharing a tree do not install into one ``node_modules`` at once. Where that cannot be
done the test is skipped with one line saying what to run, or failed where the package set's
``GPUMESH_REQUIRE_*`` variable is set (CI, where a skip would hide a failure).

``python -m tests.npm_deps [DIR ...]`` does the same outside pytest (``.ci/run``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_S = 600.0  # a cold js-ipfs install took 108-148 s here; it does not count against the test's timeout
NPM_FLAGS = ("--no-audit", "--no-fund", "--loglevel=error")


@dataclass(frozen=True)
class NpmPackages:
    """One directory with a package.json and its lock file."""

    rel: str  # relative to the repository root
    what: str
    require_env: str  # set: a missing package set fails its tests instead of skipping them
    base: Path = ROOT

    @property
    def root(self) -> Path:
        return self.base / self.rel

    @property
    def command(self) -> str:
        return f"npm install --prefix {self.rel}"


CONTRACTS = NpmPackages("contracts", "solcjs, OpenZeppelin and anvil", "GPUMESH_REQUIRE_CONTRACTS_NPM")
IPFS = NpmPackages("tests/js", "js-ipfs and Node 22", "GPUMESH_REQUIRE_IPFS")
ALL = (CONTRACTS, IPFS)

# What this process found or did, by ``rel``: None when current, else why not (for the summary).
_results: dict[str, str | None] = {}
events: list[str] = []  # one line per install done, for the session's terminal summary


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


say: Callable[[str], None] = _say  # conftest routes it past pytest's capture


def _packages(lock_file: Path) -> dict[str, dict]:
    return json.loads(lock_file.read_text())["packages"]


def stale_reason(pkg: NpmPackages) -> str | None:
    """Why ``pkg``'s node_modules needs an install, or None when it matches the lock file.

    Compared with npm's record of what it installed (``node_modules/.package-lock.json``): every
    locked package at its locked version (optional ones, such as other platforms' builds, may be
    absent), nothing unlocked, each recorded package still on disk, and the lock's own idea of the
    dependencies equal to package.json's.
    """
    modules = pkg.root / "node_modules"
    installed = modules / ".package-lock.json"
    if not installed.is_file():
        return f"{pkg.rel}/node_modules is missing"
    try:
        want, have = _packages(pkg.root / "package-lock.json"), _packages(installed)
        manifest = json.loads((pkg.root / "package.json").read_text())
    except (OSError, ValueError, KeyError) as exc:
        return f"{pkg.rel}: unreadable lock file ({exc})"
    for field in ("dependencies", "devDependencies", "optionalDependencies"):
        if want.get("", {}).get(field, {}) != manifest.get(field, {}):
            return f"{pkg.rel}/package-lock.json is out of date with package.json ({field})"
    for path, meta in want.items():
        if not path:
            continue
        got = have.get(path)
        if got is None:
            if not meta.get("optional"):
                return f"{pkg.rel}/{path} is missing"
        elif got.get("version") != meta.get("version"):
            return f"{pkg.rel}/{path} is {got.get('version')}, the lock file says {meta.get('version')}"
    for path in have:
        if path and path not in want:
            return f"{pkg.rel}/{path} is not in the lock file"
        if path and not (pkg.root / path).is_dir():
            return f"{pkg.rel}/{path} is missing"
    return None


def _lock_path(pkg: NpmPackages) -> Path:
    digest = hashlib.sha256(str(pkg.root).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gpumesh-npm-{digest}.lock"


def _install(pkg: NpmPackages, why: str) -> str | None:
    npm = shutil.which("npm")
    if npm is None:
        return f"{why} and npm is not on PATH"
    say(f"npm: {why}; installing {pkg.what} from {pkg.rel}/package-lock.json ({pkg.command}) ...")
    began = time.monotonic()
    try:
        done = subprocess.run([npm, "install", "--prefix", str(pkg.root), *NPM_FLAGS], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"{why} and `{pkg.command}` did not finish in {INSTALL_TIMEOUT_S:.0f} s"
    took = time.monotonic() - began
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "code" in ln or "ERR" in ln), lines[-1] if lines else "")
        return f"{why} and `{pkg.command}` failed (exit {done.returncode}: {detail})"
    after = stale_reason(pkg)
    if after is not None:
        return f"`{pkg.command}` finished but {after}"
    events.append(f"npm: installed {pkg.rel}/node_modules ({pkg.what}) in {took:.0f} s")
    say(events[-1])
    return None


@contextmanager
def _install_lock(pkg: NpmPackages) -> Iterator[bool]:
    """Hold the tree-wide install lock of ``pkg`` (True), or give up waiting for it (False)."""
    with open(_lock_path(pkg), "w") as lock:
        deadline = time.monotonic() + INSTALL_TIMEOUT_S + 30
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.5)
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _alarm_paused() -> Iterator[None]:
    """Stop the per-test timeout's clock (pytest-timeout's signal method arms ITIMER_REAL) while npm
    runs, so a cold install is not charged to the test that happens to need it first."""
    left, interval = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        if left > 0:
            signal.setitimer(signal.ITIMER_REAL, left, interval)


def ensure(pkg: NpmPackages) -> str | None:
    """Make ``pkg``'s node_modules match its lock file; None when it does, else why it could not.

    The check is a few file reads; npm runs only when something is missing or stale, once per
    process, holding a file lock (another session's install is waited for, then re-checked), with the
    test's timeout paused.
    """
    if pkg.rel in _results:
        return _results[pkg.rel]
    why = stale_reason(pkg)
    if why is not None:
        with _alarm_paused(), _install_lock(pkg) as held:
            if not held:
                why = f"{why} and another session's install held {_lock_path(pkg)} too long"
            else:
                why = stale_reason(pkg)  # another session may have installed it meanwhile
                if why is not None:
                    why = _install(pkg, why)
    _results[pkg.rel] = why
    return why


def failures() -> dict[str, str]:
    """Why each package set that this process could not install is unavailable, by ``rel``."""
    return {rel: why for rel, why in _results.items() if why is not None}


def skip_or_fail(pkg: NpmPackages, why: str) -> None:
    """Skip the calling test with the reason and the command to run; fail it under ``pkg.require_env``."""
    import pytest

    line = why if pkg.command in why else f"{why} (run `{pkg.command}`)"
    if os.environ.get(pkg.require_env):
        pytest.fail(f"{pkg.require_env} is set but {line}", pytrace=False)
    pytest.skip(line)


def require(pkg: NpmPackages) -> None:
    """``ensure(pkg)`` for a test: skip it (or fail it, under ``pkg.require_env``) where that fails."""
    why = ensure(pkg)
    if why is not None:
        skip_or_fail(pkg, why)


def anvil() -> str:
    """The anvil binary for a test: ``$GPUMESH_ANVIL``, else the repository's npm copy (installed on
    first use) or one on PATH; skips (or fails) the test where there is none."""
    from gpumesh.chain.node import ENV_ANVIL, find_anvil

    why = None if os.environ.get(ENV_ANVIL) else ensure(CONTRACTS)
    binary = find_anvil()
    if binary is None:
        skip_or_fail(CONTRACTS, why or f"anvil binary not found (${ENV_ANVIL} or the npm copy in contracts/)")
    return binary


def contracts_node() -> str:
    """``node`` on PATH, with contracts/node_modules (solcjs, OpenZeppelin) installed; skips (or
    fails) the test where either is missing."""
    require(CONTRACTS)
    node = shutil.which("node")
    if node is None:
        skip_or_fail(CONTRACTS, "node is not on PATH (install Node.js)")
    return node


def main(argv: list[str]) -> int:
    by_rel = {pkg.rel: pkg for pkg in ALL}
    unknown = [a for a in argv if a.rstrip("/") not in by_rel]
    if unknown:
        _say(f"usage: python -m tests.npm_deps [{' '.join(by_rel)}]; unknown: {' '.join(unknown)}")
        return 2
    failed = 0
    for pkg in [by_rel[a.rstrip("/")] for a in argv] or ALL:
        why = ensure(pkg)
        _say(f"npm: {pkg.rel}/node_modules is current" if why is None else f"npm: {pkg.rel}: {why}")
        failed += why is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
