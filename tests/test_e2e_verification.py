"""End to end with adversarial providers: spot-checked redundant execution catches each kind of
cheat, the referee (a centralized provider) decides, the cheater is slashed on-chain through the
ProviderRegistry and loses its pay, and the job still completes with the honest outputs.

Every result of an open-market provider is checked: replicated (some probation results) or audited
in full (every record re-scored, plus a decoy); a disputed check goes to the referee, which
re-scores both sides teacher-forced.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from gpumesh.client import Client
from gpumesh.identity import Wallet
from gpumesh.jobspec import InferenceParams, JobSpec
from gpumesh.localnet import LocalNetwork
from gpumesh.v1 import common_pb2
from tests.adversaries.common import provider_env

pytestmark = pytest.mark.e2e

PROMPTS = [f"question {i}: what is {w}?" for i, w in enumerate(
    ["a lease", "a shard", "a referee", "a stake", "a replica", "an audit", "a decoy", "a slash"])]
STAKE = 10 * 10**18  # a slash takes at most a quarter of the stake: this keeps each at SLASH
SLASH = 10**18
PRICE = 36_000_000  # per hour: 10,000 base units a second
REFEREE_PRICE = 10 * PRICE  # above the job's cap: the referee never takes primaries
BUDGET = 10**12
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def expected(tiny_model, tmp_path_factory) -> list[str]:
    from provider_node.workloads.inference import run_inference
    from provider_node.workloads.models import materialize

    root = tmp_path_factory.mktemp("direct")
    (root / "in.jsonl").write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    run_inference(materialize(tiny_model, root / "model"), root / "in.jsonl", root / "out.jsonl",
                  {"max_new_tokens": NEW_TOKENS})
    return [json.loads(line)["completion"] for line in (root / "out.jsonl").read_text().splitlines()]


def _market(net: LocalNetwork, providers: dict[str, dict[str, str]], settings: dict[str, str] | None = None) -> None:
    """A chain, a coordinator that requires stake and slashes (and ``settings``), a staked
    open-market provider per entry of ``providers`` (name -> extra env), and an unstaked
    centralized referee."""
    net.start_chain()
    net.start_coordinator({"GPUMESH_COORDINATOR_MIN_STAKE": str(STAKE),
                           "GPUMESH_COORDINATOR_SLASH_AMOUNT": str(SLASH), **(settings or {})})
    for name, env in providers.items():
        net.stake_provider(name, STAKE)
        net.start_provider(name, price=PRICE, threads=1, runtime="process" if env else "auto", extra_env=env)
    net.start_provider("referee", price=REFEREE_PRICE, threads=1, tier="centralized")
    net.wait_providers(len(providers) + 1, timeout=90)


def _run_job(net: LocalNetwork, tiny_model: Path, expected: list[str]) -> tuple[Client, object, dict]:
    from eth_account import Account

    from gpumesh.chain import dev_keys

    submitter = Wallet.from_hex(dev_keys()[1])
    client = Client.connect(net.target, wallet=submitter)  # it uploads, submits and deposits
    chain = client.chain()
    chain.mint(Account.from_key(submitter.private_key), submitter.address, BUDGET)
    spec = JobSpec(name="checked", model_cid=client.upload(tiny_model),
                   input_cid=client.upload("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS).encode()),
                   inference=InferenceParams(max_new_tokens=NEW_TOKENS), shard_size=4, max_price_per_hour=PRICE)
    handle = client.submit(spec, budget=BUDGET, wallet=submitter)
    status = handle.wait(timeout=300)
    assert status.state == "COMPLETED", (status.raw.error, net.coordinator.log_tail())
    # The job's output is the honest one, whatever the cheaters returned.
    assert [o["completion"] for o in handle.outputs()] == expected
    deadline = time.monotonic() + 60
    while (job := client.get_job(handle.id).raw).settlement != "SETTLED":
        assert time.monotonic() < deadline, f"not settled: {job.settlement}"
        time.sleep(0.2)
    providers = {p.name: p.address for p in client.list_providers()}
    return client, job, providers


def _slashes(chain, address: str) -> list[dict]:
    return chain.events("ProviderRegistry", "Slashed", provider=address)


def _wait_slashed(chain, address: str, timeout: float = 30, why=lambda: "") -> list[dict]:
    """The registry's Slashed events for ``address``, once there is one; ``why()`` explains a timeout."""
    deadline = time.monotonic() + timeout
    while not (events := _slashes(chain, address)):
        assert time.monotonic() < deadline, f"{address} was never slashed\n{why()}"
        time.sleep(0.2)
    return events


