"""The committed contracts/build/*.json match a fresh compile of contracts/src (node contracts/compile.mjs --check)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests import npm_deps
from tests.contracts_evm import BUILD, ROOT

NAMES = ("TestToken", "ProviderRegistry", "JobEscrow")
SCRIPT = ROOT / "contracts" / "compile.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    return npm_deps.contracts_node()  # installs contracts/node_modules on first use; skips (or fails) without


def check(node: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([node, str(SCRIPT), "--check", *args], capture_output=True, text=True, timeout=180,
                          check=False)


def test_committed_build_is_up_to_date(node):
    proc = check(node)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_names_every_stale_file(node, tmp_path):
    for name in NAMES:
        shutil.copy(BUILD / f"{name}.json", tmp_path / f"{name}.json")
    assert check(node, "--build-dir", str(tmp_path)).returncode == 0

    escrow = json.loads((tmp_path / "JobEscrow.json").read_text())
    escrow["bytecode"] = escrow["bytecode"][:-2] + ("00" if not escrow["bytecode"].endswith("00") else "01")
    (tmp_path / "JobEscrow.json").write_text(json.dumps(escrow, indent=2, sort_keys=True) + "\n")
    (tmp_path / "TestToken.json").unlink()
    proc = check(node, "--build-dir", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "JobEscrow.json" in proc.stderr and "TestToken.json" in proc.stderr
    assert "ProviderRegistry.json" not in proc.stderr


def test_build_files_have_the_documented_shape():
    for name in NAMES:
        text = (BUILD / f"{name}.json").read_text()
        art = json.loads(text)
        assert text == json.dumps(art, indent=2, sort_keys=True) + "\n"  # deterministic formatting
        assert set(art) == {"contractName", "abi", "bytecode", "deployedBytecode", "compiler", "sourceSha256"}
        assert art["contractName"] == name
        assert art["bytecode"].startswith("0x") and len(art["bytecode"]) > 2
        assert art["deployedBytecode"].startswith("0x") and len(art["deployedBytecode"]) > 2
        assert art["compiler"]["version"].startswith("0.8.37")
        assert art["compiler"]["settings"] == {"evmVersion": "cancun", "optimizer": {"enabled": True, "runs": 200}}
        assert len(art["sourceSha256"]) == 64
