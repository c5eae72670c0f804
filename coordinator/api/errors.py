"""One server interceptor that turns gpumesh errors into gRPC status codes.

It also decodes the request messages itself: a body that is not a valid message is the caller's
fault (INVALID_ARGUMENT naming the message type), where grpc's own decoding would answer UNKNOWN
for a unary call and leave a stream's handler to fail with INTERNAL; and it range-checks every
number in it (coordinator.api.ranges).
"""

from __future__ import annotations

import inspect
import logging

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from coordinator.api.ranges import check_ranges
from gpumesh.errors import GpumeshError, InvalidArgument

log = logging.getLogger(__name__)


# Status details travel in a trailer, percent-encoded (up to 12 bytes a character); a client drops a
# call whose trailers pass 8 KiB, so a message echoing a huge field would reach it as RESOURCE_EXHAUSTED.
MAX_DETAILS = 480


def details(exc: GpumeshError) -> str:
    """The status message: the error's text, cut to MAX_DETAILS characters (the field name leads)."""
    text = str(exc)
    return text if len(text) <= MAX_DETAILS else f"{text[:MAX_DETAILS]}... ({len(text)} characters)"


async def _abort(context: aio.ServicerContext, exc: Exception):
    if isinstance(exc, GpumeshError):
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code), details(exc))
    log.exception("unhandled error in RPC", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


class _Decoder:
    """Decodes request bodies; remembers a bad one, so a handler that swallows the error (a session
    reader that only logs) still ends the call with INVALID_ARGUMENT."""

    def __init__(self, deserializer, streaming: bool) -> None:
        self.deserializer = deserializer
        self.streaming = streaming
        self.error: InvalidArgument | None = None

    def one(self, raw):
        if self.deserializer is None:
            return raw
        try:
            msg = self.deserializer(raw)
        except DecodeError as exc:
            self.error = InvalidArgument(f"the request body is not a valid message ({exc})", field="request")
            raise self.error from None
        try:
            check_ranges(msg)
        except InvalidArgument as exc:
            self.error = exc
            raise
        return msg

    async def each(self, raw_iterator):
        async for raw in raw_iterator:
            yield self.one(raw)

    def request(self, raw_or_iterator):
        return self.each(raw_or_iterator) if self.streaming else self.one(raw_or_iterator)


def _wrap_unary(behavior, deserializer, streaming: bool):
    async def wrapper(request_or_iterator, context):
        decoder = _Decoder(deserializer, streaming)
        try:
            result = await behavior(decoder.request(request_or_iterator), context)
        except (aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:
            await _abort(context, exc)
        if decoder.error is not None:
            await _abort(context, decoder.error)
        return result

    return wrapper


def _wrap_stream(behavior, deserializer, streaming: bool):
    async def wrapper(request_or_iterator, context):
        decoder = _Decoder(deserializer, streaming)
        try:
            result = behavior(decoder.request(request_or_iterator), context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result
        except (aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:
            await _abort(context, exc)
        if decoder.error is not None:
            await _abort(context, decoder.error)

    return wrapper


class ErrorInterceptor(aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        kw = dict(response_serializer=handler.response_serializer)  # requests: decoded by the wrappers
        decode = handler.request_deserializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary, decode, False), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(handler.stream_unary, decode, True), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, decode, False), **kw)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream, decode, True), **kw)