def _story(net: LocalNetwork, client: Client, job_id: str) -> str:
    """Who ran what in the job, and the coordinator's log: what a failed assertion needs to say."""
    names = {p.provider_id: p.name for p in client.list_providers()}
    tasks = [f"{t.task_id} {t.role} {names.get(t.provider_id, t.provider_id)} {t.state} {t.verdict!r}"
             for t in client.get_job(job_id).raw.tasks]
    return "\n".join(tasks) + "\n--- coordinator\n" + net.coordinator.log_tail(12000)


def _referee_costs(net: LocalNetwork, job_id: str) -> list[int]:
    """What each referee of the job earned from its budget, read from the coordinator's store."""
    from coordinator.config import CoordinatorSettings
    from coordinator.models import TaskRole
    from coordinator.store.sqlite import SqliteStore
    from coordinator.verifier import Verifier

    store = SqliteStore(CoordinatorSettings(data_dir=net.root / "coordinator").db_path)
    try:
        return [Verifier.referee_cost(t) for t in store.list_checks(job_id) if t.role is TaskRole.REFEREE]
    finally:
        store.close()


def _assert_cheater_caught(net: LocalNetwork, client: Client, job, providers: dict, cheater: str,
                           honest: list[str]) -> None:
    chain = client.chain()
    events = _wait_slashed(chain, providers[cheater], why=lambda: _story(net, client, job.job_id))
    # Each slash takes SLASH, plus the referee's pay where the referee decided a dispute the cheater
    # lost alone: the submitter's budget paid the referee, the cheater's stake pays the submitter back.
    referee_costs = Counter(_referee_costs(net, job.job_id))
    deadline = time.monotonic() + 30
    while not (extra := Counter(int(e["args"]["amount"]) - SLASH for e in events) - Counter([0])) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
        events = _slashes(chain, providers[cheater])
    assert extra and not extra - referee_costs, (extra, referee_costs)  # each is one referee's whole pay
    assert all(int(e["args"]["amount"]) >= SLASH for e in events)
    assert {e["args"]["beneficiary"].lower() for e in events} == {client.wallet.address.lower()}
    assert chain.stake_of(providers[cheater]).active == STAKE - sum(int(e["args"]["amount"]) for e in events)
    for name in honest:
        assert not _slashes(chain, providers[name]), f"honest {name} was slashed"
        assert chain.stake_of(providers[name]).active == (0 if name == "referee" else STAKE)  # referees need none
    rows = list(job.tasks)
    info = {p.name: p for p in client.list_providers()}
    by_id = {p.provider_id: name for name, p in info.items()}
    done = (common_pb2.TASK_STATE_VERIFIED, common_pb2.TASK_STATE_SETTLED)
    referees = [t for t in rows if t.role == "referee"]
    assert referees and all(by_id[t.provider_id] == "referee" and t.state in done for t in referees)
    # No primary result of the cheater was kept: each was rejected and redone by someone honest.
    assert [by_id[t.provider_id] for t in rows if t.role == "primary" and by_id[t.provider_id] == cheater] == []
    assert info[cheater].verified_invalid >= 1 and info[cheater].slashed == len(events)
    assert info[cheater].reputation < info["honest"].reputation


@pytest.mark.parametrize("adversary,config", [
    ("tests.adversaries.wrong_outputs", {"rate": 1.0, "record_rate": 0.5, "seed": 3}),
    ("tests.adversaries.smaller_model", {}),
], ids=["wrong-outputs", "smaller-model"])
def test_cheater_is_caught_slashed_and_unpaid(tmp_path, tiny_model, expected, adversary, config):
    with LocalNetwork(tmp_path / "net", lease_ttl_s=10, heartbeat_interval_s=0.5) as net:
        _market(net, {"honest": {}, "cheater": provider_env(adversary, config)})
        client, job, providers = _run_job(net, tiny_model, expected)
        with client:
            _assert_cheater_caught(net, client, job, providers, "cheater", ["honest", "referee"])
            chain = client.chain()
            # every result it returned was wrong and went unpaid; what it earned, it earned auditing
            by_id = {p.provider_id: p.name for p in client.list_providers()}
            paid = [t for t in job.tasks if t.state == common_pb2.TASK_STATE_SETTLED
                    and by_id.get(t.provider_id) == "cheater"]
            assert {t.role for t in paid} <= {"audit"}
            if not paid:
                assert chain.escrow_balance(providers["cheater"]) == 0
            assert chain.escrow_balance(providers["honest"]) > chain.escrow_balance(providers["cheater"])


