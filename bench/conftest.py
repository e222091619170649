"""Fixtures for the pytest-benchmark microbenchmarks: one national-scale index
per session (15 million practitioners unless ``BENCH_PRACTITIONERS`` says
otherwise), built in memory: these benchmarks time the kernel, not Redis."""

from __future__ import annotations

import os

import pytest

from bench.bare_server import DiscardOverrides
from bench.national import NATIONAL_PRACTITIONERS, ClaimGenerator, NationalData, national_data
from gateway.decide import Policy
from gateway.index import IndexHolder, StatusIndex
from gateway.servicer import EligibilityServicer


@pytest.fixture(scope="session")
def national() -> NationalData:
    n = int(os.environ.get("BENCH_PRACTITIONERS", NATIONAL_PRACTITIONERS))
    return national_data(n)


@pytest.fixture(scope="session")
def index(national: NationalData) -> StatusIndex:
    return StatusIndex(national.arrays, version=1)


@pytest.fixture(scope="session")
def claims(national: NationalData) -> ClaimGenerator:
    return ClaimGenerator(national, seed=11)


@pytest.fixture(scope="session")
def servicer(index: StatusIndex) -> EligibilityServicer:
    holder = IndexHolder()
    holder.swap(index)
    return EligibilityServicer(
        holder, Policy(), max_lines_per_claim=1000, overrides=DiscardOverrides()
    )
