"""Microbenchmarks (pytest-benchmark) on a national-scale index: code
encoding, index lookup, the compiled claim path and the Python reference by
claim size, a 100,000-line batch, protobuf decoding and encoding. Not
collected by ``make test`` (testpaths = tests)::

    python -m pytest bench/test_micro.py --benchmark-columns=min,median,mean,ops

Each benchmark cycles through pre-built inputs so that lookups do not hit
one cached practitioner; ``extra_info["lines_per_s"]`` is lines per second at
the median.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.national import ClaimGenerator, NationalData
from contract import codes
from contract.days import day_to_yyyymmdd, today_day
from gateway.claimpath import CompiledPath, PurePath, view_of
from gateway.claims import parse_claim
from gateway.decide import Policy
from gateway.index import StatusIndex
from gateway.servicer import EligibilityServicer
from proto.eligibility.v1 import eligibility_pb2 as pb

SIZES = [1, 5, 20, 200]
POOL = 512


def _cycled(items: list[Any]) -> Callable[[], Any]:
    it = itertools.cycle(items)
    return lambda: next(it)


def _lines_per_s(benchmark: BenchmarkFixture, lines: int) -> None:
    stats = benchmark.stats
    if stats is not None:
        benchmark.extra_info["lines_per_s"] = round(lines / stats.stats.median)


def _claims(claims: ClaimGenerator, n_lines: int) -> list[pb.CheckClaimRequest]:
    shape = "pharmacy-rx" if n_lines < 20 else "hospital"
    return claims.claims(shape, POOL, n_lines)


def test_encode_practitioner_code(benchmark: BenchmarkFixture, national: NationalData) -> None:
    keys = national.arrays["prac_codes"][:: max(len(national.arrays["prac_codes"]) // POOL, 1)]
    next_code = _cycled([codes.decode_practitioner(int(k)) for k in keys])
    benchmark(lambda: codes.encode_practitioner(next_code()))


@pytest.mark.parametrize("n_lines", [1, 20, 1000])
def test_index_lookup_15m_index(
    benchmark: BenchmarkFixture, index: StatusIndex, national: NationalData, n_lines: int
) -> None:
    rng = np.random.default_rng(3)
    codes_ = national.arrays["prac_codes"]
    batches = [
        codes_[rng.integers(0, len(codes_), size=n_lines)].astype(np.int64) for _ in range(64)
    ]
    days = np.full(n_lines, national.today, dtype=np.int64)
    next_keys = _cycled(batches)

    def lookup() -> object:
        return index.lookup(index.rows(next_keys()), days, 17)

    benchmark(lookup)
    _lines_per_s(benchmark, n_lines)


@pytest.mark.parametrize("n_lines", SIZES)
def test_kernel_claims_15m_index(
    benchmark: BenchmarkFixture, index: StatusIndex, claims: ClaimGenerator, n_lines: int
) -> None:
    """The compiled claim path on one claim of n_lines: request bytes to response bytes."""
    raw = [r.SerializeToString() for r in _claims(claims, n_lines)]
    next_raw = _cycled(raw)
    path = CompiledPath(Policy(), 1000)
    check, view, today = path.kernel.check, view_of(index), today_day()
    benchmark(lambda: check(view, next_raw(), today))
    _lines_per_s(benchmark, n_lines)


@pytest.mark.parametrize("n_lines", [1, 20])
def test_reference_claims_15m_index(
    benchmark: BenchmarkFixture, index: StatusIndex, claims: ClaimGenerator, n_lines: int
) -> None:
    """The Python reference (--pure-python) on the same claims, for comparison."""
    raw = [r.SerializeToString() for r in _claims(claims, n_lines)]
    next_raw = _cycled(raw)
    path, today = PurePath(Policy(), 1000), today_day()
    benchmark(lambda: path.check(index, next_raw(), today))
    _lines_per_s(benchmark, n_lines)


def test_kernel_100k_line_batch_15m_index(
    benchmark: BenchmarkFixture, index: StatusIndex, national: NationalData
) -> None:
    """The compiled claim path on one 100,000-line claim of random practitioners
    over the national index (issue 14's target: >= 10 million lines/s)."""
    n = 100_000
    rng = np.random.default_rng(5)
    codes_ = national.arrays["prac_codes"]
    picked = codes_[rng.integers(0, len(codes_), size=n)].tolist()
    dates = [day_to_yyyymmdd(national.today - int(d)) for d in rng.integers(0, 30, size=n)]
    emergency = (rng.random(n) < 0.02).tolist()
    request = pb.CheckClaimRequest(
        claim_id="HIS-BATCH",
        institution_code=codes.decode_institution(int(national.arrays["inst_codes"][17])),
        channel=pb.CHANNEL_HOSPITAL,
        lines=[
            pb.ClaimLine(
                line_id=str(i),
                prescriber_code=codes.decode_practitioner(int(k)),
                service_date=dates[i],
                emergency=emergency[i],
                amount_fen=100,
            )
            for i, k in enumerate(picked)
        ],
    )
    request.institution_code = "H" + request.institution_code[1:]
    data = request.SerializeToString()
    path = CompiledPath(Policy(), n)
    check, view, today = path.kernel.check, view_of(index), today_day()
    assert not isinstance(check(view, data, today), int)
    benchmark(lambda: check(view, data, today))
    _lines_per_s(benchmark, n)


@pytest.mark.parametrize("n_lines", SIZES)
def test_decode_request_lines(
    benchmark: BenchmarkFixture, claims: ClaimGenerator, n_lines: int
) -> None:
    """Request decoding: protobuf parse + parse_claim (validation, code encoding)."""
    raw = [r.SerializeToString() for r in _claims(claims, n_lines)]
    next_raw = _cycled(raw)
    today = today_day()

    def decode() -> object:
        request = pb.CheckClaimRequest.FromString(next_raw())
        return parse_claim(request, max_lines=1000, today_day=today)

    benchmark(decode)
    _lines_per_s(benchmark, n_lines)


@pytest.mark.parametrize("n_lines", SIZES)
def test_encode_response_lines(benchmark: BenchmarkFixture, n_lines: int) -> None:
    """Response encoding: LineDecision messages built and serialised."""
    line_ids = [str(i + 1) for i in range(n_lines)]

    def encode() -> bytes:
        # As the servicer builds it: lines added in place, then serialised.
        response = pb.CheckClaimResponse(claim_id="HIS-0000000001", index_version=1)
        add = response.lines.add
        for lid in line_ids:
            add(
                line_id=lid,
                decision=pb.DECISION_PAY,
                reason=pb.REASON_OK,
                status=pb.STATUS_ACTIVE,
                status_until=0,
            )
        return response.SerializeToString()

    benchmark(encode)
    _lines_per_s(benchmark, n_lines)


@pytest.mark.parametrize("n_lines", SIZES)
def test_check_claim_lines_15m_index(
    benchmark: BenchmarkFixture,
    servicer: EligibilityServicer,
    claims: ClaimGenerator,
    n_lines: int,
) -> None:
    """The servicer's whole synchronous path for one claim: bytes in, bytes out."""
    raw = [r.SerializeToString() for r in _claims(claims, n_lines)]
    next_raw = _cycled(raw)

    def check() -> bytes:
        return servicer.decide_claim(next_raw())[0]

    benchmark(check)
    _lines_per_s(benchmark, n_lines)
