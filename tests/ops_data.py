"""A small, known data set and claim builders for the operations tests
(metrics, interceptors, TLS, limits, audit, ops CLI): few enough people that
every count the tests expect can be worked out by hand."""

from __future__ import annotations

import datetime as dt
import time
import urllib.request
from collections.abc import Callable

import redis
from prometheus_client.parser import text_string_to_metric_families

from contract.days import today_cst
from contract.domain import Status
from contract.snapshot import Keys
from loader.publish import publish_snapshot
from proto.eligibility.v1 import eligibility_pb2 as pb
from tests.factory import Person, build_arrays

TODAY = today_cst()
DATE = TODAY.year * 10000 + TODAY.month * 100 + TODAY.day
YESTERDAY = (TODAY - dt.timedelta(days=1)).isoformat()
IN_30_DAYS = (TODAY + dt.timedelta(days=30)).isoformat()

HOSPITAL = "H11010500001"
OTHER_HOSPITAL = "H11010500002"
PHARMACY = "P11010500001"
ACTIVE = "D110105000001"
SUSPENDED = "D110105000002"
TERMINATED = "D110105000003"
ELSEWHERE = "D110105000004"  # registered at OTHER_HOSPITAL only
PRINCIPAL = "HY110105000001"
OTHER_SUSPENDED = "N110105000005"  # at OTHER_HOSPITAL

SINCE = "2020-01-01"
PEOPLE = [
    Person(ACTIVE, [(HOSPITAL, SINCE, None)]),
    Person(SUSPENDED, [(HOSPITAL, SINCE, None)], [(YESTERDAY, Status.SUSPENDED, IN_30_DAYS)]),
    Person(TERMINATED, [(HOSPITAL, SINCE, None)], [(YESTERDAY, Status.TERMINATED, None)]),
    Person(ELSEWHERE, [(OTHER_HOSPITAL, SINCE, None)]),
    Person(PRINCIPAL, [(PHARMACY, SINCE, None)]),
    Person(
        OTHER_SUSPENDED,
        [(OTHER_HOSPITAL, SINCE, None)],
        [(YESTERDAY, Status.SUSPENDED, IN_30_DAYS)],
    ),
]


def publish(redis_url: str, prefix: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return publish_snapshot(client, Keys(prefix), build_arrays(PEOPLE)).version
    finally:
        client.close()


def line(code: str, line_id: str, amount_fen: int = 0, emergency: bool = False) -> pb.ClaimLine:
    return pb.ClaimLine(
        line_id=line_id, prescriber_code=code, amount_fen=amount_fen, emergency=emergency
    )


def hospital_claim(claim_id: str, *lines: pb.ClaimLine) -> pb.CheckClaimRequest:
    return pb.CheckClaimRequest(
        claim_id=claim_id,
        institution_code=HOSPITAL,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=DATE,
        lines=list(lines),
    )


def pharmacy_claim(claim_id: str, *lines: pb.ClaimLine) -> pb.CheckClaimRequest:
    return pb.CheckClaimRequest(
        claim_id=claim_id,
        institution_code=PHARMACY,
        channel=pb.CHANNEL_PHARMACY,
        principal_code=PRINCIPAL,
        service_date=DATE,
        lines=list(lines),
    )


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of the gateway's /metrics, keyed by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Poll until ``check()`` is true (for values written in the background)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
