"""One server interceptor that turns gpumesh errors into gRPC status codes."""

from __future__ import annotations

import inspect
import logging

import grpc
from grpc import aio

from gpumesh.errors import GpumeshError

log = logging.getLogger(__name__)


async def _abort(context: aio.ServicerContext, exc: Exception):
    if isinstance(exc, GpumeshError):
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))
    log.exception("unhandled error in RPC", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


def _wrap_unary(behavior):
    async def wrapper(request_or_iterator, context):
        try:
            return await behavior(request_or_iterator, context)
        except (aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:
            await _abort(context, exc)

    return wrapper


def _wrap_stream(behavior):
    async def wrapper(request_or_iterator, context):
        try:
            result = behavior(request_or_iterator, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result
        except (aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:
            await _abort(context, exc)

    return wrapper


class ErrorInterceptor(aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        kw = dict(
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(handler.stream_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream), **kw)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream), **kw)
