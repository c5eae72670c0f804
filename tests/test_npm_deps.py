"""tests.npm_deps (npm packages installed on first use) and tests.sysdeps (missing system packages
named once), against a fake npm on PATH: no registry, a few milliseconds a test."""

from __future__ import annotations

import fcntl
import json
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import npm_deps, sysdeps

LOCK = {
    "name": "t", "lockfileVersion": 3, "requires": True,
    "packages": {
        "": {"name": "t", "devDependencies": {"solc": "0.8.37", "anvil": "1.7.1"}},
        "node_modules/solc": {"version": "0.8.37", "dev": True},
        "node_modules/anvil": {"version": "1.7.1", "dev": True},
        "node_modules/anvil-darwin": {"version": "1.7.1", "dev": True, "optional": True, "os": ["darwin"]},
    },
}

FAKE_NPM = """#!{python}
import json, os, pathlib, sys
prefix = pathlib.Path(sys.argv[sys.argv.index("--prefix") + 1])
with open(os.environ["FAKE_NPM_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_NPM_FAIL"):
    print("npm error code ENOTFOUND", file=sys.stderr)
    print("npm error network request to the registry failed", file=sys.stderr)
    sys.exit(1)
packages = {{k: v for k, v in json.loads((prefix / "package-lock.json").read_text())["packages"].items()
            if k and not v.get("optional")}}
for path in packages:
    (prefix / path).mkdir(parents=True, exist_ok=True)
(prefix / "node_modules" / ".package-lock.json").write_text(json.dumps({{"packages": packages}}))
"""


@pytest.fixture
def pkg(tmp_path, monkeypatch) -> npm_deps.NpmPackages:
    """A package set under tmp_path, a fake npm first on PATH, and a fresh per-process cache."""
    root = tmp_path / "pkgs"
    root.mkdir()
    (root / "package.json").write_text(json.dumps({"name": "t", "devDependencies": LOCK["packages"][""]["devDependencies"]}))
    (root / "package-lock.json").write_text(json.dumps(LOCK))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM.format(python=sys.executable))
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_NPM_LOG", str(tmp_path / "npm.log"))
    monkeypatch.delenv("GPUMESH_REQUIRE_TEST_NPM", raising=False)
    monkeypatch.setattr(npm_deps, "_results", {})
    monkeypatch.setattr(npm_deps, "events", [])
    monkeypatch.setattr(npm_deps, "say", lambda line: None)
    monkeypatch.setattr(npm_deps, "_lock_path", lambda _pkg: tmp_path / "install.lock")  # not /tmp's
    return npm_deps.NpmPackages("pkgs", "test packages", "GPUMESH_REQUIRE_TEST_NPM", base=tmp_path)


def npm_calls(pkg: npm_deps.NpmPackages) -> list[str]:
    log = pkg.base / "npm.log"
    return log.read_text().splitlines() if log.exists() else []


def installed(pkg: npm_deps.NpmPackages) -> dict:
    return json.loads((pkg.root / "node_modules" / ".package-lock.json").read_text())


def write_installed(pkg: npm_deps.NpmPackages, packages: dict) -> None:
    for path in packages:
        (pkg.root / path).mkdir(parents=True, exist_ok=True)
    (pkg.root / "node_modules" / ".package-lock.json").write_text(json.dumps({"packages": packages}))


def test_missing_node_modules_is_installed_once_with_the_lock_honouring_command(pkg):
    assert npm_deps.stale_reason(pkg) == "pkgs/node_modules is missing"
    assert npm_deps.ensure(pkg) is None
    assert npm_deps.stale_reason(pkg) is None
    assert npm_calls(pkg) == [f"install --prefix {pkg.root} --no-audit --no-fund --loglevel=error"]
    assert npm_deps.ensure(pkg) is None  # cached for the process
    npm_deps._results.clear()
    assert npm_deps.ensure(pkg) is None  # a new session: current, so npm is not run
    assert len(npm_calls(pkg)) == 1
    assert npm_deps.events == ["npm: installed pkgs/node_modules (test packages) in 0 s"]


def test_the_test_timeout_clock_stops_while_npm_runs(pkg, monkeypatch):
    seen: list[float] = []
    real_run = npm_deps.subprocess.run

    def run(*args, **kwargs):
        seen.append(signal.getitimer(signal.ITIMER_REAL)[0])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(npm_deps.subprocess, "run", run)
    outer = signal.setitimer(signal.ITIMER_REAL, 100)  # as pytest-timeout's signal method arms it
    try:
        assert npm_deps.ensure(pkg) is None
        left = signal.getitimer(signal.ITIMER_REAL)[0]
    finally:
        signal.setitimer(signal.ITIMER_REAL, *outer)
    assert seen == [0.0]  # disarmed during the install
    assert 99 < left <= 100  # and re-armed with what was left


@pytest.mark.parametrize(("change", "says"), [
    (lambda p, have: have["node_modules/solc"].update(version="0.8.30"),
     "pkgs/node_modules/solc is 0.8.30, the lock file says 0.8.37"),
    (lambda p, have: have.pop("node_modules/anvil"), "pkgs/node_modules/anvil is missing"),
    (lambda p, have: have.update({"node_modules/left-over": {"version": "1.0.0"}}),
     "pkgs/node_modules/left-over is not in the lock file"),
    (lambda p, have: (p.root / "package.json").write_text(json.dumps({"devDependencies": {"solc": "0.8.38"}})),
     "pkgs/package-lock.json is out of date with package.json (devDependencies)"),
])
def test_stale_node_modules_is_named_and_reinstalled(pkg, change, says):
    have = {k: dict(v) for k, v in LOCK["packages"].items() if k and not v.get("optional")}
    change(pkg, have)
    write_installed(pkg, have)
    assert npm_deps.stale_reason(pkg) == says
    if "package.json" not in says:  # the fake npm does not rewrite the lock from package.json
        assert npm_deps.ensure(pkg) is None and len(npm_calls(pkg)) == 1
        assert installed(pkg)["packages"]["node_modules/solc"]["version"] == "0.8.37"


