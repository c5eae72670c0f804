"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with its status."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gpumesh.errors import (
    AlreadyExists,
    FailedPrecondition,
    GpumeshError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)

_STATUS = {InvalidArgument: 400, FailedPrecondition: 400, NotFound: 404, AlreadyExists: 409,
           Unauthenticated: 401, PermissionDenied: 403, ResourceExhausted: 429}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_
        self.headers = headers or {}


def body(message: str, *, type_: str = "invalid_request_error", param: str | None = None,
         code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def from_domain(exc: GpumeshError) -> ApiError:
    status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 500)
    field = getattr(exc, "field", None)
    if isinstance(exc, ResourceExhausted) and field in ("file", "data"):
        return ApiError(413, exc.message, param=field, code="file_too_large")
    if isinstance(exc, ResourceExhausted):
        return ApiError(429, exc.message, param=field, code="insufficient_quota" if field == "spend_cap" else
                        "rate_limit_exceeded", type_="insufficient_quota" if field == "spend_cap" else "requests",
                        headers={"retry-after": "1"})
    if status == 500:
        return ApiError(500, exc.message, type_="server_error")
    if isinstance(exc, NotFound) and field == "model":
        return ApiError(404, exc.message, param=field, code="model_not_found")
    return ApiError(status, exc.message, param=field)


def install(app) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return JSONResponse(body(exc.message, type_=exc.type, param=exc.param, code=exc.code), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(GpumeshError)
    async def _domain(request: Request, exc: GpumeshError):
        return await _api(request, from_domain(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        msg = err.get("msg", "invalid request")
        if err.get("type") == "missing":
            msg = f"Missing required parameter: '{param}'."
        elif param:
            msg = f"Invalid '{param}': {msg}"
        return JSONResponse(body(msg, param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
        message = (f"Invalid URL ({request.method} {request.url.path})" if exc.status_code in (404, 405)
                   else str(exc.detail))
        return JSONResponse(body(message, code=code), status_code=exc.status_code)
