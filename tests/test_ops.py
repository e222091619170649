"""``python -m gateway.ops``: the override review and the sanctions report,
against a real redis-server."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from pathlib import Path

import orjson
import redis
import redis.asyncio as aioredis

from contract.domain import Status
from contract.snapshot import Keys
from gateway.decide import Policy
from gateway.index import IndexHolder
from gateway.ops.audit import OverrideAudit
from gateway.ops.cli import main, parse_moment
from gateway.servicer import EligibilityServicer
from loader.changes import publish_change
from proto.eligibility.v1 import eligibility_pb2 as pb
from tests.factory import Person, build_arrays, build_index
from tests.gateway_process import ROOT
from tests.ops_data import (
    ACTIVE,
    HOSPITAL,
    IN_30_DAYS,
    OTHER_HOSPITAL,
    PEOPLE,
    SINCE,
    SUSPENDED,
    TERMINATED,
    TODAY,
    YESTERDAY,
    hospital_claim,
    line,
    publish,
)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def write_overrides(redis_url: str, prefix: str) -> None:
    """Three overrides by SUSPENDED, one by TERMINATED, through the real servicer."""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        audit = OverrideAudit(client, Keys(prefix).overrides)
        holder = IndexHolder()
        holder.swap(build_index(PEOPLE))
        servicer = EligibilityServicer(holder, Policy(), max_lines_per_claim=10, overrides=audit)
        for i in range(3):
            servicer.check_claim(
                hospital_claim(f"C-{i}", line(SUSPENDED, "1", 100 * i, emergency=True))
            )
        servicer.check_claim(
            hospital_claim(
                "C-T", line(TERMINATED, "7", 5, emergency=True), line(ACTIVE, "8", emergency=True)
            )
        )
        assert await audit.flush() == 4
        await client.aclose()

    asyncio.run(scenario())


def test_overrides_lists_the_records_for_review(redis_url: str, prefix: str) -> None:
    write_overrides(redis_url, prefix)
    common = ("--redis-url", redis_url, "--prefix", prefix)
    code, text = run("overrides", *common, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["claim_id"] for r in rows] == ["C-0", "C-1", "C-2", "C-T"]
    assert rows[3]["practitioner_code"] == TERMINATED
    assert rows[3]["overridden_reason"] == "TERMINATED"
    assert rows[1]["amount_fen"] == "100"
    assert rows[0]["institution_code"] == HOSPITAL

    code, text = run("overrides", *common, "--practitioner", TERMINATED, "--format", "jsonl")
    assert code == 0
    assert [orjson.loads(row)["line_id"] for row in text.splitlines()] == ["7"]

    code, text = run("overrides", *common, "--institution", OTHER_HOSPITAL)
    assert code == 0 and text.splitlines()[-1] == "0 override records"

    tomorrow = TODAY.toordinal() + 1
    since = TODAY.fromordinal(tomorrow).isoformat()
    code, text = run("overrides", *common, "--since", since, "--format", "csv")
    assert code == 0 and text.splitlines() == [text.splitlines()[0]]  # header only

    code, text = run("overrides", *common, "--by-practitioner")
    lines = text.splitlines()
    assert code == 0
    assert lines[1].split() == [SUSPENDED, HOSPITAL, "3"]
    assert lines[2].split() == [TERMINATED, HOSPITAL, "1"]


def test_sanctions_reports_the_share_per_institution(redis_url: str, prefix: str) -> None:
    common = ("--redis-url", redis_url, "--prefix", prefix)
    code, _ = run("sanctions", *common)
    assert code == 1  # nothing published yet
    publish(redis_url, prefix)
    code, text = run("sanctions", *common, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["institution_code"], r["staff"], r["suspended"], r["terminated"]) for r in rows] == [
        (HOSPITAL, "3", "1", "1"),
        (OTHER_HOSPITAL, "2", "1", "0"),
        ("P11010500001", "1", "0", "0"),
    ]
    assert rows[0]["share"] == "0.6667"
    code, text = run("sanctions", *common, "--min-staff", "2", "--top", "1")
    assert code == 0
    assert text.splitlines()[1].split()[:4] == [HOSPITAL, "3", "1", "1"]
    assert text.splitlines()[-1].startswith("1 institutions; snapshot version")


def test_sanctions_see_a_change_published_after_the_load(redis_url: str, prefix: str) -> None:
    """The report reads what the gateways decide from: snapshot + overlay."""
    common = ("--redis-url", redis_url, "--prefix", prefix, "--format", "csv")
    publish(redis_url, prefix)
    suspended_now = Person(
        ACTIVE, [(HOSPITAL, SINCE, None)], [(YESTERDAY, Status.SUSPENDED, IN_30_DAYS)]
    )
    client = redis.Redis.from_url(redis_url)
    try:
        publish_change(client, Keys(prefix), build_arrays([suspended_now]))
    finally:
        client.close()
    code, text = run("sanctions", *common)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(text)))
    assert (rows[0]["institution_code"], rows[0]["staff"], rows[0]["suspended"]) == (
        HOSPITAL,
        "3",
        "2",
    )
    code, text = run("sanctions", "--redis-url", redis_url, "--prefix", prefix)
    assert "+ 1 changes" in text.splitlines()[-1]


def test_bad_usage_names_the_problem(redis_url: str, prefix: str) -> None:
    common = ("--redis-url", redis_url, "--prefix", prefix)
    assert run("overrides", *common, "--since", "yesterday")[0] == 2
    assert run("overrides", *common, "--since", "2026-01-02", "--until", "2026-01-01")[0] == 2
    assert run("sanctions", *common, "--date", "2026-13-01")[0] == 2
    assert parse_moment("2026-11-25").isoformat() == "2026-11-25T00:00:00+08:00"


def test_the_cli_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.ops", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    assert "overrides" in proc.stdout and "sanctions" in proc.stdout


def test_overrides_escape_client_text_and_keep_numbers(redis_url: str, prefix: str) -> None:
    """A claim id with terminal escapes or a spreadsheet formula is shown inert;
    decided_at is an ISO CST time like written_at; jsonl numbers stay numbers."""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        audit = OverrideAudit(client, Keys(prefix).overrides)
        holder = IndexHolder()
        holder.swap(build_index(PEOPLE))
        servicer = EligibilityServicer(holder, Policy(), max_lines_per_claim=10, overrides=audit)
        servicer.check_claim(
            hospital_claim(
                "\x1b[2J\x1b]0;pwned\x07",
                line(SUSPENDED, '=HYPERLINK("http://x")', 7, emergency=True),
            )
        )
        await audit.flush()
        await client.aclose()

    asyncio.run(scenario())
    common = ("--redis-url", redis_url, "--prefix", prefix)
    code, text = run("overrides", *common)
    assert code == 0 and "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J" in text
    code, text = run("overrides", *common, "--format", "csv")
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["line_id"] == '\'=HYPERLINK("http://x")'
    assert row["claim_id"] == "\\x1b[2J\\x1b]0;pwned\\x07"
    assert row["decided_at"].endswith("+08:00") and row["written_at"].endswith("+08:00")
    code, text = run("overrides", *common, "--format", "jsonl")
    record = orjson.loads(text.splitlines()[0])
    assert record["amount_fen"] == 7 and isinstance(record["index_version"], int)
    assert isinstance(record["service_date"], int) and record["delivered"] is True
    assert record["claim_id"] == "\x1b[2J\x1b]0;pwned\x07"  # JSON escapes it itself


def test_overrides_verify_exits_non_zero_on_a_broken_chain(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    from gateway.ops.spool import Spool

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        audit = OverrideAudit(client, Keys(prefix).overrides, spool=Spool(tmp_path))
        holder = IndexHolder()
        holder.swap(build_index(PEOPLE))
        servicer = EligibilityServicer(holder, Policy(), max_lines_per_claim=10, overrides=audit)
        for i in range(3):
            response = servicer.check_claim(
                hospital_claim(f"V-{i}", line(SUSPENDED, "1", emergency=True))
            )
            assert response.lines[0].decision == pb.DECISION_PAY_EMERGENCY_OVERRIDE
        assert audit.committer is not None
        audit.committer.close()  # everything submitted is on disk
        await audit.flush()
        audit.close()
        await client.aclose()

    asyncio.run(scenario())
    common = ("--redis-url", redis_url, "--prefix", prefix)
    code, text = run("overrides", *common, "--verify")
    assert code == 0 and text.splitlines()[-1] == "1 chains intact"
    client = redis.Redis.from_url(redis_url)
    try:
        client.xtrim(Keys(prefix).overrides, maxlen=0)
    finally:
        client.close()
    code, text = run("overrides", *common, "--verify")
    assert code == 3 and "missing-tail" in text
    code, text = run("overrides", *common, "--refill-from", str(tmp_path))
    assert code == 0 and text.startswith("3 entries written back")
    code, text = run("overrides", *common, "--verify")
    assert code == 0
