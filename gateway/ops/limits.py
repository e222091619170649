"""Admission limits per kind of RPC, instead of grpc's one global
``maximum_concurrent_rpcs``: with that, 1,000 idle ``CheckClaims`` streams
took every slot and unary calls and *health checks* were refused
RESOURCE_EXHAUSTED (issue 11) - a liveness probe would restart a healthy pod.

- streaming RPCs (``CheckClaims``, server reflection) share ``max_open_streams``;
- unary RPCs (``CheckClaim``, ``GetPractitionerStatus``) share
  ``max_concurrent_rpcs``: open streams never take their slots;
- the health service is never refused by either (gRPC's own limit stays on as a
  backstop above the sum; see ``gateway.server.build_server``).

Beyond a limit a call is refused RESOURCE_EXHAUSTED at once, not queued.

Responses are serialized here, once, and one larger than ``max_response_bytes``
(what gRPC would refuse to send) is refused RESOURCE_EXHAUSTED naming both
sizes; left to gRPC, the send fails after the handler returned and the metrics
(gateway.ops.interceptors) would count the call OK.

Per call: a counter compare, an increment and a decrement; handlers are
wrapped once per method, when registered (gateway.ops.interceptors.WrappedServer).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import grpc
import grpc.aio

from gateway.ops.interceptors import Context, Handler, HandlerWrapper

HEALTH_SERVICE = "grpc.health.v1.Health"


class Slots:
    """RPCs of one kind in progress, and how many may be."""

    __slots__ = ("flag", "in_use", "kind", "limit")

    def __init__(self, kind: str, flag: str, limit: int) -> None:
        self.kind = kind
        self.flag = flag
        self.limit = limit
        self.in_use = 0

    def refusal(self) -> str:
        return (
            f"{self.in_use} {self.kind} in progress, the maximum ({self.flag} {self.limit}); "
            "retry later"
        )


class LimitsWrapper(HandlerWrapper):
    def __init__(
        self,
        *,
        max_concurrent_rpcs: int,
        max_open_streams: int,
        max_response_bytes: int,
        exempt_services: tuple[str, ...] = (HEALTH_SERVICE,),
    ) -> None:
        self.unary = Slots("unary calls", "--max-concurrent-rpcs", max_concurrent_rpcs)
        self.streams = Slots("streams", "--max-open-streams", max_open_streams)
        self.max_response_bytes = max_response_bytes
        self.exempt = tuple(f"/{service}/" for service in exempt_services)

    def wrap(self, method: str, handler: Handler) -> Handler:
        return handler if method.startswith(self.exempt) else self._limited(handler)

    def _limited(self, handler: Handler) -> Handler:
        serialize = handler.response_serializer or _identity
        # The wrappers hand gRPC the bytes they serialized themselves...
        kwargs: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": None,
        }
        if handler.unary_unary is not None:
            behavior = self._unary(handler.unary_unary, serialize, self.unary)
            return grpc.unary_unary_rpc_method_handler(behavior, **kwargs)
        if handler.stream_unary is not None:
            behavior = self._unary(handler.stream_unary, serialize, self.streams)
            return grpc.stream_unary_rpc_method_handler(behavior, **kwargs)
        streaming = handler.unary_stream or handler.stream_stream
        if streaming is None:
            return handler
        if inspect.iscoroutinefunction(streaming):
            # ... except to a handler that writes its responses itself.
            kwargs["response_serializer"] = handler.response_serializer
            behavior = self._writes(streaming)
        else:
            behavior = self._stream(streaming, serialize)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(behavior, **kwargs)
        return grpc.stream_stream_rpc_method_handler(behavior, **kwargs)

    async def _refuse_size(self, data: bytes, context: Context) -> None:
        """End the call: ``data`` is larger than the maximum message size."""
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"response of {len(data)} bytes is larger than the maximum message size "
            f"({self.max_response_bytes} bytes, --max-message-bytes)",
        )

    def _unary(
        self, behavior: Callable[..., Any], serialize: Callable[[Any], bytes], slots: Slots
    ) -> Callable[..., Any]:
        async def unary(request: Any, context: Context) -> bytes:
            if slots.in_use >= slots.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, slots.refusal())
            slots.in_use += 1
            try:
                data = serialize(await behavior(request, context))
                if len(data) > self.max_response_bytes:
                    await self._refuse_size(data, context)
                return data
            finally:
                slots.in_use -= 1

        return unary

    def _stream(
        self, behavior: Callable[..., Any], serialize: Callable[[Any], bytes]
    ) -> Callable[..., Any]:
        slots = self.streams

        async def generates(request: Any, context: Context) -> AsyncIterator[bytes]:
            if slots.in_use >= slots.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, slots.refusal())
            slots.in_use += 1
            try:
                # aclosing: a handler left at its yield (the client went away,
                # a response was refused) is closed now, not when collected.
                async with aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        data = serialize(response)
                        if len(data) > self.max_response_bytes:
                            await self._refuse_size(data, context)
                        yield data
            finally:
                slots.in_use -= 1

        return generates

    def _writes(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        slots = self.streams

        async def writes(request: Any, context: Context) -> None:
            if slots.in_use >= slots.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, slots.refusal())
            slots.in_use += 1
            try:
                await behavior(request, context)
            finally:
                slots.in_use -= 1

        return writes


def _identity(message: Any) -> bytes:
    return message  # type: ignore[no-any-return]
