"""The settlement client on three backends (in-process py-evm, DevNode over HTTP, anvil), plus
unit tests of the pieces that need no chain."""

from __future__ import annotations

import json
import pickle
import time
import urllib.request

import pytest
from eth_abi import encode

from gpumesh.chain import (
    Anvil,
    ChainClient,
    ChainError,
    ChainRevert,
    Deployment,
    DevNode,
    RevertDecoder,
    dev_keys,
    in_process_web3,
    job_key,
    job_key_hex,
    json_rpc_web3,
    reason_bytes,
    reason_text,
)
from gpumesh.chain.artifacts import load_all
from gpumesh.chain.errors import revert_data
from gpumesh.chain.node import free_port
from gpumesh.errors import InvalidArgument
from tests import npm_deps
from tests.chain_contract import *  # noqa: F403  (the shared chain contract)
from tests.chain_contract import make_env

BACKENDS = ["pyevm", "devnode", "anvil"]
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    name = request.param
    started = time.perf_counter()
    node = None
    if name == "pyevm":
        web3 = in_process_web3()
    elif name == "devnode":
        node = DevNode().start()
        web3 = json_rpc_web3(node.url)
    else:
        node = Anvil(binary=npm_deps.anvil()).start()  # installs contracts/node_modules on first use
        web3 = json_rpc_web3(node.url)
    TIMINGS[f"{name} start"] = time.perf_counter() - started
    yield name, web3, dev_keys()
    if node is not None:
        node.stop()


@pytest.fixture
def chain(backend):
    name, web3, keys = backend
    started = time.perf_counter()
    env = make_env(name, web3, keys)
    TIMINGS[f"{name} deploy"] = time.perf_counter() - started
    return env


# -- nodes --------------------------------------------------------------------------------


def _post(url: str, body) -> object:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_devnode_speaks_json_rpc_batches_and_errors():
    with DevNode(accounts=3) as node:
        replies = _post(node.url, [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "net_version", "params": []},
            {"jsonrpc": "2.0", "id": 3, "method": "eth_getBalance", "params": [
                "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "latest"]},
            {"jsonrpc": "2.0", "id": 4, "method": "no_such_method", "params": []},
            {"jsonrpc": "2.0", "id": 5, "method": "eth_accounts", "params": []},
        ])
        by_id = {r["id"]: r for r in replies}
        assert int(by_id[1]["result"], 16) == int(by_id[2]["result"])
        assert int(by_id[3]["result"], 16) == 10_000 * 10**18  # the first anvil dev account
        assert by_id[4]["error"]["code"] == -32601
        assert len(by_id[5]["result"]) == 3
        web3 = json_rpc_web3(node.url)
        before = web3.eth.get_block("latest")
        snapshot = web3.provider.make_request("evm_snapshot", [])["result"]
        assert int(web3.provider.make_request("evm_increaseTime", [1000])["result"], 16) == 1000
        web3.provider.make_request("evm_mine", [])
        after = web3.eth.get_block("latest")
        assert after["timestamp"] >= before["timestamp"] + 1000 and after["number"] == before["number"] + 2
        web3.provider.make_request("evm_revert", [snapshot])
        assert web3.eth.block_number == before["number"]
    with pytest.raises(OSError):
        _post(node.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})


