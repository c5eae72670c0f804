"""TLS on the gRPC API: the SDK and the provider daemon verify the coordinator's certificate;
with a client CA the coordinator requires theirs (mutual TLS)."""

from __future__ import annotations

import sys
import time

import pytest

from coordinator.config import CoordinatorSettings
from coordinator.server import CoordinatorServer
from gpumesh.client import Client
from gpumesh.errors import InvalidArgument, Unavailable
from gpumesh.localnet import Proc, free_port
from gpumesh.rpc import TlsConfig
from tests.certs import TestCA
from tests.conftest import ServerThread


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path / "pki")


def _server(tmp_path, ca: TestCA, *, mutual: bool) -> ServerThread:
    pem = ca.issue("coordinator", server=True)
    settings = CoordinatorSettings(listen=f"127.0.0.1:{free_port()}", data_dir=tmp_path / "coordinator",
                                   heartbeat_interval_s=0.5, tls_cert_file=pem.cert, tls_key_file=pem.key,
                                   tls_client_ca_file=ca.pem.cert if mutual else None)
    return ServerThread(settings).start()


def test_the_sdk_talks_tls_only_to_a_certificate_its_ca_signed(tmp_path, ca):
    srv = _server(tmp_path, ca, mutual=False)
    try:
        with Client.connect(srv.target, tls=TlsConfig(ca.pem.cert)) as client:
            assert client.list_providers() == []
        with pytest.raises(Unavailable):  # plaintext to a TLS port
            Client.connect(srv.target, wait_ready=2, tls=None)
        other = TestCA(tmp_path / "other", name="another CA")
        with pytest.raises(Unavailable):  # a certificate from a CA it does not trust
            Client.connect(srv.target, wait_ready=2, tls=TlsConfig(other.pem.cert))
    finally:
        srv.stop()


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca(tmp_path, ca):
    srv = _server(tmp_path, ca, mutual=True)
    try:
        with pytest.raises(Unavailable):
            Client.connect(srv.target, wait_ready=2, tls=TlsConfig(ca.pem.cert))
        stranger = TestCA(tmp_path / "stranger", name="stranger CA").issue("mallory", server=False)
        with pytest.raises(Unavailable):
            Client.connect(srv.target, wait_ready=2, tls=TlsConfig(ca.pem.cert, stranger.cert, stranger.key))
        me = ca.issue("submitter", server=False)
        with Client.connect(srv.target, tls=TlsConfig(ca.pem.cert, me.cert, me.key)) as client:
            assert client.list_providers() == []
    finally:
        srv.stop()


@pytest.mark.e2e
def test_a_provider_daemon_registers_over_mutual_tls(tmp_path, ca):
    srv = _server(tmp_path, ca, mutual=True)
    node = ca.issue("provider", server=False)
    proc = Proc("prov", [sys.executable, "-m", "gpumesh", "provider", "run", "--coordinator", srv.target,
                         "--data-dir", str(tmp_path / "prov"), "--name", "tls-node", "--runtime", "process", "--unisolated",
                         "--tls-ca", str(ca.pem.cert), "--tls-cert", str(node.cert), "--tls-key", str(node.key)],
                tmp_path / "prov.log", {**__import__("os").environ, "PYTHONUNBUFFERED": "1"}).start()
    me = ca.issue("submitter", server=False)
    try:
        with Client.connect(srv.target, tls=TlsConfig(ca.pem.cert, me.cert, me.key)) as client:
            deadline = time.monotonic() + 60
            while not client.list_providers(connected_only=True):
                assert proc.alive and time.monotonic() < deadline, proc.log_tail()
                time.sleep(0.2)
            assert client.list_providers(connected_only=True)[0].name == "tls-node"
    finally:
        proc.stop()
        srv.stop()


def test_half_configured_tls_is_refused_naming_the_setting(tmp_path, ca):
    pem = ca.issue("coordinator", server=True)
    for kwargs, field in (({"tls_cert_file": pem.cert}, "tls_cert_file"),
                          ({"tls_client_ca_file": ca.pem.cert}, "tls_cert_file")):
        settings = CoordinatorSettings(listen=f"127.0.0.1:{free_port()}", data_dir=tmp_path / "c", **kwargs)
        with pytest.raises(InvalidArgument) as err:
            CoordinatorServer(settings)
        assert err.value.field == field
    with pytest.raises(InvalidArgument):
        TlsConfig(ca.pem.cert, cert_file=pem.cert)  # a client certificate without its key
