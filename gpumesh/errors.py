"""One error hierarchy for every gpumesh process.

Domain code raises these; the coordinator's server interceptor maps each to a gRPC status
code (``grpc_code`` names a ``grpc.StatusCode`` member) and the SDK maps statuses back.
"""

from __future__ import annotations

import re


class GpumeshError(Exception):
    """Root of all gpumesh errors. ``retryable`` tells a caller whether trying again may help."""

    grpc_code: str = "INTERNAL"
    retryable: bool = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(GpumeshError):
    """The request is malformed; ``field`` names the offending field."""

    grpc_code = "INVALID_ARGUMENT"


class NotFound(GpumeshError):
    """A job, provider or artifact (CID) does not exist."""

    grpc_code = "NOT_FOUND"


class AlreadyExists(GpumeshError):
    grpc_code = "ALREADY_EXISTS"


class FailedPrecondition(GpumeshError):
    """The request is valid but the target is in the wrong state (e.g. cancel a finished job)."""

    grpc_code = "FAILED_PRECONDITION"


class ResourceExhausted(GpumeshError):
    """A size or rate limit was exceeded."""

    grpc_code = "RESOURCE_EXHAUSTED"
    retryable = True


class Unauthenticated(GpumeshError):
    """Missing, expired or forged credentials (bad signature, unknown session)."""

    grpc_code = "UNAUTHENTICATED"


class PermissionDenied(GpumeshError):
    grpc_code = "PERMISSION_DENIED"


class Unavailable(GpumeshError):
    """A dependency (coordinator, artifact node) cannot be reached right now."""

    grpc_code = "UNAVAILABLE"
    retryable = True


class IntegrityError(GpumeshError):
    """Fetched bytes do not hash to the CID that was asked for."""

    grpc_code = "DATA_LOSS"


class WorkloadError(GpumeshError):
    """A workload failed on the provider (bad model, bad input, timeout)."""

    grpc_code = "ABORTED"

    def __init__(self, message: str, *, field: str | None = None, retryable: bool = False) -> None:
        super().__init__(message, field=field)
        self.retryable = retryable


class ArtifactError(WorkloadError):
    """An artifact a task names (a model, an adapter, a checkpoint) is malformed or unsafe: every
    honest provider would fail on it the same way, so the failure is final."""

    def __init__(self, message: str, *, field: str | None = "model") -> None:
        super().__init__(message, field=field, retryable=False)


def is_final(exc: BaseException) -> bool:
    """Whether a task failed for a reason any honest provider would hit again: only a
    ``WorkloadError`` (bad artifact, input, parameters, chat template, adapter) not marked
    retryable. Anything else (I/O, fetch, integrity, out of memory, an unknown exception) may
    pass on a retry, so it is not."""
    return isinstance(exc, WorkloadError) and not exc.retryable


_BY_CODE: dict[str, type[GpumeshError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        IntegrityError,
        WorkloadError,
    )
}


_FIELD = re.compile(r"([A-Za-z_][\w.\[\]-]*): (.*)", re.S)


def error_for_code(code_name: str, message: str) -> GpumeshError:
    """Build the typed error for a gRPC status code name (used by the SDK); the field a server
    error names (``field: message``) is kept as ``field``."""
    cls = _BY_CODE.get(code_name, GpumeshError)
    if m := _FIELD.fullmatch(message):
        return cls(m.group(2), field=m.group(1))
    return cls(message)
