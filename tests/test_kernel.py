"""The compiled claim path (``gateway/kernel.pyx``) against the readable
reference (``gateway/reference.py``), byte for byte (issue 14).

1. Claims: hypothesis draws an index (a snapshot, and an overlay of live
   changes over it: changed practitioners, practitioners and institutions
   only the overlay knows) and claims over it, valid and not; for each of
   three indexes (the snapshot, the snapshot under an empty overlay, under
   the changes) and each of the four policies, ``ClaimKernel.check`` answers
   the reference's bytes and overrides, counts what ``PurePath`` counts, and
   never refuses what the reference accepts; a refused request is PUNT or
   INVALID, and ``EligibilityServicer.decide_claim`` raises the reference's
   error, word for word. A deterministic grid over a fixed index does the
   same for every practitioner x institution x principal x date boundary.
2. The wire format: mutated requests (unknown fields of every wire type,
   groups, repeated fields, known fields with the wrong wire type,
   non-minimal and 10-byte varints, bad UTF-8 in each string field,
   truncations, bit flips) and raw bytes: ``decide_claim`` answers what
   protobuf's parser and the reference answer.
3. End to end: a compiled gateway and a ``--pure-python`` one on the same
   Redis give the same bytes for the same claims, unary and on the stream.
4. Constants: the kernel's dates against ``contract.days`` and
   ``gateway.claims.parse_day``; its claim-size buckets against
   ``gateway.claimpath.LINES_BUCKETS``.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from unittest.mock import patch

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from contract.days import MAX_DAY, day_to_yyyymmdd, iso_to_day, today_cst, yyyymmdd_to_day
from contract.domain import Status
from contract.errors import InvalidRequestError
from gateway import servicer as servicer_module
from gateway.claimpath import INVALID, LINES_BUCKETS, PUNT, CompiledPath, PurePath, view_of
from gateway.claims import parse_day
from gateway.decide import Override, Policy
from gateway.index import Index, IndexHolder, LayeredIndex, StatusIndex
from gateway.reference import check_claim
from gateway.servicer import EligibilityServicer
from loader.sample import FIXED
from proto.eligibility.v1 import eligibility_pb2 as pb
from tests.factory import Person, build_arrays
from tests.gateway_process import GatewayProcess
from tests.test_e2e import publish_sample

kernel: Any = importlib.import_module("gateway.kernel")  # compiled: no stubs

T = TypeVar("T")

TODAY = iso_to_day("2026-01-01")
MAX_LINES = 64
POLICIES = [Policy(at, terminated) for at in (True, False) for terminated in (True, False)]
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------
# The data: codes, institutions and the days everything starts and ends on.

H1, H2, P1, P2 = "H11010500001", "H11010500002", "P11010500001", "P11010500002"
NEW_H, NEW_P = "H99000000001", "P99000000001"  # only the overlay registers anyone there
NOBODY_H, NOBODY_P = "H12345678901", "P12345678901"  # well-formed, no one registered
BASE_INSTITUTIONS = [H1, H2, P1, P2]
OVERLAY_INSTITUTIONS = [*BASE_INSTITUTIONS, NEW_H, NEW_P]
INSTITUTIONS = [*OVERLAY_INSTITUTIONS, NOBODY_H, NOBODY_P]
BAD_INSTITUTIONS = [
    "X11010500001",  # well-formed, neither a hospital nor a pharmacy
    "A00000000000",
    "",
    "h11010500001",
    "H1101050000",
    "H110105000011",
    "Ｈ11010500001",  # fullwidth letter
    "H1101050000１",  # fullwidth digit
    "H11010500001 ",
    "H-1010500001",
]

BASE_CODES = [
    "D110105000001",
    "D110105000002",
    "N110105000003",
    "HJ110105000004",
    "HY110105000005",
    "HY110105000006",
    "A000000000000",  # the smallest key
    "ZZ999999999999",  # the largest key
]
OVERLAY_ONLY_CODES = ["HY990000000001", "D990000000002"]
UNKNOWN_CODE = "D110105999999"
KNOWN_CODES = [*BASE_CODES, *OVERLAY_ONLY_CODES, UNKNOWN_CODE]
MALFORMED_CODES = [
    "d110105000001",  # lowercase
    "D11010500000",  # 11 digits
    "D1101050000011",  # 13 digits
    "DDD110105000001",  # 3 letters
    "Ｄ110105000001",  # fullwidth letter (non-ASCII)
    "D１10105000001",  # fullwidth digit
    "É110105000001",  # 13 characters, 14 bytes
    "ÉÉ11010500000",  # 13 characters, 15 bytes
    " D110105000001",
    "D110105000001\x00",
    "D-11010500000",
    "1D110105000001",
]

ANCHORS = [
    "1970-01-01",
    "2024-02-28",
    "2024-02-29",
    "2024-03-01",
    "2025-06-15",
    "2025-12-31",
    "2026-01-01",  # TODAY
]
# Each anchor, the day before and the day after, as the wire carries them.
BOUNDARY_DATES = sorted({day_to_yyyymmdd(iso_to_day(a) + d) for a in ANCHORS for d in (-1, 0, 1)})
VALID_DATES = [d for d in BOUNDARY_DATES if 19700101 <= d <= day_to_yyyymmdd(TODAY)]
EDGE_DATES = [d for d in BOUNDARY_DATES if d not in VALID_DATES]  # 1969-12-31, tomorrow
BAD_DATES = [
    20230230,
    20250229,
    20251301,
    20250100,
    20250132,
    -1,
    -20250101,
    1,
    99991231,
    21490605,
    21500101,
    2**31 - 1,
    -(2**31),
]
STATUSES = [
    Status.ACTIVE,
    Status.WARNED,
    Status.SUSPENDED,
    Status.TERMINATED,
    Status.NOT_REGISTERED,
]
EDGE_CLAIM_IDS = [
    "",
    "x" * 128,
    "x" * 129,
    "é" * 128,  # 256 bytes, 128 characters: accepted
    "é" * 129,
    "😀" * 128,  # 512 bytes
    "😀" * 129,
    "x" * 127 + "😀",
    "x" * 128 + "é",
]

int32s = st.integers(-(2**31), 2**31 - 1)


# ---------------------------------------------------------------------------
# Indexes


@dataclass
class World:
    """The indexes one claim is decided against: a snapshot, the snapshot
    under an empty overlay, and under an overlay of changes."""

    base: StatusIndex
    empty: LayeredIndex
    changed: LayeredIndex
    codes: list[str]  # everyone the snapshot or a change names, and one unknown code

    @property
    def indexes(self) -> list[Index]:
        return [self.base, self.empty, self.changed]


def make_world(base_people: list[Person], *batches: list[Person]) -> World:
    base = StatusIndex(build_arrays(base_people), 7)
    empty = LayeredIndex(base)
    changed = empty
    for seq, batch in enumerate(batches, start=1):
        changed = changed.with_change(build_arrays(batch), seq, f"{seq}-0")
    codes = {p.code for p in base_people} | {p.code for batch in batches for p in batch}
    return World(base, empty, changed, sorted(codes | {UNKNOWN_CODE}))


# Where each practitioner mostly works (registered from day 0), and the
# principal of each pharmacy: claims are mostly made there, so that most lines
# reach the status rules.
HOME = {
    "HJ110105000004": H2,
    "HY110105000005": P1,
    "HY110105000006": P2,
    "HY990000000001": NEW_P,
    "D990000000002": NEW_H,
}
OWNER = {P1: "HY110105000005", P2: "HY110105000006", NEW_P: "HY990000000001"}


@st.composite
def people(draw: st.DrawFn, code: str, institutions: Sequence[str]) -> Person:
    registrations: list[tuple[str, str, str | None]] = []
    home = HOME.get(code, H1)
    if home in institutions and draw(st.integers(0, 3)):
        registrations.append((home, "1970-01-01", draw(st.sampled_from([None, *ANCHORS[1:]]))))
    for _ in range(draw(st.integers(0, 2))):
        start, end = sorted(
            draw(st.lists(st.sampled_from(ANCHORS), min_size=2, max_size=2, unique=True))
        )
        registrations.append(
            (draw(st.sampled_from(institutions)), start, draw(st.sampled_from([end, None])))
        )
    changes: list[tuple[str, Status, str | None]] = []
    for start in sorted(draw(st.sets(st.sampled_from(ANCHORS), max_size=3))):
        status = draw(st.sampled_from(STATUSES))
        last = None
        if status == Status.SUSPENDED:
            last = draw(st.sampled_from([None, *[a for a in ANCHORS if a >= start]]))
        changes.append((start, status, last))
    return Person(code, registrations, changes)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    base_codes = draw(st.lists(st.sampled_from(BASE_CODES), unique=True))
    base = [draw(people(code, BASE_INSTITUTIONS)) for code in base_codes]
    # Changes: some of the snapshot's practitioners, and one only the overlay
    # knows, registered at an institution only the overlay knows.
    changed_codes = draw(
        st.lists(st.sampled_from([*BASE_CODES, OVERLAY_ONLY_CODES[1]]), unique=True)
    )
    changed = [draw(people(code, OVERLAY_INSTITUTIONS)) for code in changed_codes]
    newcomer = draw(people(OVERLAY_ONLY_CODES[0], OVERLAY_INSTITUTIONS))
    since = draw(st.sampled_from(ANCHORS[:-1]))
    newcomer.registrations.append((draw(st.sampled_from([NEW_H, NEW_P])), since, None))
    batches = [[*changed, newcomer]]
    if draw(st.booleans()):  # a second change, possibly to the same practitioners
        again = draw(st.lists(st.sampled_from([*BASE_CODES, *OVERLAY_ONLY_CODES]), unique=True))
        batches.append([draw(people(code, OVERLAY_INSTITUTIONS)) for code in again])
    return make_world(base, *batches)


# A fixed index where every case has a name: sanctions and registrations
# starting and ending on the boundary days, and an overlay of two changes.
FIXED_BASE = [
    Person("D110105000001", [(H1, "2020-01-01", None)]),  # a simple record
    Person(  # moved from H1 to H2 on 2025-06-15; WARNED from 2025-01-01
        "D110105000002",
        [(H1, "2020-01-01", "2025-06-15"), (H2, "2025-06-15", None)],
        [("2025-01-01", Status.WARNED, None)],
    ),
    Person(  # suspended 2025-06-15 .. 2025-12-31, ACTIVE again from 2026-01-01
        "N110105000003",
        [(H1, "2019-01-01", None), (H2, "2019-01-01", None)],
        [("2025-06-15", Status.SUSPENDED, "2025-12-31"), ("2026-01-01", Status.ACTIVE, None)],
    ),
    Person(  # terminated on 2024-02-29 while registered
        "HJ110105000004", [(H1, "2020-01-01", None)], [("2024-02-29", Status.TERMINATED, None)]
    ),
    Person("HY110105000005", [(P1, "2020-01-01", None)]),  # principal of P1
    Person(  # principal of P2, suspended 2025-12-31 .. 2026-01-01; at P1 for one day
        "HY110105000006",
        [(P2, "2020-01-01", None), (P1, "2024-02-29", "2024-03-01")],
        [("2025-12-31", Status.SUSPENDED, "2026-01-01")],
    ),
    Person("A000000000000", [(H1, "1970-01-01", None)]),  # the smallest key, from day 0
    Person(  # the largest key: suspended with no end since day 0, registered later
        "ZZ999999999999", [(H2, "2024-03-01", None)], [("1970-01-01", Status.SUSPENDED, None)]
    ),
    Person(  # a NOT_REGISTERED status point while registered
        "D110105000009",
        [(H1, "2020-01-01", None)],
        [("2024-02-29", Status.NOT_REGISTERED, None), ("2025-06-15", Status.WARNED, None)],
    ),
    Person("D110105000010", [], [("2025-06-15", Status.WARNED, None)]),  # registered nowhere
    Person(  # suspended past the end of its registration
        "D110105000011",
        [(H1, "2020-01-01", "2024-03-01")],
        [("2024-02-29", Status.SUSPENDED, "2025-06-15")],
    ),
    Person(  # terminated on the day its registration ends
        "N110105000012",
        [(H1, "2020-01-01", "2025-06-15")],
        [("2025-06-15", Status.TERMINATED, None)],
    ),
]
FIXED_FIRST_CHANGE = [
    Person(  # was simple and ACTIVE: now suspended 2025-12-31 .. 2026-01-01
        "D110105000001",
        [(H1, "2020-01-01", None)],
        [("2025-12-31", Status.SUSPENDED, "2026-01-01")],
    ),
    Person("HY110105000005", [(P1, "2020-01-01", "2025-12-31")]),  # principal deregistered
    Person("HY990000000001", [(NEW_P, "2025-01-01", None)]),  # principal of NEW_P
    Person(
        "D990000000002",
        [(NEW_H, "2024-02-29", None), (H1, "2025-06-15", "2026-01-01")],
        [("2025-06-15", Status.WARNED, None)],
    ),
    Person("N110105000003", [(H2, "2025-12-31", None)]),  # now at H2 only, no sanction
]
FIXED_SECOND_CHANGE = [
    Person(  # changed again: terminated on its first day at NEW_H
        "D990000000002", [(NEW_H, "2024-02-29", None)], [("2024-02-29", Status.TERMINATED, None)]
    ),
    Person("ZZ999999999999", [(NEW_H, "2025-06-15", None)]),  # sanction lifted, moved
]
FIXED_WORLD = make_world(FIXED_BASE, FIXED_FIRST_CHANGE, FIXED_SECOND_CHANGE)
FIXED_CODES = sorted(
    {p.code for p in [*FIXED_BASE, *FIXED_FIRST_CHANGE, *FIXED_SECOND_CHANGE]} | {UNKNOWN_CODE}
)
FIXED_PRINCIPALS = [
    "HY110105000005",
    "HY110105000006",
    "HY990000000001",
    "D110105000001",  # registered at a hospital only
    "ZZ999999999999",
    UNKNOWN_CODE,
]


# ---------------------------------------------------------------------------
# Claims


def sometimes(
    draw: st.DrawFn,
    usual: st.SearchStrategy[T],
    rare: st.SearchStrategy[T],
    one_in: int = 6,
    *,
    faulty: bool = True,
) -> T:
    """A draw from ``rare`` one time in ``one_in`` (if ``faulty``), else from ``usual``."""
    return draw(rare if faulty and draw(st.integers(0, one_in - 1)) == 0 else usual)


@st.composite
def claim_lines(draw: st.DrawFn, codes: Sequence[str], faulty: bool) -> pb.ClaimLine:
    code = sometimes(
        draw,
        st.sampled_from(codes),
        st.one_of(st.sampled_from(["", *MALFORMED_CODES]), st.text(max_size=15)),
        one_in=4,
    )
    return pb.ClaimLine(
        line_id=draw(st.one_of(st.sampled_from(["", "1", "line-2"]), st.text(max_size=6))),
        prescriber_code=code,
        service_date=sometimes(
            draw,
            st.sampled_from([0, 0, *VALID_DATES]),
            st.one_of(st.sampled_from([*EDGE_DATES, *BAD_DATES]), int32s),
            one_in=12,
            faulty=faulty,
        ),
        emergency=draw(st.booleans()),
        item_code=draw(st.text(max_size=6)),
        amount_fen=sometimes(
            draw,
            st.integers(0, 10**6),
            # Large, but no two add up past 2**63 in the rejected-amount counters
            # (test_rejected_amounts_never_wrap_the_counters).
            st.sampled_from([-1, -(2**63), 2**56]),
            one_in=12,
            faulty=faulty,
        ),
    )


@st.composite
def claims(draw: st.DrawFn, codes: Sequence[str] = KNOWN_CODES) -> pb.CheckClaimRequest:
    """Claims made where their practitioners mostly work; one in three with
    parts wrong (each wrong one time in six)."""
    faulty = draw(st.integers(0, 2)) == 0
    channel = sometimes(
        draw,
        st.sampled_from([pb.CHANNEL_HOSPITAL, pb.CHANNEL_PHARMACY]),
        st.one_of(st.sampled_from([0, 3, -1]), int32s),
        faulty=faulty,
    )
    pharmacy = channel == pb.CHANNEL_PHARMACY
    institution = sometimes(
        draw,
        st.sampled_from(
            [P1, P1, P2, NEW_P, NOBODY_P] if pharmacy else [H1, H1, H2, NEW_H, NOBODY_H]
        ),
        st.one_of(st.sampled_from([*INSTITUTIONS, *BAD_INSTITUTIONS]), st.text(max_size=13)),
        faulty=faulty,
    )
    # The pharmacy's own principal, or anyone (unknown, registered elsewhere...).
    owner = OWNER.get(institution, UNKNOWN_CODE)
    principal = sometimes(
        draw,
        st.sampled_from([owner, owner, *codes] if pharmacy else [""]),
        st.one_of(st.sampled_from(["", *codes, *MALFORMED_CODES]), st.text(max_size=15)),
        faulty=faulty,
    )
    n_lines = sometimes(
        draw,
        st.integers(1, 4),
        st.sampled_from([0, MAX_LINES, MAX_LINES + 1]),
        faulty=faulty,
    )
    line = claim_lines(codes, faulty)
    # Many lines: mostly copies (hypothesis would otherwise make each one).
    lines = [draw(line) for _ in range(min(n_lines, 4))]
    lines += [lines[i % len(lines)] for i in range(len(lines), n_lines)]
    return pb.CheckClaimRequest(
        claim_id=sometimes(
            draw,
            st.one_of(st.just("C-1"), st.text(min_size=1, max_size=12)),
            st.sampled_from(EDGE_CLAIM_IDS),
            faulty=faulty,
        ),
        institution_code=institution,
        channel=channel,  # type: ignore[arg-type]  # unknown values are legal on the wire
        principal_code=principal,
        service_date=sometimes(
            draw,
            st.sampled_from(VALID_DATES),
            st.one_of(st.sampled_from([0, *EDGE_DATES, *BAD_DATES]), int32s),
            faulty=faulty,
        ),
        lines=lines,
    )


# ---------------------------------------------------------------------------
# The paths compared


def outcome(text: str) -> None:
    """Say what became of an example (``--hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(text)


COUNTERS = ("lines_decided", "rejected_fen", "claim_buckets", "claim_lines_sum")


class RecordingSink:
    """The servicer's override sink: keeps what it is given, commits nothing."""

    def __init__(self) -> None:
        self.records: list[list[Override]] = []

    def record(
        self, request: pb.CheckClaimRequest, overrides: Sequence[Override], index_version: int
    ) -> None:
        self.records.append(list(overrides))


@dataclass
class Paths:
    """The kernel, the reference as ``--pure-python`` serves it, and the
    servicer (the kernel, then protobuf and gateway.claims), for one policy."""

    policy: Policy
    max_lines: int
    compiled: CompiledPath = field(init=False)
    pure: PurePath = field(init=False)
    sink: RecordingSink = field(init=False)
    holder: IndexHolder = field(init=False)
    servicer: EligibilityServicer = field(init=False)

    def __post_init__(self) -> None:
        self.compiled = CompiledPath(self.policy, self.max_lines)
        self.pure = PurePath(self.policy, self.max_lines)
        self.sink = RecordingSink()
        self.holder = IndexHolder()
        self.servicer = EligibilityServicer(
            self.holder, self.policy, max_lines_per_claim=self.max_lines, overrides=self.sink
        )

    def decide(self, index: Index, data: bytes) -> bytes:
        """``servicer.decide_claim(data)`` on ``index`` with today = TODAY."""
        if self.holder.current is not index:
            self.holder.swap(index, force=True)
        self.sink.records.clear()
        with patch.object(servicer_module, "today_day", lambda: TODAY):
            response, commit = self.servicer.decide_claim(data)
        assert commit is None
        return response

    def refusal(self, index: Index, data: bytes) -> InvalidRequestError:
        with pytest.raises(InvalidRequestError) as info:
            self.decide(index, data)
        return info.value

    def reset_counters(self) -> None:
        for counters in (self.compiled.kernel, self.pure):
            for name in COUNTERS:
                getattr(counters, name)[...] = 0

    def assert_same_counters(self) -> None:
        for name in COUNTERS:
            assert np.array_equal(getattr(self.compiled.kernel, name), getattr(self.pure, name)), (
                name
            )


PATHS = {policy: Paths(policy, MAX_LINES) for policy in POLICIES}


def reference(
    index: Index, policy: Policy, request: pb.CheckClaimRequest
) -> tuple[bytes, list[Override]] | InvalidRequestError:
    try:
        response, overrides = check_claim(
            index, policy, request, max_lines=MAX_LINES, today_day=TODAY
        )
    except InvalidRequestError as exc:
        return exc
    return response.SerializeToString(), overrides


def assert_kernel_agrees(index: Index, policy: Policy, request: pb.CheckClaimRequest) -> None:
    """The kernel and the servicer answer what the reference answers."""
    paths = PATHS[policy]
    data = request.SerializeToString()
    want = reference(index, policy, request)
    paths.reset_counters()
    got = paths.compiled.kernel.check(view_of(index), data, TODAY)
    assert paths.pure.check(index, data, TODAY) == (
        INVALID if isinstance(want, InvalidRequestError) else want[0] if not want[1] else want
    )
    paths.assert_same_counters()
    if isinstance(want, InvalidRequestError):
        outcome(f"refused: {want.field.split('[')[0]}")
        assert got in (PUNT, INVALID), (data, want, got)
        assert str(paths.refusal(index, data)) == str(want), data
        return
    response, overrides = want
    outcome("decided, with overrides" if overrides else "decided")
    assert got != INVALID, f"the kernel refuses a request the reference decides: {data!r}"
    assert got == ((response, overrides) if overrides else response), (data, want, got)
    assert paths.decide(index, data) == response
    assert paths.sink.records == ([overrides] if overrides else [])


# ---------------------------------------------------------------------------
# 1. Claims, compiled and reference


@settings(SETTINGS, max_examples=100)
@given(worlds(), st.data())
def test_the_kernel_decides_generated_claims_as_the_reference_does(
    world: World, data: st.DataObject
) -> None:
    requests = data.draw(st.lists(claims(world.codes), min_size=1, max_size=3), "requests")
    for index in world.indexes:
        for policy in POLICIES:
            for request in requests:
                assert_kernel_agrees(index, policy, request)


@settings(SETTINGS, max_examples=200)
@given(claims(FIXED_CODES), st.sampled_from(POLICIES))
@example(  # 129 characters in 258 bytes
    pb.CheckClaimRequest(
        claim_id="é" * 129,
        institution_code=H1,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=20251231,
        lines=[pb.ClaimLine(prescriber_code="D110105000001")],
    ),
    Policy(),
)
@example(  # 128 characters in 512 bytes
    pb.CheckClaimRequest(
        claim_id="😀" * 128,
        institution_code=P1,
        channel=pb.CHANNEL_PHARMACY,
        principal_code="HY110105000005",
        service_date=20251230,
        lines=[pb.ClaimLine(prescriber_code="", emergency=True)],
    ),
    Policy(),
)
def test_the_kernel_decides_claims_over_the_fixed_index_as_the_reference_does(
    request: pb.CheckClaimRequest, policy: Policy
) -> None:
    for index in FIXED_WORLD.indexes:
        assert_kernel_agrees(index, policy, request)


def grid_lines(date: int) -> list[pb.ClaimLine]:
    """Every practitioner on the claim's date, emergency and not, and on the
    day before or after it."""
    day = yyyymmdd_to_day(date)
    near = [d for d in (day - 1, day + 1) if 0 <= d <= TODAY]
    lines = []
    for i, code in enumerate([*FIXED_CODES, "", MALFORMED_CODES[0], MALFORMED_CODES[6]]):
        for j, (line_day, emergency) in enumerate(
            [(None, False), (None, True), (near[i % len(near)], i % 2 == 1)]
        ):
            lines.append(
                pb.ClaimLine(
                    line_id=f"{i}-{j}",
                    prescriber_code=code,
                    service_date=0 if line_day is None else day_to_yyyymmdd(line_day),
                    emergency=emergency,
                    amount_fen=i * 100 + j,
                )
            )
    assert len(lines) <= MAX_LINES
    return lines


@pytest.mark.slow
def test_the_kernel_decides_every_case_of_the_fixed_index_as_the_reference_does() -> None:
    """Every practitioner x institution x principal x boundary day, both
    channels, the three indexes and the four policies."""
    requests = []
    for date in VALID_DATES:
        lines = grid_lines(date)
        for institution in [H1, H2, NEW_H, NOBODY_H]:
            requests.append(
                pb.CheckClaimRequest(
                    claim_id=f"H-{institution}-{date}",
                    institution_code=institution,
                    channel=pb.CHANNEL_HOSPITAL,
                    service_date=date,
                    lines=lines,
                )
            )
        for institution in [P1, P2, NEW_P, NOBODY_P]:
            for principal in FIXED_PRINCIPALS:
                requests.append(
                    pb.CheckClaimRequest(
                        claim_id=f"P-{institution}-{principal}-{date}",
                        institution_code=institution,
                        channel=pb.CHANNEL_PHARMACY,
                        principal_code=principal,
                        service_date=date,
                        lines=lines,
                    )
                )
    for index in FIXED_WORLD.indexes:
        for policy in POLICIES:
            for request in requests:
                assert_kernel_agrees(index, policy, request)


def random_people(rng: random.Random, codes: list[str], institutions: list[str]) -> list[Person]:
    out = []
    for code in codes:
        registrations: list[tuple[str, str, str | None]] = []
        for _ in range(rng.choice([0, 1, 1, 1, 1, 2, 3])):
            start, end = sorted(rng.sample(ANCHORS, 2))
            registrations.append((rng.choice(institutions), start, rng.choice([end, None])))
        changes: list[tuple[str, Status, str | None]] = []
        if rng.random() < 0.3:
            for start in sorted(rng.sample(ANCHORS, rng.randint(1, 3))):
                status = rng.choice(STATUSES)
                last = None
                if status == Status.SUSPENDED and rng.random() < 0.7:
                    last = rng.choice([a for a in ANCHORS if a >= start])
                changes.append((start, status, last))
        out.append(Person(code, registrations, changes))
    return out


@pytest.mark.slow
def test_the_kernel_finds_every_practitioner_of_a_larger_index() -> None:
    """Thousands of practitioners (the hash table's probing and wrap-around),
    a tenth of them changed, claims of 64 lines (two blocks of lookups)."""
    rng = random.Random(14)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    codes = sorted(
        {
            "".join(rng.choices(letters, k=rng.choice([1, 2])))
            + f"{rng.randint(0, 10**12 - 1):012d}"
            for _ in range(4000)
        }
    )
    institutions = [f"{kind}{n:011d}" for kind in "HP" for n in range(1, 40)]
    base_codes, new_codes = codes[:3600], codes[3600:]
    changed = rng.sample(base_codes, 300) + new_codes
    world = make_world(
        random_people(rng, base_codes, institutions),
        random_people(rng, changed, [*institutions, NEW_H, NEW_P]),
    )
    unknown = [c[:-1] + str((int(c[-1]) + 1) % 10) for c in codes]  # next to a known one
    everyone = [*codes, *[c for c in unknown if c not in set(codes)]]
    rng.shuffle(everyone)
    for start in range(0, len(everyone), MAX_LINES):
        pharmacy = rng.random() < 0.3
        date = rng.choice(VALID_DATES)
        request = pb.CheckClaimRequest(
            claim_id=f"L-{start}",
            institution_code=rng.choice(
                [c for c in [*institutions, NEW_H, NEW_P] if (c[0] == "P") == pharmacy]
            ),
            channel=pb.CHANNEL_PHARMACY if pharmacy else pb.CHANNEL_HOSPITAL,
            principal_code=rng.choice(codes) if pharmacy else "",
            service_date=date,
            lines=[
                pb.ClaimLine(
                    line_id=str(i),
                    prescriber_code=code,
                    service_date=rng.choice([0, rng.choice(VALID_DATES)]),
                    emergency=rng.random() < 0.3,
                )
                for i, code in enumerate(everyone[start : start + MAX_LINES])
            ],
        )
        for index in world.indexes:
            assert_kernel_agrees(index, Policy(), request)


def test_lines_of_many_dates_are_each_decided_on_their_own_date() -> None:
    """Every day of two years on the lines of a few claims, shuffled: dates
    that share a slot of the kernel's date cache (YYYYMMDD mod 64) alternate."""
    rng = random.Random(64)
    days = list(range(iso_to_day("2024-01-01"), iso_to_day("2025-12-31") + 1))
    rng.shuffle(days)
    for start in range(0, len(days), MAX_LINES):
        request = pb.CheckClaimRequest(
            claim_id=f"D-{start}",
            institution_code=H1,
            channel=pb.CHANNEL_HOSPITAL,
            service_date=20251231,
            lines=[
                pb.ClaimLine(
                    line_id=str(day),
                    prescriber_code=rng.choice(FIXED_CODES),
                    service_date=day_to_yyyymmdd(day),
                    emergency=True,
                )
                for day in days[start : start + MAX_LINES]
            ],
        )
        for index in FIXED_WORLD.indexes:
            assert_kernel_agrees(index, Policy(), request)


# ---------------------------------------------------------------------------
# 2. The wire format: whatever the bytes, the answer protobuf's parser gives


@dataclass
class Field:
    """One field on the wire, encoded as written: ``value`` an int (varint,
    fixed64, fixed32), bytes or a message's fields (length-delimited), or a
    group's fields (start group; ``end`` the end tag's field number)."""

    number: int
    wire: int
    value: int | bytes | list[Field]
    tag_pad: int = 0  # bytes added to the tag's varint (non-minimal)
    pad: int = 0  # bytes added to a varint value's or a length's varint
    end: int | None = None


def varint(value: int, pad: int = 0) -> bytes:
    """``value`` (mod 2**64) as a varint, ``pad`` bytes longer than it needs be."""
    value %= 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    if pad:
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes(out)


def encode(fields: Sequence[Field]) -> bytes:
    out = bytearray()
    for f in fields:
        out += varint(f.number << 3 | f.wire, f.tag_pad)
        value = f.value
        if f.wire == 0:
            assert isinstance(value, int)
            out += varint(value, f.pad)
        elif f.wire == 1:
            assert isinstance(value, int)
            out += (value % (1 << 64)).to_bytes(8, "little")
        elif f.wire == 5:
            assert isinstance(value, int)
            out += (value % (1 << 32)).to_bytes(4, "little")
        elif f.wire == 2:
            assert not isinstance(value, int)
            payload = value if isinstance(value, bytes) else encode(value)
            out += varint(len(payload), f.pad) + payload
        elif f.wire == 3:
            assert isinstance(value, list)
            end = f.number if f.end is None else f.end
            out += encode(value) + varint(end << 3 | 4)
        # 4 (a lone end group), 6, 7 (no such wire type): the tag alone
    return bytes(out)


def fields_of(request: pb.CheckClaimRequest) -> list[Field]:
    """The request's fields as protobuf writes them (canonical)."""
    top: list[Field] = []
    if request.claim_id:
        top.append(Field(1, 2, request.claim_id.encode()))
    if request.institution_code:
        top.append(Field(2, 2, request.institution_code.encode()))
    if request.channel:
        top.append(Field(3, 0, request.channel))
    if request.principal_code:
        top.append(Field(4, 2, request.principal_code.encode()))
    if request.service_date:
        top.append(Field(5, 0, request.service_date))
    for line in request.lines:
        fields: list[Field] = []
        if line.line_id:
            fields.append(Field(1, 2, line.line_id.encode()))
        if line.prescriber_code:
            fields.append(Field(2, 2, line.prescriber_code.encode()))
        if line.service_date:
            fields.append(Field(3, 0, line.service_date))
        if line.emergency:
            fields.append(Field(4, 0, 1))
        if line.item_code:
            fields.append(Field(5, 2, line.item_code.encode()))
        if line.amount_fen:
            fields.append(Field(6, 0, line.amount_fen))
        top.append(Field(6, 2, fields))
    return top


# The wire type of each known field, in the request and in a line.
REQUEST_WIRES = {1: 2, 2: 2, 3: 0, 4: 2, 5: 0, 6: 2}
LINE_WIRES = {1: 2, 2: 2, 3: 0, 4: 0, 5: 2, 6: 0}
REQUEST_STRINGS, LINE_STRINGS = {1, 2, 4}, {1, 2, 5}
REQUEST_INT32S, LINE_INT32S = {3, 5}, {3}
BAD_UTF8 = [
    b"\xff",
    b"\x80",  # a lone continuation byte
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xe0\x80\x80",  # overlong
    b"\xed\xa0\x80",  # a surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xe2\x82",  # cut short
    b"\xf0\x9f\x98",
    b"\xc3",
]
ODD_UTF8 = [
    b"\x00",
    b"\xc2\x80",
    b"\xed\x9f\xbf",
    b"\xee\x80\x80",
    b"\xef\xbf\xbf",
    b"\xf4\x8f\xbf\xbf",
]
uint64s = st.integers(0, 2**64 - 1)
PAD_MAX = 10  # bytes a varint is padded by: up to 11-byte varints (10 is the most allowed)


@st.composite
def any_fields(
    draw: st.DrawFn, numbers: st.SearchStrategy[int], depth: int = 0, not_wire: int = -1
) -> Field:
    """A field of any wire type but ``not_wire`` (groups nest, and may end with
    the wrong field number)."""
    number = draw(numbers)
    wires = [w for w in ([0, 1, 2, 5, 3] if depth < 2 else [0, 1, 2, 5]) if w != not_wire]
    wire = sometimes(draw, st.sampled_from(wires), st.sampled_from([4, 6, 7]), one_in=12)
    value: int | bytes | list[Field]
    end = None
    if wire == 2:
        value = draw(st.binary(max_size=8))
    elif wire == 3:
        inner = st.one_of(st.integers(1, 20), st.integers(1, 2**29 - 1))
        value = draw(st.lists(any_fields(inner, depth + 1), max_size=3))
        end = sometimes(draw, st.just(number), st.integers(0, 20), one_in=8)
    else:
        value = draw(uint64s)
    return Field(number, wire, value, end=end)


def _value_like(draw: st.DrawFn, f: Field) -> int | bytes | list[Field]:
    """Another value for a field like ``f``."""
    if isinstance(f.value, int):
        return draw(st.one_of(int32s, uint64s))
    if isinstance(f.value, bytes):
        return draw(
            st.one_of(
                st.sampled_from([c.encode() for c in KNOWN_CODES]),
                st.text(max_size=14).map(str.encode),
            )
        )
    return list(f.value)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A claim's bytes, changed where protobuf's parser reads closely."""
    request = draw(claims(FIXED_CODES))
    top = fields_of(request)
    assert encode(top) == request.SerializeToString()
    for _ in range(draw(st.integers(1, 4))):
        containers: list[tuple[list[Field], dict[int, int]]] = [(top, REQUEST_WIRES)]
        for f in top:
            if f.number == 6 and isinstance(f.value, list):
                containers.append((f.value, LINE_WIRES))
        fields, wires = containers[draw(st.integers(0, len(containers) - 1))]
        in_request = wires is REQUEST_WIRES
        strings = REQUEST_STRINGS if in_request else LINE_STRINGS
        int32_fields = REQUEST_INT32S if in_request else LINE_INT32S
        at = draw(st.integers(0, len(fields)))
        picked = fields[draw(st.integers(0, len(fields) - 1))] if fields else None
        op = draw(
            st.sampled_from(
                ["unknown", "wrong wire", "repeat", "pad", "wide int32", "utf8", "field 0"]
            )
        )
        if op == "unknown":
            fields.insert(
                at, draw(any_fields(st.one_of(st.integers(7, 40), st.integers(7, 2**29 - 1))))
            )
        elif op == "wrong wire":  # a known field number with another wire type: an unknown field
            number = draw(st.sampled_from(sorted(wires)))
            fields.insert(at, draw(any_fields(st.just(number), not_wire=wires[number])))
        elif (
            op == "repeat" and picked is not None
        ):  # an earlier value (the last wins) or a later one
            copy = Field(picked.number, picked.wire, _value_like(draw, picked))
            position = fields.index(picked) + draw(st.sampled_from([0, 1]))
            fields.insert(position, copy)
        elif op == "pad" and picked is not None:  # non-minimal varints, up to 11 bytes
            if draw(st.booleans()):
                picked.tag_pad = draw(st.integers(1, PAD_MAX))
            elif picked.wire in (0, 2):
                picked.pad = draw(st.integers(1, PAD_MAX))
        elif op == "wide int32":  # an int32 sent with 64 bits: protobuf keeps the low 32
            high = draw(st.one_of(st.sampled_from([0xFFFFFFFF, 1, 0x7FFFFFFF]), uint64s))
            for f in fields:
                if f.number in int32_fields and f.wire == 0 and isinstance(f.value, int):
                    f.value = (f.value % (1 << 32)) | (high % (1 << 32)) << 32
        elif op == "utf8":
            targets = [f for f in fields if f.number in strings and isinstance(f.value, bytes)]
            if not targets:
                targets = [Field(draw(st.sampled_from(sorted(strings))), 2, b"")]
                fields.insert(at, targets[0])
            target = draw(st.sampled_from(targets))
            assert isinstance(target.value, bytes)
            cut = draw(st.integers(0, len(target.value)))
            odd = draw(st.sampled_from(BAD_UTF8 if draw(st.integers(0, 3)) else ODD_UTF8))
            target.value = target.value[:cut] + odd + target.value[cut:]
        elif op == "field 0":
            fields.insert(at, Field(0, 0, 0) if draw(st.booleans()) else Field(0, 2, b""))
    data = bytearray(encode(top))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            del data[pos:]
        else:
            data[pos] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def assert_decided_like_protobuf(index: Index, policy: Policy, data: bytes) -> None:
    """``decide_claim(data)`` answers what protobuf's parser, then the reference, answer."""
    paths = PATHS[policy]
    try:
        request = pb.CheckClaimRequest.FromString(data)
    except DecodeError:
        outcome("not a message")
        assert paths.refusal(index, data).field == "request", data
        return
    want = reference(index, policy, request)
    if isinstance(want, InvalidRequestError):
        outcome(f"refused: {want.field.split('[')[0]}")
        assert str(paths.refusal(index, data)) == str(want), data
        return
    outcome("decided")
    response, overrides = want
    assert paths.decide(index, data) == response, data
    assert paths.sink.records == ([overrides] if overrides else []), data


FIXED_VALID = pb.CheckClaimRequest(
    claim_id="C-01",
    institution_code=H1,
    channel=pb.CHANNEL_HOSPITAL,
    service_date=20251231,
    lines=[pb.ClaimLine(line_id="1", prescriber_code="D110105000001")],
).SerializeToString()


@settings(SETTINGS, max_examples=300)
@given(mutated_requests(), st.sampled_from(POLICIES))
def test_mutated_requests_are_answered_as_protobuf_reads_them(data: bytes, policy: Policy) -> None:
    assert_decided_like_protobuf(FIXED_WORLD.changed, policy, data)


@settings(SETTINGS, max_examples=200)
@given(st.one_of(st.binary(max_size=64), st.binary(max_size=600)), st.sampled_from(POLICIES))
def test_random_bytes_are_answered_as_protobuf_reads_them(data: bytes, policy: Policy) -> None:
    assert_decided_like_protobuf(FIXED_WORLD.changed, policy, data)


def with_claim_id_tag(tag: bytes) -> bytes:
    """FIXED_VALID with its first field's tag (claim_id: 0x0a) written as ``tag``."""
    assert FIXED_VALID[0] == 0x0A
    return tag + FIXED_VALID[1:]


def with_claim_id_length(length: bytes) -> bytes:
    """FIXED_VALID with claim_id's length (4) written as ``length``."""
    assert FIXED_VALID[1] == 4
    return FIXED_VALID[:1] + length + FIXED_VALID[2:]


def padded_in_line(number: int, *, tag_pad: int, pad: int) -> bytes:
    """FIXED_VALID with field ``number`` of its line written longer than it needs be."""
    request = pb.CheckClaimRequest.FromString(FIXED_VALID)
    request.lines[0].service_date = 20251230
    top = fields_of(request)
    line = top[-1].value
    assert isinstance(line, list)
    for f in line:
        if f.number == number:
            f.tag_pad, f.pad = tag_pad, pad
    return encode(top)


@pytest.mark.parametrize(
    "data",
    [
        # Protobuf's parser (upb) reads a tag of at most 5 bytes and a length
        # of at most 5 bytes; longer ones, even of small values, are corrupt.
        pytest.param(with_claim_id_tag(b"\x8a\x80\x80\x80\x80\x00"), id="6-byte tag"),
        pytest.param(with_claim_id_tag(b"\x8a" + b"\x80" * 8 + b"\x00"), id="10-byte tag"),
        pytest.param(with_claim_id_length(b"\x84\x80\x80\x80\x80\x00"), id="6-byte length"),
        pytest.param(with_claim_id_length(b"\x84" + b"\x80" * 8 + b"\x00"), id="10-byte length"),
        pytest.param(padded_in_line(2, tag_pad=0, pad=5), id="6-byte length in a line"),
        pytest.param(padded_in_line(2, tag_pad=5, pad=0), id="6-byte tag in a line"),
        pytest.param(padded_in_line(3, tag_pad=0, pad=7), id="10-byte date in a line"),
        pytest.param(FIXED_VALID + b"\x3a\x80\x80\x80\x80\x80\x00", id="6-byte unknown length"),
        # ... and at most 5 bytes are fine.
        pytest.param(with_claim_id_tag(b"\x8a\x80\x80\x80\x00"), id="5-byte tag"),
        pytest.param(with_claim_id_length(b"\x84\x80\x80\x80\x00"), id="5-byte length"),
        pytest.param(FIXED_VALID + b"\x38" + b"\xff" * 9 + b"\x01", id="10-byte unknown varint"),
        pytest.param(
            FIXED_VALID + b"\x38" + b"\xff" * 9 + b"\x7f", id="10-byte varint past 64 bits"
        ),
        pytest.param(FIXED_VALID + b"\x38" + b"\xff" * 10 + b"\x01", id="11-byte varint"),
        pytest.param(FIXED_VALID + b"\x3b\x38\x01\x3c", id="unknown group"),
        pytest.param(FIXED_VALID + b"\x3b\x38\x01\x44", id="group ended by another field"),
        pytest.param(FIXED_VALID + b"\x3c", id="lone end group"),
        pytest.param(FIXED_VALID + b"\x0b\x0c", id="claim_id as a group"),
        pytest.param(FIXED_VALID + b"\x08\x00", id="claim_id as a varint"),
    ],
)
def test_non_minimal_and_odd_wire_forms_are_read_as_protobuf_reads_them(data: bytes) -> None:
    for policy in POLICIES:
        assert_decided_like_protobuf(FIXED_WORLD.changed, policy, data)


# ---------------------------------------------------------------------------
# 4. Constants: dates, claim-size buckets, counters


def test_the_kernel_writes_every_stored_day_as_contract_days_does() -> None:
    for day in range(0, MAX_DAY + 2):  # DAY_NONE too
        assert kernel.day_to_yyyymmdd(day) == day_to_yyyymmdd(day), day


def test_the_kernel_reads_every_stored_day_back() -> None:
    for day in range(0, MAX_DAY + 1):
        value = day_to_yyyymmdd(day)
        assert kernel.yyyymmdd_to_day(value, MAX_DAY) == day, value
        assert kernel.yyyymmdd_to_day(value, day) == day, value
        assert kernel.yyyymmdd_to_day(value, day - 1) == -1, value  # the future


def parse_day_or_minus_1(value: int, today: int) -> int:
    try:
        return parse_day(value, "service_date", today)
    except InvalidRequestError:
        return -1


def test_the_kernel_accepts_the_dates_parse_day_accepts_near_the_ends_of_the_range() -> None:
    for year in (0, 1, 1969, 1970, 1971, 2000, 2024, 2100, 2148, 2149, 2150, 9999, 10000):
        for month in range(0, 14):
            for mday in (0, 1, 5, 6, 7, 28, 29, 30, 31, 32, 99):
                value = year * 10000 + month * 100 + mday
                for today in (0, TODAY, MAX_DAY):
                    want = parse_day_or_minus_1(value, today)
                    assert kernel.yyyymmdd_to_day(value, today) == want, (value, today)


@given(
    st.one_of(
        int32s,
        st.integers(19691231, 21500101),
        st.dates().map(lambda d: d.year * 10000 + d.month * 100 + d.day),
    ),
    st.integers(0, MAX_DAY),
)
def test_the_kernel_accepts_the_dates_parse_day_accepts(value: int, today: int) -> None:
    assert kernel.yyyymmdd_to_day(value, today) == parse_day_or_minus_1(value, today)


def test_the_kernel_shares_the_claim_paths_constants() -> None:
    assert (kernel.PUNT, kernel.INVALID) == (PUNT, INVALID)
    assert (kernel.CHANNEL_HOSPITAL, kernel.CHANNEL_PHARMACY) == (
        pb.CHANNEL_HOSPITAL,
        pb.CHANNEL_PHARMACY,
    )


def lines_of(n: int, pharmacy: bool) -> bytes:
    return pb.CheckClaimRequest(
        claim_id=f"B-{n}",
        institution_code=P1 if pharmacy else H1,
        channel=pb.CHANNEL_PHARMACY if pharmacy else pb.CHANNEL_HOSPITAL,
        principal_code="HY110105000005" if pharmacy else "",
        service_date=20251231,
        lines=[pb.ClaimLine(prescriber_code="D110105000001", amount_fen=7)] * n,
    ).SerializeToString()


def test_claims_are_counted_in_the_line_buckets_of_the_metrics() -> None:
    sizes = sorted({n + d for n in LINES_BUCKETS for d in (0, 1)} | {1, 3})
    checker = kernel.ClaimKernel(max_lines=max(sizes))
    pure = PurePath(Policy(), max(sizes))
    assert checker.claim_buckets.shape == (2, len(LINES_BUCKETS) + 1)
    view = view_of(FIXED_WORLD.base)
    for n in sizes:
        for channel, pharmacy in enumerate((False, True)):
            before = checker.claim_buckets.copy()
            assert isinstance(checker.check(view, lines_of(n, pharmacy), TODAY), bytes)
            pure.check(FIXED_WORLD.base, lines_of(n, pharmacy), TODAY)
            changed = np.argwhere(checker.claim_buckets != before).tolist()
            bucket = sum(1 for bound in LINES_BUCKETS if n > bound)  # le="bound"
            assert changed == [[channel, bucket]], n
    for name in COUNTERS:
        assert np.array_equal(getattr(checker, name), getattr(pure, name)), name
    assert checker.claim_lines_sum.tolist() == [sum(sizes)] * 2


def test_rejected_amounts_never_wrap_the_counters() -> None:
    """Two rejected lines of the largest amount an int64 carries: the
    rejected-amount counter (a Prometheus counter) must not go negative."""
    checker = kernel.ClaimKernel()
    data = pb.CheckClaimRequest(
        claim_id="big",
        institution_code=H1,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=20251231,
        lines=[pb.ClaimLine(prescriber_code=UNKNOWN_CODE, amount_fen=2**63 - 1)] * 2,
    ).SerializeToString()
    assert isinstance(checker.check(view_of(FIXED_WORLD.base), data, TODAY), bytes)
    assert checker.rejected_fen.min() >= 0, checker.rejected_fen.tolist()


# ---------------------------------------------------------------------------
# 3. End to end: a compiled gateway and a --pure-python one, same data

UNARY = "/eligibility.v1.EligibilityGateway/CheckClaim"
STREAM = "/eligibility.v1.EligibilityGateway/CheckClaims"
E2E_MAX_LINES = 40


@dataclass
class Twins:
    compiled: GatewayProcess
    pure: GatewayProcess
    sample: Path


@pytest.fixture(scope="module")
def twins(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twins]:
    prefix = "kernel-twins"
    sample = tmp_path_factory.mktemp("kernel-sample")
    publish_sample(redis_url, prefix, sample)
    args = ("--max-lines-per-claim", str(E2E_MAX_LINES), "--no-demo")
    compiled = GatewayProcess(redis_url, prefix, *args)
    pure = GatewayProcess(redis_url, prefix, *args, "--pure-python")
    with compiled, pure:
        yield Twins(compiled, pure, sample)
    assert "--pure-python: claims are decided by the Python reference" in pure.log()


def sample_claims(sample: Path, count: int, seed: int) -> list[pb.CheckClaimRequest]:
    """Claims over the sample's practitioners and institutions, decided today:
    valid envelopes; codes known, unknown, malformed and empty; any past date."""
    with (sample / "registry.csv").open(encoding="utf-8") as rows:
        registry = list(csv.DictReader(rows))
    staff = sorted({r["practitioner_code"] for r in registry if r["role"] != "principal"})
    principals = sorted({r["practitioner_code"] for r in registry if r["role"] == "principal"})
    hospitals = sorted({r["institution_code"] for r in registry if r["institution_code"][0] == "H"})
    pharmacies = sorted(
        {r["institution_code"] for r in registry if r["institution_code"][0] == "P"}
    )
    rng = random.Random(seed)
    today = today_cst()

    def date(span: int) -> int:
        day = today - dt.timedelta(days=rng.randint(0, span))
        return day.year * 10000 + day.month * 100 + day.day

    def code() -> str:
        roll = rng.random()
        if roll < 0.05:
            return rng.choice(["", "D1101", "d110105000001", "Ｄ110105000001"])
        if roll < 0.10:
            return f"Q{rng.randint(0, 10**12 - 1):012d}"  # a letter the sample never uses
        if roll < 0.15:
            return rng.choice(principals)
        return rng.choice(staff)

    claims = []
    for n in range(count):
        pharmacy = rng.random() < 0.4
        institution = rng.choice(pharmacies if pharmacy else hospitals)
        if rng.random() < 0.05:
            institution = ("P" if pharmacy else "H") + "99999999999"  # no one registered
        lines = [
            pb.ClaimLine(
                line_id=f"{n}-{i}",
                prescriber_code=code(),
                service_date=0 if rng.random() < 0.5 else date(1500),
                emergency=rng.random() < 0.2,
                item_code=f"item-{rng.randint(0, 999)}",
                amount_fen=rng.randint(0, 10**6),
            )
            for i in range(rng.choice([1, 1, 2, 5, 20, E2E_MAX_LINES]))
        ]
        claims.append(
            pb.CheckClaimRequest(
                claim_id=f"E2E-{seed}-{n}",
                institution_code=institution,
                channel=pb.CHANNEL_PHARMACY if pharmacy else pb.CHANNEL_HOSPITAL,
                principal_code=(
                    (rng.choice([FIXED.active_principal, FIXED.suspended_principal, *principals]))
                    if pharmacy
                    else ""
                ),
                service_date=date(1500),
                lines=lines,
            )
        )
    return claims


def unary(channel: grpc.Channel, data: bytes) -> bytes | tuple[grpc.StatusCode, str]:
    call = channel.unary_unary(UNARY, request_serializer=None, response_deserializer=None)
    try:
        answer: bytes = call(data, timeout=30)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return answer


def stream(channel: grpc.Channel, bodies: list[bytes]) -> list[bytes]:
    call = channel.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
    return list(call(iter(bodies), timeout=60))


@pytest.mark.slow
def test_the_compiled_gateway_answers_what_the_pure_python_one_answers(twins: Twins) -> None:
    claims = sample_claims(twins.sample, 200, seed=14)
    bodies = [claim.SerializeToString() for claim in claims]
    # Refused ones too, on their own calls: the same status and message.
    broken = [
        claims[0].SerializeToString() + b"\x3b",  # an unterminated group
        pb.CheckClaimRequest(claim_id="x", channel=pb.CHANNEL_HOSPITAL).SerializeToString(),
        pb.CheckClaimRequest(
            claim_id="x",
            institution_code=FIXED.pharmacy,
            channel=pb.CHANNEL_PHARMACY,
            service_date=20250101,
            lines=[pb.ClaimLine()],
        ).SerializeToString(),
        pb.CheckClaimRequest(
            claim_id="x",
            institution_code=FIXED.hospital,
            channel=pb.CHANNEL_HOSPITAL,
            service_date=20250101,
            lines=[pb.ClaimLine()] * (E2E_MAX_LINES + 1),
        ).SerializeToString(),
        b"\x0a\x02\xc3\x28",  # bad UTF-8
    ]
    with (
        grpc.insecure_channel(twins.compiled.address) as compiled,
        grpc.insecure_channel(twins.pure.address) as pure,
    ):
        for claim, body in zip(claims, bodies, strict=True):
            got, want = unary(compiled, body), unary(pure, body)
            assert isinstance(want, bytes), (claim, want)
            assert got == want, claim
            response = pb.CheckClaimResponse.FromString(want)
            assert response.SerializeToString() == want
            assert [d.line_id for d in response.lines] == [line.line_id for line in claim.lines]
        for body in broken:
            got, want = unary(compiled, body), unary(pure, body)
            assert isinstance(want, tuple) and want[0] == grpc.StatusCode.INVALID_ARGUMENT, want
            assert got == want
        got_stream, want_stream = stream(compiled, bodies), stream(pure, bodies)
        assert len(want_stream) == len(bodies)
        assert got_stream == want_stream
        assert got_stream == [unary(pure, body) for body in bodies]
