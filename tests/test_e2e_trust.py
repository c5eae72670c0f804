"""Cheaters that the former defaults let through, against a real coordinator, chain and daemons
over real sockets: a provider that corrupts one record in sixteen is caught by its first audit (a
full-coverage re-score) and slashed, and once its stake is below the minimum it gets no more work;
two identities on one network running the same cut-down model are never each other's checkers
and are caught by the honest provider of another network.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from gpumesh.client import Client
from gpumesh.identity import Wallet
from gpumesh.jobspec import InferenceParams, JobSpec
from gpumesh.localnet import LocalNetwork
from tests.adversaries.common import provider_env
from tests.test_e2e_verification import BUDGET, NEW_TOKENS, PRICE, REFEREE_PRICE, SLASH, STAKE, _slashes, _wait_slashed

pytestmark = pytest.mark.e2e

PROMPTS16 = [f"record {i}: tell me about {w}" for i, w in enumerate(
    ["leases", "shards", "referees", "stakes", "replicas", "audits", "decoys", "slashes", "escrows", "tokens",
     "blocks", "kernels", "queues", "proofs", "prices", "models"])]
AUDITS_ONLY = {"GPUMESH_COORDINATOR_REPLICATION_P_NEW": "0", "GPUMESH_COORDINATOR_REPLICATION_P_FLOOR": "0",
               "GPUMESH_COORDINATOR_CHECK_WAIT_S": "3"}


def _direct(tiny_model: Path, root: Path, prompts: list[str]) -> list[str]:
    from provider_node.workloads.inference import run_inference
    from provider_node.workloads.models import materialize

    root.mkdir(parents=True, exist_ok=True)
    (root / "in.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    run_inference(materialize(tiny_model, root / "model"), root / "in.jsonl", root / "out.jsonl",
                  {"max_new_tokens": NEW_TOKENS})
    return [json.loads(line)["completion"] for line in (root / "out.jsonl").read_text().splitlines()]


def _submit(client: Client, model_cid: str, prompts: list[str], shard: int, wallet: Wallet):
    spec = JobSpec(name="trust", model_cid=model_cid,
                   input_cid=client.upload("".join(json.dumps({"prompt": p}) + "\n" for p in prompts).encode()),
                   inference=InferenceParams(max_new_tokens=NEW_TOKENS), shard_size=shard, max_price_per_hour=PRICE)
    return client.submit(spec, budget=BUDGET, wallet=wallet)


def _client(net: LocalNetwork) -> tuple[Client, Wallet]:
    from eth_account import Account

    from gpumesh.chain import dev_keys

    submitter = Wallet.from_hex(dev_keys()[1])
    client = Client.connect(net.target, wallet=submitter)
    client.chain().mint(Account.from_key(submitter.private_key), submitter.address, 4 * BUDGET)
    return client, submitter


def _done(handle, net: LocalNetwork) -> None:
    status = handle.wait(timeout=300)
    assert status.state == "COMPLETED", (status.raw.error, net.coordinator.log_tail())


def test_one_wrong_record_in_sixteen_is_caught_by_the_first_audit_and_a_slashed_provider_gets_no_work(
        tmp_path, tiny_model):
    expected = _direct(tiny_model, tmp_path / "direct", PROMPTS16)
    one_record = provider_env("tests.adversaries.wrong_outputs", {"rate": 1.0, "record_rate": 0.001, "seed": 1})
    with LocalNetwork(tmp_path / "net", lease_ttl_s=10, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        net.start_coordinator({"GPUMESH_COORDINATOR_MIN_STAKE": str(STAKE),
                               "GPUMESH_COORDINATOR_SLASH_AMOUNT": str(SLASH), **AUDITS_ONLY})
        for name, price, env in (("cheater", PRICE // 2, one_record), ("honest", PRICE, {})):
            net.stake_provider(name, STAKE)  # a slash leaves it below the minimum
            net.start_provider(name, price=price, threads=1, runtime="process" if env else "auto", extra_env=env)
        net.start_provider("referee", price=REFEREE_PRICE, threads=1, tier="centralized")
        net.wait_providers(3, timeout=90)
        client, wallet = _client(net)
        with client:
            model = client.upload(tiny_model)
            first = _submit(client, model, PROMPTS16, 16, wallet)  # one task of 16 records: the cheaper takes it
            _done(first, net)
            assert [o["completion"] for o in first.outputs()] == expected
            chain = client.chain()
            info = {p.name: p for p in client.list_providers()}
            events = _wait_slashed(chain, info["cheater"].address)
            # SLASH, plus the referee's pay if a referee decided it (the loser pays for the dispute)
            assert len(events) == 1 and SLASH <= (taken := int(events[0]["args"]["amount"])) < 2 * SLASH
            assert chain.stake_of(info["cheater"].address).active == STAKE - taken < STAKE
            assert not _slashes(chain, info["honest"].address)
            rows = list(client.get_job(first.id).raw.tasks)
            by_id = {p.provider_id: p.name for p in info.values()}
            audits = [t for t in rows if t.role == "audit"]
            # its one result was audited in full, disputed and refereed: caught on its first cheat
            assert audits and by_id[audits[0].provider_id] == "honest"
            assert any(t.role == "referee" and by_id[t.provider_id] == "referee" for t in rows)
            assert info["cheater"].verified_invalid == 1
            assert not [t for t in rows if t.role == "primary" and by_id.get(t.provider_id) == "cheater"]

            deadline = time.monotonic() + 30  # the slasher re-reads the stake; the scheduler then skips it
            while client.get_job(first.id).raw.settlement != "SETTLED":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            second = _submit(client, model, PROMPTS16[:8], 8, wallet)
            _done(second, net)
            rows = list(client.get_job(second.id).raw.tasks)
            assert rows and not [t for t in rows if by_id.get(t.provider_id) == "cheater"]  # nothing, not even checks
            assert [o["completion"] for o in second.outputs()] == expected[:8]


def test_two_identities_on_one_network_never_check_each_other_and_are_caught(tmp_path, tiny_model):
    expected = _direct(tiny_model, tmp_path / "direct", PROMPTS16[:8])
    cut = provider_env("tests.adversaries.smaller_model", {})
    with LocalNetwork(tmp_path / "net", lease_ttl_s=10, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        net.start_coordinator({"GPUMESH_COORDINATOR_MIN_STAKE": str(STAKE),
                               "GPUMESH_COORDINATOR_SLASH_AMOUNT": str(SLASH),
                               "GPUMESH_COORDINATOR_INDEPENDENT_NETWORKS": "true", **AUDITS_ONLY},
                              listen=f"[::]:{net.port}")
        for name in ("sybil-a", "sybil-b"):  # declared operators differ: only the network ties them
            net.stake_provider(name, STAKE)
            net.start_provider(name, price=PRICE // 2, threads=1, runtime="process",
                               extra_env={**cut, "GPUMESH_PROVIDER_OPERATOR": name})
        net.stake_provider("honest", STAKE)
        net.start_provider("honest", price=PRICE, threads=1, coordinator=f"[::1]:{net.port}")  # another network
        net.start_provider("referee", price=REFEREE_PRICE, threads=1, tier="centralized")
        net.wait_providers(4, timeout=90)
        client, wallet = _client(net)
        with client:
            handle = _submit(client, client.upload(tiny_model), PROMPTS16[:8], 4, wallet)  # a task per sybil
            _done(handle, net)
            assert [o["completion"] for o in handle.outputs()] == expected
            info = {p.name: p for p in client.list_providers()}
            by_id = {p.provider_id: p.name for p in info.values()}
            rows = list(client.get_job(handle.id).raw.tasks)
            primaries = {t.task_id: by_id.get(t.provider_id, "") for t in rows if t.role == "primary"}
            # every check of a sybil's result (its exclusions name the sybil) went off its network
            db = sqlite3.connect(f"file:{net.root / 'coordinator' / 'coordinator.db'}?mode=ro", uri=True)
            with closing(db):
                checks = db.execute("SELECT provider_id, exclude_json FROM tasks WHERE role IN ('audit', 'replica') "
                                    "AND provider_id != ''").fetchall()
            of_sybils = [by_id[pid] for pid, exclude in checks if {"sybil-a", "sybil-b"} & set(json.loads(exclude))]
            assert of_sybils and set(of_sybils) <= {"honest", "referee"}
            assert all("net:127.0.0.0/24" in json.loads(x) for _, x in checks if {"sybil-a", "sybil-b"} & set(json.loads(x)))
            assert set(primaries.values()) <= {"honest"}  # every cut-down result was rejected and redone
            chain = client.chain()
            caught = [n for n in ("sybil-a", "sybil-b") if _slashes(chain, info[n].address)]
            assert caught and all(info[n].verified_invalid >= 1 for n in caught)
            assert not _slashes(chain, info["honest"].address)


REPLICAS_ONLY = {"GPUMESH_COORDINATOR_REPLICATION_P_NEW": "1", "GPUMESH_COORDINATOR_AUDIT_RATE": "0"}


def test_a_noised_weights_provider_loses_its_differing_records_to_the_honest_replica(tmp_path, tiny_model):
    """Weights with 1% noise: 11 of these 16 records differ from the model's, and the band alone
    (what an audit has) accepts 6 of those (bench/tolerance.py). A replica disputes them and the
    referee judges record by record against the honest side: none is delivered."""
    expected = _direct(tiny_model, tmp_path / "direct", PROMPTS16)
    noised = provider_env("tests.adversaries.noised_weights", {"sigma": 0.01, "seed": 0})
    with LocalNetwork(tmp_path / "net", lease_ttl_s=10, heartbeat_interval_s=0.5) as net:
        net.start_chain()
        net.start_coordinator({"GPUMESH_COORDINATOR_MIN_STAKE": str(STAKE),
                               "GPUMESH_COORDINATOR_SLASH_AMOUNT": str(SLASH), **REPLICAS_ONLY})
        for name, price, env in (("noised", PRICE // 2, noised), ("honest", PRICE, {})):
            net.stake_provider(name, STAKE)
            net.start_provider(name, price=price, threads=1, runtime="process" if env else "auto", extra_env=env)
        net.start_provider("referee", price=REFEREE_PRICE, threads=1, tier="centralized")
        net.wait_providers(3, timeout=90)
        client, wallet = _client(net)
        with client:
            handle = _submit(client, client.upload(tiny_model), PROMPTS16, 8, wallet)
            _done(handle, net)
            assert [o["completion"] for o in handle.outputs()] == expected  # not one of its records
            info = {p.name: p for p in client.list_providers()}
            by_id = {p.provider_id: p.name for p in info.values()}
            rows = list(client.get_job(handle.id).raw.tasks)
            referees = [t for t in rows if t.role == "referee"]
            assert referees and any("loses records" in t.verdict for t in referees), [t.verdict for t in rows]
            assert not [t for t in rows if t.role == "primary" and by_id.get(t.provider_id) == "noised"]
            assert info["noised"].verified_invalid >= 1 and info["honest"].verified_invalid == 0
            assert _wait_slashed(client.chain(), info["noised"].address)
            assert not _slashes(client.chain(), info["honest"].address)
