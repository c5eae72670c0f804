"""The SDK's ArtifactStore over the coordinator's ArtifactService (gRPC, a real socket) meets the
same contract as the embedded store, and verifies what it fetches."""

from __future__ import annotations

import grpc
import pytest

from gpumesh.artifacts import cid_of_bytes
from gpumesh.artifacts.remote import RemoteArtifactStore
from gpumesh.errors import IntegrityError
from gpumesh.identity import Wallet
from gpumesh.signing import SigningInterceptor
from tests.artifact_contract import ArtifactStoreContract


@pytest.fixture
def store(server):
    """As one wallet: every artifact call is signed, and a wallet reads what it uploaded."""
    with grpc.insecure_channel(server.target) as channel:
        yield RemoteArtifactStore(grpc.intercept_channel(channel, SigningInterceptor(Wallet.generate())), timeout=30)


class TestRemoteArtifactStoreContract(ArtifactStoreContract):
    pass


def test_content_asked_for_by_its_cidv0_is_accepted(store):
    from gpumesh.artifacts.cid import parse_cid

    data = bytes(range(256)) * 2000  # 512,000 bytes: a dag-pb root, which has a CIDv0 spelling
    cid = parse_cid(store.put_bytes(data))
    v0 = str(type(cid)(0, cid.codec, cid.digest))
    assert v0.startswith("Qm") and store.get_bytes(v0) == data


def test_bytes_that_do_not_hash_to_the_cid_are_an_integrity_error(store):
    from gpumesh.artifacts.cid import parse_cid

    cid = store.put_bytes(b"the real content")
    with pytest.raises(IntegrityError):  # as if the server had answered other bytes
        list(store._verified(cid, parse_cid(cid_of_bytes(b"other content")), None, iter([])))
