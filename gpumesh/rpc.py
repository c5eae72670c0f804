"""Client-side gRPC helpers shared by the SDK and the provider daemon."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import grpc

from gpumesh.errors import error_for_code

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


def insecure_channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
