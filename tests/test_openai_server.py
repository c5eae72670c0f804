"""The OpenAI-compatible server in-process on a real socket: per-key rate limits (429 with
retry-after), multipart edge cases, and a coordinator without a chain running unpaid batches'
bookkeeping (keys from the gRPC API, models by name)."""

from __future__ import annotations

import httpx
import openai
import pytest

from gpumesh.client import Client
from gpumesh.identity import Wallet
from gpumesh.localnet import free_port
from tests.conftest import ServerThread


@pytest.fixture
def api(coordinator_settings, tiny_model):
    port = free_port()
    wallet = Wallet.generate()
    settings = coordinator_settings.model_copy(update={
        "openai_listen": f"127.0.0.1:{port}",
        "rate_limits": coordinator_settings.rate_limits.model_copy(update={"openai_per_s": 0.01, "openai_burst": 4}),
        "model_registrars": [wallet.address]})
    srv = ServerThread(settings).start()
    with Client.connect(srv.target, wallet=wallet) as sdk:
        sdk.add_model("tiny", tiny_model)
        key = sdk.create_api_key(name="t").key
        yield srv, f"http://127.0.0.1:{port}/v1", key, sdk
    srv.stop()


def test_a_key_over_its_rate_gets_429_with_retry_after(api):
    _, base, key, _ = api
    oc = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
    for _ in range(4):
        assert [m.id for m in oc.models.list()] == ["tiny"]
    with pytest.raises(openai.RateLimitError) as exc:
        oc.models.list()
    assert exc.value.body["code"] == "rate_limit_exceeded" and int(exc.value.response.headers["retry-after"]) >= 1


def test_multipart_uploads_need_a_file_and_a_purpose_in_any_order(api):
    _, base, key, _ = api
    auth = {"authorization": f"Bearer {key}"}
    late = httpx.post(f"{base}/files", headers=auth, timeout=10,
                      files=[("file", ("a.jsonl", b'{"x": 1}\n')), ("purpose", (None, "batch"))])
    assert late.status_code == 200 and late.json()["purpose"] == "batch" and late.json()["bytes"] == 9
    no_file = httpx.post(f"{base}/files", headers=auth, data={"purpose": "batch"}, files={"other": ("x", b"1")},
                         timeout=10)
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    no_purpose = httpx.post(f"{base}/files", headers=auth, files={"file": ("a", b"1")}, timeout=10)
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    not_multipart = httpx.post(f"{base}/files", headers=auth, content=b"raw", timeout=10)
    assert not_multipart.status_code == 400 and not_multipart.json()["error"]["param"] == "file"


def test_keys_are_listed_and_revoked_through_the_grpc_api(api):
    _, base, key, sdk = api
    [info] = sdk.list_api_keys()
    assert info.name == "t" and info.wallet == sdk.wallet.address and not info.key  # never shown again
    sdk.revoke_api_key(info.key_id)
    r = httpx.get(f"{base}/models", headers={"authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 401
    assert [m.name for m in sdk.list_models()] == ["tiny"] and sdk.list_models()[0].format == "hf-tar"


def test_only_registrars_name_models_freely(api, tiny_model):
    from gpumesh.errors import PermissionDenied

    srv, _, _, sdk = api
    cid = sdk.model_cid("tiny")
    with Client.connect(srv.target, wallet=Wallet.generate()) as stranger:
        mine = stranger.upload(tiny_model)
        with pytest.raises(PermissionDenied) as exc:
            stranger.add_model("HuggingFaceTB/SmolLM2-135M-Instruct", mine)
        assert exc.value.field == "name"
        entry = stranger.add_model(f"{stranger.wallet.address}/tiny", mine)  # its own namespace
        assert entry.cid == cid
        with pytest.raises(PermissionDenied):
            stranger.add_model("tiny", mine, replace=True)
