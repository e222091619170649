"""The loader CLI with a scoring ledger: statuses derived by the points engine
are published through the same atomic path and enforced by the index; bad
ledgers stop the load naming file, line and field; ``explain`` tells why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis

from contract.codes import encode_practitioner
from contract.days import iso_to_day
from contract.domain import Status
from contract.reads import read_current_version, read_snapshot
from contract.snapshot import Keys
from gateway.index import StatusIndex
from loader.cli import main

REGISTRY = """practitioner_code,institution_code,role,registered_on,deregistered_on
D110105000001,H11010500001,doctor,2015-03-01,
D110105000002,H11010500001,doctor,2015-03-01,
D110105000003,H11010500001,doctor,2015-03-01,
"""
STATUS = """practitioner_code,status,effective_from,effective_until,reference
D110105000003,TERMINATED,2025-01-01,,R-1
"""
LEDGER_HEADER = (
    "event_id,practitioner_code,institution_code,kind,points,effective_on,"
    "suspension_months,reference\n"
)
LEDGER = LEDGER_HEADER + (
    "E1,D110105000001,H11010500001,SCORE,6,2025-03-10,,\n"
    "E2,D110105000001,H11010500002,SCORE,3,2025-04-15,2,\n"  # 9 points: 2 months
    "E3,D110105000002,H11010500001,SCORE,12,2025-05-01,,\n"  # 12 at once: TERMINATED
)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "registry.csv").write_text(REGISTRY)
    (tmp_path / "status.csv").write_text(STATUS)
    (tmp_path / "ledger.csv").write_text(LEDGER)
    return tmp_path


def load(files: Path, url: str, prefix: str, *extra: str) -> int:
    return main(
        [
            "load",
            "--registry", str(files / "registry.csv"),
            "--redis-url", url,
            "--prefix", prefix,
            *extra,
        ]
    )  # fmt: skip


def published_index(client: redis.Redis, prefix: str) -> StatusIndex:
    keys = Keys(prefix)
    version = read_current_version(client, keys)
    assert version is not None
    snapshot = read_snapshot(client, keys, version)
    assert snapshot is not None
    manifest, arrays = snapshot
    return StatusIndex(arrays, version, manifest.meta)


def status_on(index: StatusIndex, code: str, iso: str) -> Status:
    rows = index.rows(np.array([encode_practitioner(code)], dtype=np.int64))
    found = index.lookup(rows, np.array([iso_to_day(iso)], dtype=np.int64), -1)
    return Status(int(found.status[0]))


def test_ledger_statuses_are_published_with_the_feed(
    files: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    ledger, status = str(files / "ledger.csv"), str(files / "status.csv")
    assert load(files, redis_url, prefix, "--status", status, "--ledger", ledger) == 0
    index = published_index(redis_client, prefix)
    assert status_on(index, "D110105000001", "2025-03-10") == Status.WARNED
    assert status_on(index, "D110105000001", "2025-04-15") == Status.SUSPENDED
    assert status_on(index, "D110105000001", "2025-06-14") == Status.SUSPENDED
    assert status_on(index, "D110105000001", "2025-06-15") == Status.WARNED
    assert status_on(index, "D110105000002", "2025-05-01") == Status.TERMINATED
    assert status_on(index, "D110105000003", "2025-05-01") == Status.TERMINATED  # from the feed
    row = int(index.rows(np.array([encode_practitioner("D110105000001")], dtype=np.int64))[0])
    assert index.points_on(row, iso_to_day("2025-04-15")) == 9
    assert index.points_on(row, iso_to_day("2026-01-01")) == 0


def test_a_ledger_alone_is_enough(
    files: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    assert load(files, redis_url, prefix, "--ledger", str(files / "ledger.csv")) == 0
    index = published_index(redis_client, prefix)
    assert status_on(index, "D110105000003", "2025-05-01") == Status.ACTIVE


def test_the_jiangxi_policy_sets_its_own_lengths(
    files: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    ledger = files / "ledger.csv"
    assert load(files, redis_url, prefix, "--ledger", str(ledger), "--policy", "jiangxi") == 0
    index = published_index(redis_client, prefix)
    # Year total 9 -> 1 month under Jiangxi (the event's own "2" is not read).
    assert status_on(index, "D110105000001", "2025-05-14") == Status.SUSPENDED
    assert status_on(index, "D110105000001", "2025-05-15") == Status.WARNED


@pytest.mark.parametrize(
    ("ledger_rows", "status", "where"),
    [
        ("E9,D990105000001,H11010500001,SCORE,3,2025-03-10,,\n", None, "ledger.csv:2"),
        ("E9,D110105000001,H11010500001,SCORE,13,2025-03-10,,\n", None, "ledger.csv:2"),
        ("E9,D110105000001,H11010500001,SCORE,9,2025-03-10,,\n", None, "ledger.csv:2"),
        ("E9,D110105000003,H11010500001,SCORE,3,2025-03-10,,\n", "status.csv", "status.csv:2"),
    ],
    ids=["unknown-practitioner", "points-out-of-range", "no-suspension-months", "in-both"],
)
def test_bad_ledgers_stop_the_load_and_publish_nothing(
    files: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    ledger_rows: str,
    status: str | None,
    where: str,
) -> None:
    (files / "ledger.csv").write_text(LEDGER_HEADER + ledger_rows)
    extra = ["--ledger", str(files / "ledger.csv")]
    if status:
        extra += ["--status", str(files / status)]
    assert load(files, redis_url, prefix, *extra) == 2
    err = capsys.readouterr().err
    assert where in err
    assert "nothing published" in err
    assert read_current_version(redis_client, Keys(prefix)) is None


def test_explain_tells_which_events_made_which_status(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "explain",
            "--registry", str(files / "registry.csv"),
            "--ledger", str(files / "ledger.csv"),
            "D110105000001",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "E2" in out and "SUSPENDED" in out
    assert "2025-04-15" in out


def explain(files: Path, code: str) -> int:
    return main(
        [
            "explain",
            "--registry", str(files / "registry.csv"),
            "--ledger", str(files / "ledger.csv"),
            code,
        ]
    )  # fmt: skip


def test_explain_shows_each_days_settlement(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (files / "ledger.csv").write_text(
        LEDGER_HEADER + "E0,D110105000001,H11010500001,SCORE,3,2025-02-01,,\n"
        "E1,D110105000001,H11010500001,SCORE,6,2025-03-10,1,\n"
        "E2,D110105000001,,REPAIR,3,2025-03-10,,\n"
    )
    assert explain(files, "D110105000001") == 0
    out = capsys.readouterr().out
    assert "day settled: total 3 → 6 after REPAIR E2 and SCORE E1; no threshold crossed" in out
    assert "from 2025-03-10  WARNED" in out


def test_explain_exits_non_zero_when_it_reports_a_bar_error(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Terminated on 2025-05-01 (12 points at once: a 3-year bar), then
    # registered again in 2026, inside the bar.
    (files / "registry.csv").write_text(
        REGISTRY + "D110105000002,H11010500002,doctor,2026-01-05,\n"
    )
    assert explain(files, "D110105000002") == 2
    captured = capsys.readouterr()
    assert "ERROR: " in captured.out and "inside the re-registration bar" in captured.out
    assert captured.err.startswith("error: ")
    assert "registry.csv:5: field 'registered_on'" in captured.err
    # Without the refused record it explains and exits 0.
    (files / "registry.csv").write_text(REGISTRY)
    assert explain(files, "D110105000002") == 0


def test_no_new_suspension_is_not_refused_and_warns(
    files: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # After the served 2-month suspension (9 points), a SCORE to 10 without
    # suspension_months: the authority decided no new suspension.
    (files / "ledger.csv").write_text(
        LEDGER + "E4,D110105000001,H11010500001,SCORE,1,2025-08-01,,\n"
    )
    assert load(files, redis_url, prefix, "--ledger", str(files / "ledger.csv")) == 0
    index = published_index(redis_client, prefix)
    assert status_on(index, "D110105000001", "2025-08-01") == Status.WARNED
    assert "terminations closed 1 open registrations" in capsys.readouterr().out


def test_a_termination_closes_the_registrations_it_ends(
    files: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # D..002: terminated 2025-05-01 by 12 points at once; registered at a
    # second hospital after the 3-year bar. The first registration (open in
    # the registry) ends on the termination day.
    (files / "registry.csv").write_text(
        REGISTRY + "D110105000002,H11010500002,doctor,2028-05-01,\n"
    )
    assert load(files, redis_url, prefix, "--ledger", str(files / "ledger.csv")) == 0
    assert "terminations closed 1 open registrations" in capsys.readouterr().out
    index = published_index(redis_client, prefix)
    assert status_on(index, "D110105000002", "2028-05-01") == Status.ACTIVE
    keys = Keys(prefix)
    version = read_current_version(redis_client, keys)
    assert version is not None
    snapshot = read_snapshot(redis_client, keys, version)
    assert snapshot is not None
    manifest, arrays = snapshot
    assert manifest.meta["ledger"]["registrations_closed_by_terminations"] == 1
    row = int(np.searchsorted(arrays["prac_codes"], encode_practitioner("D110105000002")))
    lo, hi = int(arrays["reg_offsets"][row]), int(arrays["reg_offsets"][row + 1])
    assert arrays["reg_from"][lo:hi].tolist() == [
        iso_to_day("2015-03-01"),
        iso_to_day("2028-05-01"),
    ]
    assert arrays["reg_until"][lo:hi].tolist() == [iso_to_day("2025-05-01"), 0xFFFF]