def test_lazy_copier_is_caught(tmp_path, tiny_model, expected):
    from tests.adversaries.lazy_copy import read_log

    share = tmp_path / "collusion"
    share.mkdir()
    with LocalNetwork(tmp_path / "net", lease_ttl_s=10, heartbeat_interval_s=0.5) as net:
        _market(net, {name: provider_env("tests.adversaries.lazy_copy", {"share_dir": str(share), "name": name})
                      for name in ("copier-a", "copier-b")},
                {"GPUMESH_COORDINATOR_REPLICATION_P_NEW": "1"})  # replicas: what a copier copies into
        client, job, providers = _run_job(net, tiny_model, expected)
        with client:
            copies = [e for e in read_log(share) if e.get("action") == "copied"]
            assert copies, read_log(share)  # the replica saw a prompt set its colluder had answered
            chain = client.chain()
            for name in {e["name"] for e in copies}:
                assert len(_wait_slashed(chain, providers[name])) >= sum(e["name"] == name for e in copies)
            assert not _slashes(chain, providers["referee"])


FINETUNE = {"method": "lora", "steps": 4, "checkpoint_every": 2, "batch_size": 2, "max_seq_len": 32,
            "learning_rate": 0.01, "seed": 5}


def test_fine_tune_that_skips_steps_is_caught_by_segment_replay(tmp_path, tiny_model):
    from eth_account import Account

    from gpumesh.chain import dev_keys
    from gpumesh.tarball import read_members

    data = "".join(json.dumps({"prompt": f"q{i}", "completion": f"answer {i} " * 3}) + "\n" for i in range(8))
    with LocalNetwork(tmp_path / "net", lease_ttl_s=10, heartbeat_interval_s=0.5) as net:
        # The cheater is the only open-market provider when the job arrives, so it takes the fine-tune.
        _market(net, {"cheater": provider_env("tests.adversaries.skip_steps", {"keep": 0.5}, kind="finetune")})
        submitter = Wallet.from_hex(dev_keys()[1])
        with Client.connect(net.target, wallet=submitter) as client:
            chain = client.chain()
            chain.mint(Account.from_key(submitter.private_key), submitter.address, BUDGET)
            spec = JobSpec(name="tune", kind="finetune", model_cid=client.upload(tiny_model),
                           input_cid=client.upload(data.encode()), finetune=FINETUNE, max_price_per_hour=PRICE)
            handle = client.submit(spec, budget=BUDGET, wallet=submitter)
            info = {p.name: p for p in client.list_providers()}
            deadline = time.monotonic() + 60
            while not any(t.provider_id == info["cheater"].provider_id for t in client.get_job(handle.id).raw.tasks):
                assert time.monotonic() < deadline, "the cheater never took the fine-tune"
                time.sleep(0.1)
            net.stake_provider("honest", STAKE)
            net.start_provider("honest", price=PRICE, threads=1)
            status = handle.wait(timeout=400)
            assert status.state == "COMPLETED", (status.raw.error, net.coordinator.log_tail())
            out = handle.finetune_output()
            assert [c.step for c in out.checkpoints] == [2, 4]
            assert "adapter_model.safetensors" in read_members(client.download(out.final))
            job = client.get_job(handle.id).raw
            info = {p.name: p for p in client.list_providers()}
            by_id = {p.provider_id: name for name, p in info.items()}
            (primary,) = [t for t in job.tasks if t.role == "primary"]
            assert by_id[primary.provider_id] == "honest"  # the skipped run was rejected and redone
            replays = [t for t in job.tasks if t.role in ("replica", "referee")]
            assert any("replay" in t.verdict for t in replays)
            events = _wait_slashed(chain, info["cheater"].address)
            assert len(events) == 1 and info["cheater"].verified_invalid >= 1
            assert not _slashes(chain, info["honest"].address)
