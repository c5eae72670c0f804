"""The Debian packages some tests need, and a tally of the tests skipped for want of them.

Instead of one skip reason per test, the session says once, at its start, which packages are
missing, what they are for and what to install, and at its end how many tests each one skipped and
in which files (``DependencyReport``, a plugin the conftest registers).
"""

from __future__ import annotations

import glob
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests import npm_deps


def _chromium() -> bool:
    return Path(os.environ.get("GPUMESH_CHROMIUM", "/usr/bin/chromium")).exists()


def _postgres() -> bool:
    return shutil.which("pg_ctl") is not None or bool(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))


@dataclass(frozen=True)
class SystemPackage:
    apt: str  # the Debian package
    provides: str
    tests: str  # what skips without it
    reason_words: tuple[str, ...]  # words its tests' skip reasons contain
    installed: Callable[[], bool]


PACKAGES = (
    SystemPackage("bubblewrap", "bwrap", "the sandbox runtime tests", ("bubblewrap", "bwrap"),
                  lambda: shutil.which("bwrap") is not None),
    SystemPackage("docker.io", "dockerd", "the Docker runtime tests", ("dockerd",),
                  lambda: shutil.which("dockerd") is not None),
    SystemPackage("postgresql", "initdb, pg_ctl", "the PostgreSQL store and cluster tests", ("PostgreSQL",), _postgres),
    SystemPackage("chromium", "chromium", "the dashboard's browser tests", ("Chromium",), _chromium),
)


def missing() -> list[SystemPackage]:
    return [pkg for pkg in PACKAGES if not pkg.installed()]


def install_line(packages: list[SystemPackage]) -> str:
    return f"apt-get install {' '.join(pkg.apt for pkg in packages)}"


class DependencyReport:
    """A pytest plugin: the missing packages in the header; at the end, the npm installs done and the
    skipped tests counted by the missing package (or npm package set) their reason names."""

    def __init__(self, packages: list[SystemPackage]) -> None:
        self.packages = packages
        self.count: Counter[str] = Counter()
        self.files: defaultdict[str, set[str]] = defaultdict(set)

    def _bucket(self, reason: str) -> str | None:
        for pkg in self.packages:
            if any(word in reason for word in pkg.reason_words):
                return pkg.apt
        for npm in npm_deps.ALL:
            if npm.command in reason or f"{npm.rel}/node_modules" in reason:
                return npm.rel
        return None

    def add(self, nodeid: str, reason: str) -> None:
        bucket = self._bucket(reason)
        if bucket is not None:
            self.count[bucket] += 1
            self.files[bucket].add(nodeid.split("::")[0])

    def _files(self, bucket: str) -> str:
        names = sorted(self.files[bucket])
        return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")

    def lines(self) -> list[str]:
        """One line per package whose absence skipped tests, and per npm package set not installed."""
        out = [f"{pkg.apt} is not installed: {self.count[pkg.apt]} tests skipped ({self._files(pkg.apt)}); "
               f"{install_line([pkg])}" for pkg in self.packages if self.count[pkg.apt]]
        failed = npm_deps.failures()
        for npm in npm_deps.ALL:
            if self.count[npm.rel] or npm.rel in failed:
                why = f" ({failed[npm.rel]})" if npm.rel in failed else ""
                skipped = f": {self.count[npm.rel]} tests skipped ({self._files(npm.rel)})" if self.count[npm.rel] else ""
                out.append(f"npm packages of {npm.rel}/ unavailable{why}{skipped}; run `{npm.command}`")
        return out

    def pytest_report_header(self) -> list[str]:
        gone = self.packages
        lines = [f"missing system package {pkg.apt} ({pkg.provides}): {pkg.tests} skip" for pkg in gone]
        if gone:
            lines.append(f"to run them: {install_line(gone)}")
        return lines

    def pytest_runtest_logreport(self, report) -> None:
        if report.skipped and isinstance(report.longrepr, tuple):
            self.add(report.nodeid, str(report.longrepr[2]))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        lines = [*npm_deps.events, *self.lines()]
        if lines:
            terminalreporter.section("test dependencies")
            for line in lines:
                terminalreporter.write_line(line)