def test_an_absent_optional_package_is_current_but_a_deleted_directory_is_not(pkg):
    write_installed(pkg, {k: v for k, v in LOCK["packages"].items() if k and not v.get("optional")})
    assert npm_deps.stale_reason(pkg) is None  # anvil-darwin: another platform's build
    (pkg.root / "node_modules" / "solc").rmdir()
    assert npm_deps.stale_reason(pkg) == "pkgs/node_modules/solc is missing"


def test_a_failed_install_skips_with_the_command_and_fails_under_the_require_variable(pkg, monkeypatch):
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    with pytest.raises(pytest.skip.Exception) as skipped:
        npm_deps.require(pkg)
    assert str(skipped.value) == ("pkgs/node_modules is missing and `npm install --prefix pkgs` failed "
                                  "(exit 1: npm error code ENOTFOUND)")
    npm_deps._results.clear()
    monkeypatch.setenv("GPUMESH_REQUIRE_TEST_NPM", "1")
    with pytest.raises(pytest.fail.Exception, match="GPUMESH_REQUIRE_TEST_NPM is set but pkgs/node_modules is missing"):
        npm_deps.require(pkg)
    assert len(npm_calls(pkg)) == 2
    assert npm_deps.failures() == {"pkgs": "pkgs/node_modules is missing and `npm install --prefix pkgs` failed "
                                           "(exit 1: npm error code ENOTFOUND)"}
    assert npm_deps.events == []


def test_without_npm_the_reason_says_so(pkg, monkeypatch):
    monkeypatch.setenv("PATH", str(pkg.base / "empty"))
    assert npm_deps.ensure(pkg) == "pkgs/node_modules is missing and npm is not on PATH"
    with pytest.raises(pytest.skip.Exception, match=r"\(run `npm install --prefix pkgs`\)$"):
        npm_deps.require(pkg)


def test_another_session_s_install_is_waited_for_then_rechecked(pkg):
    """While another session holds the install lock, ensure waits; it finds the tree installed by then
    and runs no npm of its own."""
    result: list[str | None] = []
    with open(npm_deps._lock_path(pkg), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: result.append(npm_deps.ensure(pkg)))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()  # blocked on the lock
        write_installed(pkg, {k: v for k, v in LOCK["packages"].items() if k and not v.get("optional")})
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(10)
    assert result == [None] and npm_calls(pkg) == []


def test_cli_installs_the_named_sets(pkg, monkeypatch, capsys):
    monkeypatch.setattr(npm_deps, "ALL", (pkg,))
    assert npm_deps.main(["pkgs/"]) == 0
    assert "npm: pkgs/node_modules is current" in capsys.readouterr().err
    assert npm_deps.main(["contracts"]) == 2


def test_the_report_names_each_missing_package_once_with_its_skips(monkeypatch):
    monkeypatch.setattr(npm_deps, "_results", {"contracts": "contracts/node_modules is missing and npm is not on PATH"})
    bwrap, pg = (next(p for p in sysdeps.PACKAGES if p.apt == name) for name in ("bubblewrap", "postgresql"))
    report = sysdeps.DependencyReport([bwrap, pg])
    assert report.pytest_report_header() == [
        "missing system package bubblewrap (bwrap): the sandbox runtime tests skip",
        "missing system package postgresql (initdb, pg_ctl): the PostgreSQL store and cluster tests skip",
        "to run them: apt-get install bubblewrap postgresql",
    ]
    for nodeid, reason in [
        ("tests/test_runtime.py::test_a", "bubblewrap unavailable: bubblewrap (bwrap) is not installed"),
        ("tests/test_runtime.py::test_b", "bubblewrap unavailable: bubblewrap (bwrap) is not installed"),
        ("tests/test_provider_start.py::test_c", "bubblewrap (bwrap) is not installed"),
        ("tests/test_store_postgres.py::test_d[x]", "PostgreSQL binaries (initdb, pg_ctl) are not installed"),
        ("tests/test_artifacts_kubo.py::test_e", "tests/js/node_modules is missing (run `npm install --prefix tests/js`)"),
        ("tests/test_gpu.py::test_f", "no CUDA device"),
    ]:
        report.add(nodeid, reason)
    assert report.lines() == [
        "bubblewrap is not installed: 3 tests skipped (tests/test_provider_start.py, tests/test_runtime.py); "
        "apt-get install bubblewrap",
        "postgresql is not installed: 1 tests skipped (tests/test_store_postgres.py); apt-get install postgresql",
        "npm packages of contracts/ unavailable (contracts/node_modules is missing and npm is not on PATH); "
        "run `npm install --prefix contracts`",
        "npm packages of tests/js/ unavailable: 1 tests skipped (tests/test_artifacts_kubo.py); "
        "run `npm install --prefix tests/js`",
    ]
    assert sysdeps.DependencyReport([]).pytest_report_header() == []


def test_the_repository_s_package_sets_are_where_the_tests_look():
    assert npm_deps.CONTRACTS.root == Path(__file__).resolve().parent.parent / "contracts"
    assert (npm_deps.IPFS.root / "package-lock.json").is_file() and (npm_deps.CONTRACTS.root / "package-lock.json").is_file()
    assert npm_deps.IPFS.require_env == "GPUMESH_REQUIRE_IPFS"
