"""Container health probe for the gpumesh coordinator: one gRPC ``grpc.health.v1.Health/Check``
of the overall service (``""``), as ``gpumesh.localnet.wait_healthy`` does, but a single try so
Docker's HEALTHCHECK (and compose's ``healthcheck``) decide how often to retry.

    python healthcheck.py [HOST:PORT]      # default $GPUMESH_HEALTH_TARGET or 127.0.0.1:50051

Exit 0 when the coordinator answers SERVING, 1 otherwise (not listening, timed out, NOT_SERVING).
"""

from __future__ import annotations

import os
import sys

DEFAULT_TARGET = "127.0.0.1:50051"


def check(target: str, timeout: float = 3.0) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            return False, f"{target}: {exc.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    return resp.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = argv[0] if argv else os.environ.get("GPUMESH_HEALTH_TARGET", DEFAULT_TARGET)
    timeout = float(os.environ.get("GPUMESH_HEALTH_TIMEOUT", "3"))
    ok, detail = check(target, timeout)
    print(detail, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