def test_dev_keys_are_anvils_accounts():
    from eth_account import Account

    keys = dev_keys(count=2)
    assert Account.from_key(keys[0]).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert Account.from_key(keys[1]).address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_unreachable_node_is_a_retryable_chain_error():
    web3 = json_rpc_web3(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ChainError) as info:
        ChainClient(web3, Deployment(1, "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20))
    assert info.value.retryable and info.value.grpc_code == "UNAVAILABLE"
    client = ChainClient(web3, Deployment(1, "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20),
                         verify_chain_id=False)
    with pytest.raises(ChainError):
        client.token_balance("0x" + "44" * 20)


def test_anvil_start_stop():
    with Anvil(binary=npm_deps.anvil(), accounts=2) as node:
        assert json_rpc_web3(node.url).eth.chain_id == 31337
        proc = node.proc
    assert proc.poll() is not None


# -- pure pieces --------------------------------------------------------------------------


def test_job_key_hashes_ids_and_passes_keys_through():
    key = job_key("job_1")
    assert len(key) == 32 and key != job_key("job_2")
    assert job_key(key) == key == job_key(job_key_hex("job_1"))
    for bad in ("", b"short", 7):
        with pytest.raises(InvalidArgument):
            job_key(bad)


def test_reason_bytes_round_trip():
    assert reason_text(reason_bytes("mismatch")) == "mismatch"
    long = "x" * 40
    assert len(reason_bytes(long)) == 32 and reason_text(reason_bytes(long)).startswith("0x")


def test_deployment_json_is_stable():
    d = Deployment(31337, "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20, 5)
    assert Deployment.from_json(d.to_json()) == d
    with pytest.raises(InvalidArgument):
        Deployment.from_json("{}")


def test_revert_decoder_names_every_shape():
    from eth_tester.exceptions import TransactionFailed
    from eth_utils import keccak
    from web3.exceptions import ContractCustomError, ContractLogicError

    decoder = RevertDecoder(a.abi for a in load_all().values())
    selector = keccak(text="PayoutExceedsBudget(bytes32,uint256,uint256)")[:4]
    data = selector + encode(["bytes32", "uint256", "uint256"], [b"\1" * 32, 5, 4])
    for exc in (
        TransactionFailed(f"execution reverted: {data!r}"),
        TransactionFailed(data),
        ContractCustomError("0x" + data.hex(), data="0x" + data.hex()),
    ):
        revert = decoder.from_exception(exc)
        assert (revert.error, revert.args) == ("PayoutExceedsBudget", (b"\1" * 32, 5, 4)), exc
    reason = decoder.from_exception(TransactionFailed("execution reverted: not allowed"))
    assert (reason.error, reason.args) == ("Error", ("not allowed",))
    panic = decoder.decode(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]))
    assert (panic.error, panic.args) == ("Panic", (0x11,))
    assert decoder.from_exception(ContractLogicError("execution reverted", data=None)).error == "Reverted"
    assert decoder.decode(bytes.fromhex("deadbeef")).error == "0xdeadbeef"
    assert revert_data(ValueError("x")) is None
    copy = pickle.loads(pickle.dumps(decoder.decode(data)))
    assert isinstance(copy, ChainRevert) and copy.error == "PayoutExceedsBudget" and copy.args[1:] == (5, 4)


def test_package_import_does_not_load_web3():
    import subprocess
    import sys

    code = "import sys, gpumesh.chain as c; c.job_key('x'); print('web3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_devnode_serves_other_processes(tmp_path):
    """``python -m gpumesh.chain.node`` in its own process; this process deploys and deposits."""
    import subprocess
    import sys

    from eth_account import Account

    from gpumesh.chain import JobStatus

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpumesh.chain.node", "--port", str(port), "--accounts", "3"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith(f"DevNode listening on http://127.0.0.1:{port}")
        keys = [proc.stdout.readline().split()[-1] for _ in range(3)]
        assert keys == dev_keys(count=3)
        web3 = json_rpc_web3(f"http://127.0.0.1:{port}")
        deployment = ChainClient.deploy(web3, keys[0])
        deployment.save(tmp_path / "d.json")
        client = ChainClient.connect(f"http://127.0.0.1:{port}", Deployment.load(tmp_path / "d.json"))
        client.mint(keys[1], Account.from_key(keys[1]), 5)
        client.deposit(keys[1], "x", 5, client.block_timestamp() + 60)
        assert client.job(Account.from_key(keys[1]), "x").status is JobStatus.FUNDED
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_zz_report_timings(capsys):
    """Not a check: prints how long each backend took to start and to deploy (``-s`` to see)."""
    with capsys.disabled():
        print("\nchain backend timings: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(TIMINGS.items())))
