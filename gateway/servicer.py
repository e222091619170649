"""The gRPC servicer: claim request bytes through the claim path
(``gateway.claimpath``) to response bytes; refusals explained by
``gateway.claims``; domain errors to status codes in one table. No Redis.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_status import rpc_status

from contract import codes
from contract.days import DAY_NONE, DateError, day_to_yyyymmdd, today_day, yyyymmdd_to_day
from contract.domain import Decision, Status
from contract.errors import (
    BuildError,
    ChangeNotPublishedError,
    EligibilityError,
    IndexNotLoadedError,
    InvalidCodeError,
    InvalidRequestError,
    LoadError,
    PermissionDeniedError,
    SignatureError,
    SnapshotError,
    StalePublishError,
    UnreadableFileError,
)
from gateway.claimpath import ClaimPath, CompiledPath, Result
from gateway.claims import parse_claim
from gateway.decide import Override, Policy
from gateway.index import Index, IndexHolder
from gateway.ops.identity import CLIENT_IDENTITY, Client, IdentityMap, peer_names
from proto.eligibility.v1 import eligibility_pb2 as pb

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

REJECT = int(Decision.REJECT)

# One table from domain errors to gRPC status codes; most specific first.
STATUS_FOR_ERROR: tuple[tuple[type[EligibilityError], grpc.StatusCode], ...] = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidCodeError, grpc.StatusCode.INVALID_ARGUMENT),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (IndexNotLoadedError, grpc.StatusCode.UNAVAILABLE),
    (SignatureError, grpc.StatusCode.UNAVAILABLE),
    (SnapshotError, grpc.StatusCode.UNAVAILABLE),
    (BuildError, grpc.StatusCode.INTERNAL),
    (StalePublishError, grpc.StatusCode.FAILED_PRECONDITION),
    (ChangeNotPublishedError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnreadableFileError, grpc.StatusCode.FAILED_PRECONDITION),
    (LoadError, grpc.StatusCode.FAILED_PRECONDITION),
    (EligibilityError, grpc.StatusCode.INTERNAL),
)


def status_for(exc: EligibilityError) -> grpc.StatusCode:
    for cls, code in STATUS_FOR_ERROR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def rpc_status_for(exc: EligibilityError, message: str) -> grpc.Status:
    """The status a client gets for ``exc``: the code from ``STATUS_FOR_ERROR``,
    ``message`` as the text, and for a bad field a ``google.rpc.BadRequest``
    field violation in the details (the ``grpc-status-details-bin`` trailer of
    the richer error model, https://grpc.io/docs/guides/error/), so a client
    reads the field without parsing the text."""
    code = status_for(exc)
    status = status_pb2.Status(code=code.value[0], message=message)
    if isinstance(exc, InvalidRequestError):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=exc.reason
        )
        detail = AnyMessage()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status.details.append(detail)
    return rpc_status.to_status(status)


async def abort(context: Context, exc: EligibilityError, message: str | None = None) -> NoReturn:
    """End the call with the status for ``exc`` (text: ``message`` or ``str(exc)``),
    keeping the trailing metadata already set (the request id)."""
    status = rpc_status_for(exc, str(exc) if message is None else message)
    kept = tuple(context.trailing_metadata() or ())  # type: ignore[attr-defined]  # not in the stubs
    await context.abort(
        status.code,  # type: ignore[attr-defined]
        status.details,  # type: ignore[attr-defined]
        (*kept, *status.trailing_metadata),  # type: ignore[attr-defined]
    )
    raise AssertionError("unreachable: abort_with_status raises")


class OverrideCommit(Protocol):
    """A claim's override records on their way to durable storage
    (``gateway.ops.audit.OverrideTicket``)."""

    @property
    def line_indexes(self) -> Sequence[int]: ...

    async def wait(self) -> bool:
        """True once the records are stored (the lines may be paid); False
        when they cannot be and the lines must be rejected instead."""
        ...

    def undelivered(self, why: str) -> None:
        """The answer carrying these overrides did not reach the client."""


class OverrideSink(Protocol):
    """Where emergency overrides go for review; must not block: the commit it
    may return is awaited by the async handler, not the decision path."""

    def record(
        self,
        request: pb.CheckClaimRequest,
        overrides: Sequence[Override],
        index_version: int,
    ) -> OverrideCommit | None: ...


async def audited(response: bytes, commit: OverrideCommit | None) -> bytes:
    """Hold the answer until its overrides are stored (SPEC §4 rule 5: no
    override paid unaudited); lines that cannot be are answered REJECT with
    the reason they would have overridden (SUSPENDED / TERMINATED)."""
    if commit is None or await commit.wait():
        return response
    message = pb.CheckClaimResponse.FromString(response)
    for i in commit.line_indexes:
        message.lines[i].decision = REJECT  # type: ignore[assignment]
    message.rejected_lines += len(commit.line_indexes)
    return message.SerializeToString()


class UndecodableRequest:
    """A request body that is not a valid message of its type (bad wire format,
    bad UTF-8 in a string field): the handler refuses it with INVALID_ARGUMENT.
    Raising in the deserializer instead would make gRPC answer UNKNOWN and log
    a traceback for every such call."""

    __slots__ = ("reason",)

    def __init__(self, type_name: str, exc: DecodeError) -> None:
        self.reason = f"not a valid {type_name} message ({str(exc).rpartition(': ')[2]})"

    def error(self) -> InvalidRequestError:
        return InvalidRequestError("request", self.reason)


def _tolerant(message: type[Message]) -> Any:
    """``message.FromString`` that returns an ``UndecodableRequest`` instead of raising."""
    type_name = message.DESCRIPTOR.full_name
    from_string = message.FromString

    def deserialize(data: bytes) -> Message | UndecodableRequest:
        try:
            return from_string(data)
        except DecodeError as exc:
            return UndecodableRequest(type_name, exc)

    return deserialize


parse_claim_request = _tolerant(pb.CheckClaimRequest)


def add_servicer_to_server(servicer: EligibilityServicer, server: grpc.aio.Server) -> None:
    """``add_EligibilityGatewayServicer_to_server``, except that the claim
    methods take and return bytes (the claim path reads and writes the wire
    format itself: no protobuf message per call), and request bodies that
    fail to decode reach the handlers as ``UndecodableRequest``."""
    handlers = {
        "CheckClaim": grpc.unary_unary_rpc_method_handler(servicer.CheckClaim),
        "CheckClaims": grpc.stream_stream_rpc_method_handler(servicer.CheckClaims),
        "GetPractitionerStatus": grpc.unary_unary_rpc_method_handler(
            servicer.GetPractitionerStatus,
            request_deserializer=_tolerant(pb.GetPractitionerStatusRequest),
            response_serializer=pb.GetPractitionerStatusResponse.SerializeToString,
        ),
    }
    name = pb.DESCRIPTOR.services_by_name["EligibilityGateway"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)  # type: ignore[attr-defined]  # not in the stubs


class EligibilityServicer:
    """The EligibilityGateway service; the claim methods on wire bytes
    (registered by ``add_servicer_to_server``, not the generated helper)."""

    def __init__(
        self,
        holder: IndexHolder,
        policy: Policy,
        *,
        max_lines_per_claim: int,
        overrides: OverrideSink,
        identities: IdentityMap | None = None,
        path: ClaimPath | None = None,
    ) -> None:
        """``path``: how claims are decided; the compiled claim path by default."""
        self.holder = holder
        self.path = path if path is not None else CompiledPath(policy, max_lines_per_claim)
        if holder.prepare is None:
            holder.prepare = self.path.prepare
        self.max_lines_per_claim = max_lines_per_claim
        self.overrides = overrides
        self.identities = identities

    def _client(self, context: Context) -> Client | None:
        """The caller's rights under the client identity map (None: no map, no checks).
        Sets ``CLIENT_IDENTITY`` for the override records of this call."""
        if self.identities is None:
            return None
        names = peer_names(context.auth_context())
        client = self.identities.find(names)
        if client is None:
            shown = ", ".join(repr(n[:64]) for n in names[:3]) or "no certificate name"
            raise PermissionDeniedError(f"client certificate ({shown}) is not in the identity map")
        CLIENT_IDENTITY.set(client.identity)
        return client

    @staticmethod
    def _may_claim(client: Client | None, data: bytes) -> None:
        if client is None:
            return
        request = parse_claim_request(data)
        if isinstance(request, UndecodableRequest):
            return  # refused as such by decide_claim
        if not client.may_claim_for(request.institution_code):
            raise PermissionDeniedError(
                f"institution_code: client {client.identity!r} ({client.role}) may not act for "
                f"{request.institution_code[:32]!r}"
            )

    async def CheckClaim(self, data: bytes, context: Context) -> bytes:
        try:
            if self.identities is not None:
                self._may_claim(self._client(context), data)
            response, commit = self.decide_claim(data)
        except EligibilityError as exc:
            await abort(context, exc)
        if commit is None:
            return response
        # Cancelled or past its deadline before the answer went out: say so.
        # (the stubs type the callback as a class, not a function)
        context.add_done_callback(
            lambda ctx: commit.undelivered("cancelled") if ctx.cancelled() else None  # type: ignore[arg-type]
        )
        return await audited(response, commit)

    async def CheckClaims(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        position = 0
        try:
            client = self._client(context)
        except EligibilityError as exc:
            await abort(context, exc)
        async for data in requests:
            try:
                if client is not None:
                    self._may_claim(client, data)
                response, commit = self.decide_claim(data)
            except EligibilityError as exc:
                request = parse_claim_request(data)
                claim_id = "" if isinstance(request, UndecodableRequest) else request.claim_id[:64]
                await abort(context, exc, f"request {position} (claim_id {claim_id!r}): {exc}")
            if commit is None:
                yield response
            else:
                try:
                    # Resumed only once gRPC has sent the answer (it asks for the next).
                    yield await audited(response, commit)
                except BaseException:
                    commit.undelivered("cancelled")
                    raise
            position += 1

    async def GetPractitionerStatus(
        self, request: pb.GetPractitionerStatusRequest, context: Context
    ) -> pb.GetPractitionerStatusResponse:
        try:
            client = self._client(context)
            response = self.practitioner_status(request)
            # An institution's client reads only staff of its own institutions;
            # the same answer whether the practitioner exists or not (no enumeration).
            if (
                client is not None
                and not client.reads_everyone
                and not client.institutions.intersection(response.institution_codes)
            ):
                raise PermissionDeniedError(
                    f"practitioner_code: client {client.identity!r} may read only staff "
                    "registered at its own institutions on the date asked"
                )
            return response
        except EligibilityError as exc:
            await abort(context, exc)

    def _index(self) -> Index:
        index = self.holder.current
        if index is None:
            raise IndexNotLoadedError()
        return index

    def check_claim(self, request: pb.CheckClaimRequest) -> pb.CheckClaimResponse:
        """Decide one claim message, not waiting for its override records to be stored."""
        return pb.CheckClaimResponse.FromString(self.decide_claim(request.SerializeToString())[0])

    def decide_claim(self, data: bytes) -> tuple[bytes, OverrideCommit | None]:
        """Decide one CheckClaimRequest (the body of CheckClaim and of each stream
        message): the response, and with overrides the commit of their records
        to await before answering."""
        index = self.holder.current
        if index is None:
            raise IndexNotLoadedError()
        result = self.path.check(index, data, today_day())
        if type(result) is bytes:
            return result, None
        return self._decide_slowly(index, data, result)

    def _decide_slowly(
        self, index: Index, data: bytes, result: Result
    ) -> tuple[bytes, OverrideCommit | None]:
        """The rare outcomes: a request to refuse or to re-read, or overrides to record."""
        request = None
        if isinstance(result, int):
            # PUNT / INVALID: protobuf, then gateway.claims, say what is wrong.
            request = parse_claim_request(data)
            if isinstance(request, UndecodableRequest):
                raise request.error()
            today = today_day()
            parse_claim(request, max_lines=self.max_lines_per_claim, today_day=today)
            # Valid, in a form the claim path does not read (unknown groups,
            # non-minimal varints...): decided in protobuf's own encoding.
            request.DiscardUnknownFields()
            result = self.path.check(index, request.SerializeToString(), today)
            if isinstance(result, int):
                log.error(
                    "claim path and gateway.claims disagree on a request",
                    extra={"outcome": result, "request_bytes": len(data)},
                )
                raise EligibilityError("internal error: the request could not be decided")
            if isinstance(result, bytes):
                return result, None
        assert isinstance(result, tuple)  # bytes and PUNT / INVALID were answered above
        response, overrides = result
        if request is None:
            request = pb.CheckClaimRequest.FromString(data)
        return response, self.overrides.record(request, overrides, index.version)

    def practitioner_status(
        self, request: pb.GetPractitionerStatusRequest
    ) -> pb.GetPractitionerStatusResponse:
        if isinstance(request, UndecodableRequest):
            raise request.error()
        index = self._index()
        try:
            key = codes.encode_practitioner(request.practitioner_code)
        except InvalidCodeError as exc:
            raise InvalidRequestError("practitioner_code", str(exc)) from exc
        if request.date == 0:
            day = today_day()
        else:
            try:
                day = yyyymmdd_to_day(request.date)
            except DateError as exc:
                raise InvalidRequestError("date", str(exc)) from exc
        row = index.row_of(key)
        _, _, status, until_day = index.lookup_line(row, day, -1)
        points = index.points_on(row, day)
        return pb.GetPractitionerStatusResponse(
            practitioner_code=request.practitioner_code,
            date=day_to_yyyymmdd(day),
            status=status,  # type: ignore[arg-type]
            status_until=(
                day_to_yyyymmdd(until_day)
                if status == Status.SUSPENDED and until_day != DAY_NONE
                else 0
            ),
            institution_codes=[
                codes.decode_institution(k) for k in index.institutions_on(row, day)
            ],
            points=points or 0,
            points_known=points is not None,
            index_version=index.version,
        )
