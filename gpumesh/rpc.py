"""Client-side gRPC helpers shared by the SDK and the provider daemon."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import grpc
import grpc.aio

from gpumesh.errors import InvalidArgument, error_for_code

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


@contextmanager
def translate_rpc_error() -> Iterator[None]:
    """Re-raise a grpc.RpcError as the matching typed gpumesh error."""
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        raise error_for_code(code.name, details or code.name) from exc


@dataclass(frozen=True)
class TlsConfig:
    """How a client reaches a TLS coordinator: the CA that signed its certificate (None: the
    system's roots), and for mutual TLS this client's certificate chain and key (PEM files)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str = ""  # the name to check the certificate for, when the target's host differs

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidArgument("a client certificate needs both cert_file and key_file", field="tls")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise InvalidArgument(f"cannot read {path}: {exc.strerror}", field="tls") from None

        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))

    def options(self) -> tuple:
        return CHANNEL_OPTIONS + ((("grpc.ssl_target_name_override", self.server_name),) if self.server_name else ())


def tls_from_env(env=os.environ) -> TlsConfig | None:
    """``GPUMESH_TLS_CA`` / ``GPUMESH_TLS_CERT`` / ``GPUMESH_TLS_KEY`` (any set: TLS), else None."""
    ca, cert, key = (env.get(f"GPUMESH_TLS_{k}") or None for k in ("CA", "CERT", "KEY"))
    if not (ca or cert or key or env.get("GPUMESH_TLS")):
        return None
    return TlsConfig(Path(ca) if ca else None, Path(cert) if cert else None, Path(key) if key else None,
                     env.get("GPUMESH_TLS_SERVER_NAME", ""))


def channel(target: str, tls: TlsConfig | None = None) -> grpc.Channel:
    """A channel to ``target``: TLS with ``tls``, plaintext (loopback, tests) without."""
    if tls is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, tls.credentials(), options=tls.options())


def aio_channel(target: str, tls: TlsConfig | None = None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, tls.credentials(), options=tls.options())


def insecure_channel(target: str) -> grpc.Channel:
    return channel(target)
