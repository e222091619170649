"""The handler wrappers: request ids, RPC latency, status counts and
in-flight requests for every RPC (the eligibility service, health and
reflection alike), in one place instead of in each handler. They wrap each
method's handler once, when it is registered (``WrappedServer``), not as
grpc server interceptors, which cost every call a coroutine of their own.

Request ids: a client may send ``x-request-id`` metadata (1-64 characters of
``A-Z a-z 0-9 . _ : -``); otherwise the gateway makes one. Either way the id
is set for the RPC's log lines (``gateway.ops.logs.REQUEST_ID``), stored with any
emergency-override audit record, and returned in the trailing metadata, so a
settlement system can quote it when it asks about a decision.

A call costs two clock reads, a few list-item adds (``RpcStats``) and a
context-variable set: ~4 µs in all (bench/RESULTS.md, issue 14).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from gateway.ops.logs import REQUEST_ID
from gateway.ops.metrics import RpcStats

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
# Codes that mean the server, not the client, went wrong: logged as errors.
_SERVER_FAULTS = frozenset(
    {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
)

Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:  # generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    GenericHandler = grpc.GenericRpcHandler


# New request ids: this process's random prefix and a counter (unique across
# gateways and restarts without a call to the OS's random source per RPC).
_ID_PREFIX = secrets.token_hex(4)
_ids = itertools.count(1)


def request_id_of(context: Context) -> str:
    """The client's ``x-request-id`` when it is well-formed, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _VALID_ID.fullmatch(value):
            return value
    return f"{_ID_PREFIX}{next(_ids):08x}"


def _code_of(context: Context, exc: BaseException | None) -> grpc.StatusCode:
    """The status an RPC ended with, as far as the server can tell."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    # A call past its deadline may end without an exception: its request
    # stream just stops.
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if context.cancelled() or isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN


class _Call:
    """One method's place in the RPC statistics, and the bookkeeping of one call."""

    def __init__(self, stats: RpcStats, full_method: str) -> None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        self.service = service
        self.method = method
        self.stats = stats
        self.m = stats.method(service, method)

    def begin(self, context: Context) -> float:
        rid = request_id_of(context)
        REQUEST_ID.set(rid)  # each RPC runs in its own task: no reset needed
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        self.stats.in_flight[self.m] += 1
        return time.perf_counter()

    def end(self, context: Context, started: float, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        self.stats.in_flight[self.m] -= 1
        code = _code_of(context, exc)
        self.stats.finished(self.m, elapsed, code.name)
        if code in _SERVER_FAULTS:
            log.error(
                "rpc failed",
                exc_info=exc
                if exc is not None and not isinstance(exc, grpc.aio.AbortError)
                else None,
                extra={"method": self.method, "code": code.name, "ms": round(elapsed * 1e3, 3)},
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "rpc",
                extra={
                    "method": self.method,
                    "code": code.name,
                    "ms": round(elapsed * 1e3, 3),
                    "details": context.details() or "",
                },
            )


class HandlerWrapper:
    """Wraps a method's handler (``wrap``), once, when ``WrappedServer``
    registers it."""

    def wrap(self, method: str, handler: Handler) -> Handler:
        raise NotImplementedError


class WrappedServer:
    """A grpc.aio server as the ``add_*_to_server`` functions see it: every
    method handler they register passes through the ``wrappers`` once, at
    registration, instead of through grpc's server interceptors on every call.

    An interceptor costs each call a coroutine of its own and a lookup
    (``intercept_service``), even when it hands back a cached handler: with
    two, the gateway answered 0.84 of the empty handler's 1-line calls, the
    servicer alone 1.0 (bench/RESULTS.md, issue 14). Wrapped at registration,
    a call pays only for what the wrappers do. Unknown methods are not
    wrapped: gRPC answers UNIMPLEMENTED, as before.
    """

    def __init__(self, server: grpc.aio.Server, wrappers: tuple[HandlerWrapper, ...]) -> None:
        self.server = server
        self.wrappers = wrappers  # outermost first

    def wrap(self, method: str, handler: Handler) -> Handler:
        for wrapper in reversed(self.wrappers):
            handler = wrapper.wrap(method, handler)
        return handler

    def add_generic_rpc_handlers(self, handlers: tuple[GenericHandler, ...]) -> None:
        self.server.add_generic_rpc_handlers(tuple(_WrappedGeneric(h, self) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        wrapped = {name: self.wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        self.server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]  # not in the stubs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)


class _WrappedGeneric(GenericHandler):
    """A generic handler whose method handlers come out wrapped (once each)."""

    def __init__(self, inner: GenericHandler, server: WrappedServer) -> None:
        self.inner = inner
        self.server = server
        self.handlers: dict[str, Handler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        try:
            return self.handlers[method]
        except KeyError:
            handler = self.inner.service(handler_call_details)
            if handler is None:  # not ours: not cached (unbounded)
                return None
            wrapped = self.handlers[method] = self.server.wrap(method, handler)
            return wrapped


class ObservabilityWrapper(HandlerWrapper):
    def __init__(self, stats: RpcStats) -> None:
        self.stats = stats

    def wrap(self, method: str, handler: Handler) -> Handler:
        return _wrap(handler, _Call(self.stats, method))


def _wrap(handler: Handler, call: _Call) -> Handler:
    kwargs: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, call), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary, call), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_stream(handler.unary_stream, call), **kwargs)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(_stream(handler.stream_stream, call), **kwargs)
    return handler


def _unary(behavior: Callable[..., Any], call: _Call) -> Callable[..., Any]:
    async def unary(request: Any, context: Context) -> Any:
        started = call.begin(context)
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            call.end(context, started, exc)
            raise
        call.end(context, started, None)
        return response

    return unary


def _stream(behavior: Callable[..., Any], call: _Call) -> Callable[..., Any]:
    """Streaming responses come from an async generator, or from a coroutine
    that writes them with ``context.write``: the wrapper has the same shape."""
    if inspect.iscoroutinefunction(behavior):

        async def writes(request: Any, context: Context) -> None:
            started = call.begin(context)
            try:
                await behavior(request, context)
                await _settle()
            except BaseException as exc:
                call.end(context, started, exc)
                raise
            call.end(context, started, None)

        return writes

    async def generates(request: Any, context: Context) -> AsyncIterator[Any]:
        started = call.begin(context)
        messages = 0
        try:
            async for response in behavior(request, context):
                messages += 1
                yield response
            await _settle()
        except BaseException as exc:
            call.stats.messages[call.m] += messages
            call.end(context, started, exc)
            raise
        call.stats.messages[call.m] += messages
        call.end(context, started, None)

    return generates


async def _settle() -> None:
    """Let a client's cancel reach a stream that has ended.

    A stream cancelled by its client while the handler waits for a request
    ends for the handler exactly like one the client closed: its requests
    stop. gRPC cancels the handler's task only once the core reports the call
    closed, shortly after; a stream counted at once was counted OK (issue 11).
    A normal close is never cancelled: the wait (SETTLE_S) delays its final
    status once per stream, which for long-lived streams costs nothing.
    """
    await asyncio.sleep(SETTLE_S)


# Long enough for the core's report of a cancel to arrive after the end of the
# requests: yielding three loop turns instead, 3 of 30 cancelled streams were
# still counted OK; 1, 5 and 20 ms each caught 200 of 200 on an idle loopback
# gateway. 20 ms leaves a margin for a loaded event loop.
SETTLE_S = 0.02
