"""Hostile loader input: truncated files (cut anywhere, also inside a UTF-8
sequence), wrong encodings, duplicate and conflicting rows, dates out of
range and events for unknown practitioners, for the registry, the status
feed, the scoring ledger and the change files.

Each bad input goes through the real CLI (``loader.cli.main``, ``load``
and ``change``) against the session's private redis-server, under a prefix
that already holds a published snapshot with one live change. Each must be
refused with exit code 2 and ``file:line: field 'x': reason`` naming the
right file and line, and nothing may be published: the current version, the
change stream and the overlay are compared before and after.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contract.days import DateError, iso_to_day
from contract.snapshot import Keys
from loader.cli import EXIT_BAD_INPUT, EXIT_OK
from loader.cli import main as loader_main

REGISTRY = "practitioner_code,institution_code,role,deregistered_on,registered_on"
STATUS = "reference,practitioner_code,status,effective_until,effective_from"
LEDGER = (
    "event_id,practitioner_code,institution_code,kind,points,suspension_months,reference,"
    "effective_on"
)
HOSPITAL = "H11010500001"
DOCTORS = [f"D1101050001{i:02d}" for i in range(8)]
ERROR = re.compile(r"^error: (?P<file>.+?):(?P<line>\d+): field '(?P<field>[^']*)': (?P<why>.+)")

# Rows chosen so that the LAST field of every record is a date: a record cut
# anywhere but at its end is malformed. Multi-byte UTF-8 text (roles,
# references) lets cuts fall inside a character.
REGISTRY_ROWS = [
    f"{code},{HOSPITAL},医生 doctor,,2015-0{1 + i % 9}-1{i % 10}" for i, code in enumerate(DOCTORS)
]
STATUS_ROWS = [
    f"决定书-{i},{code},SUSPENDED,2027-0{1 + i % 9}-2{i % 9},2026-0{1 + i % 9}-0{1 + i % 9}"
    for i, code in enumerate(DOCTORS[:5])
]
LEDGER_ROWS = [
    f"E{i},{code},{HOSPITAL},SCORE,{1 + i % 3},,记分-{i},2026-0{1 + i % 9}-1{i % 10}"
    for i, code in enumerate(DOCTORS)
]
FILES = {"registry": (REGISTRY, REGISTRY_ROWS), "status": (STATUS, STATUS_ROWS),
         "ledger": (LEDGER, LEDGER_ROWS)}  # fmt: skip
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Published:
    url: str
    prefix: str
    directory: Path

    def state(self) -> tuple[object, ...]:
        """What a gateway could see: current version, stream and overlay."""
        client = redis.Redis.from_url(self.url)
        keys = Keys(self.prefix)
        try:
            current = client.get(keys.current)
            version = int(current) if current is not None else 0
            return (
                current,
                client.xlen(keys.changes),
                client.xrevrange(keys.changes, count=1),
                client.hget(keys.overlay(version), "seq"),
                client.hget(keys.overlay(version), "id"),
            )
        finally:
            client.close()


def csv_text(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows]) + "\n"


def run(published: Published, *argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = loader_main([*argv, "--redis-url", published.url, "--prefix", published.prefix])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def published(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    directory = tmp_path_factory.mktemp("fuzz-loader")
    target = Published(redis_url, "fuzz-loader", directory)
    registry = directory / "registry.csv"
    registry.write_text(csv_text(REGISTRY, REGISTRY_ROWS), encoding="utf-8")
    status = directory / "status.csv"
    status.write_text(csv_text(STATUS, STATUS_ROWS), encoding="utf-8")
    assert run(target, "load", "--registry", str(registry), "--status", str(status))[0] == EXIT_OK
    change_registry = directory / "change-registry.csv"
    change_registry.write_text(csv_text(REGISTRY, REGISTRY_ROWS[:1]), encoding="utf-8")
    change_status = directory / "change-status.csv"
    change_status.write_text(csv_text(STATUS, []), encoding="utf-8")
    changed = run(
        target, "change", "--registry", str(change_registry), "--status", str(change_status)
    )
    assert changed[0] == EXIT_OK, changed[1]
    yield target


def assert_refused(
    published: Published, argv: list[str], file: Path, line: int | None, field: str | None
) -> re.Match[str]:
    """Both ``load`` and ``change`` refuse, naming the file (and line, field);
    nothing is published."""
    before = published.state()
    matches = []
    for command in ("load", "change"):
        code, err = run(published, command, *argv)
        assert code == EXIT_BAD_INPUT, (command, err)
        match = ERROR.match(err)
        assert match is not None, err
        matches.append(match)
        assert match["file"] == str(file), err
        if line is not None:
            assert int(match["line"]) == line, err
        if field is not None:
            assert match["field"] == field, err
        assert err.rstrip().endswith("nothing published"), err
        assert published.state() == before
    return matches[0]


def files_for(
    published: Published, bad: str, data: bytes, fmt: str = "csv"
) -> tuple[list[str], Path]:
    """Loader arguments with the ``bad`` input replaced by ``data``, the others valid."""
    directory = published.directory
    path = directory / f"bad-{bad}.{fmt}"
    path.write_bytes(data)
    registry = directory / "ok-registry.csv"
    registry.write_text(csv_text(REGISTRY, REGISTRY_ROWS), encoding="utf-8")
    argv = ["--registry", str(path if bad == "registry" else registry)]
    if bad == "ledger":
        argv += ["--ledger", str(path)]
    else:
        status = directory / "ok-status.csv"
        status.write_text(csv_text(STATUS, STATUS_ROWS), encoding="utf-8")
        argv += ["--status", str(path if bad == "status" else status)]
    return argv, path


def jsonl_text(header: str, rows: list[str]) -> str:
    names = header.split(",")
    out = []
    for row in rows:
        fields = [f'"{n}": "{v}"' for n, v in zip(names, row.split(","), strict=True) if v]
        out.append("{" + ", ".join(fields) + "}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Truncation


@FUZZ
@given(which=st.sampled_from(sorted(FILES)), fmt=st.sampled_from(["csv", "jsonl"]), data=st.data())
def test_a_file_cut_anywhere_is_refused_at_the_cut_line_or_is_whole_records(
    published: Published, which: str, fmt: str, data: st.DataObject
) -> None:
    header, rows = FILES[which]
    text = csv_text(header, rows) if fmt == "csv" else jsonl_text(header, rows)
    whole = text.encode("utf-8")
    # Half the time inside a multi-byte character (a continuation byte follows).
    inside = [i for i in range(1, len(whole)) if whole[i] & 0xC0 == 0x80]
    cut = data.draw(st.one_of(st.integers(0, len(whole) - 1), st.sampled_from(inside)), label="cut")
    truncated = whole[:cut]
    argv, path = files_for(published, which, truncated, fmt)
    at_boundary = cut == 0 or whole[cut - 1 : cut] == b"\n" or whole[cut : cut + 1] == b"\n"
    if at_boundary:
        # Whole records (or none): the file may be valid, or refused as a
        # whole (an empty registry, no header); either way precisely.
        event("cut at a record boundary")
        code, err = run(published, "load", *argv, "--dry-run")
        assert code in (EXIT_OK, EXIT_BAD_INPUT), err
        if code == EXIT_BAD_INPUT:
            assert ERROR.match(err), err
        return
    event(f"cut inside a record ({which}, {fmt})")
    cut_line = truncated.count(b"\n") + 1
    try:
        truncated.decode("utf-8")
    except UnicodeDecodeError:
        event("cut inside a UTF-8 sequence")
    assert_refused(published, argv, path, cut_line, None)


# ---------------------------------------------------------------------------
# Encodings


@pytest.mark.parametrize("which", sorted(FILES))
@pytest.mark.parametrize(
    ("encoding", "line"),
    [("utf-16", 1), ("utf-16-le", 1), ("utf-32", 1), ("gb18030", 2)],
)
def test_a_file_not_in_utf8_is_refused_at_the_first_bad_line(
    published: Published, which: str, encoding: str, line: int
) -> None:
    header, rows = FILES[which]
    data = csv_text(header, rows).encode(encoding)
    argv, path = files_for(published, which, data)
    match = assert_refused(published, argv, path, line, None)
    assert "UTF-8" in match["why"] or "column" in match["why"], match["why"]


@pytest.mark.parametrize("which", sorted(FILES))
def test_latin1_bytes_in_a_field_are_refused_naming_the_line_and_byte(
    published: Published, which: str
) -> None:
    header, rows = FILES[which]
    text = csv_text(header, rows)
    lines = text.encode("utf-8").split(b"\n")
    lines[3] = lines[3].replace(b",", b"\xe9,", 1)  # "é" in Latin-1 on line 4
    argv, path = files_for(published, which, b"\n".join(lines))
    match = assert_refused(published, argv, path, 4, None)
    assert "invalid UTF-8" in match["why"], match["why"]


# ---------------------------------------------------------------------------
# Duplicate and conflicting rows, unknown practitioners


def test_two_status_records_from_the_same_day_are_refused_naming_both_lines(
    published: Published,
) -> None:
    conflicting = STATUS_ROWS[0].replace("决定书-0", "决定书-X").replace("SUSPENDED", "TERMINATED")
    data = csv_text(STATUS, [*STATUS_ROWS, conflicting]).encode()
    argv, path = files_for(published, "status", data)
    match = assert_refused(published, argv, path, len(STATUS_ROWS) + 2, "effective_from")
    assert "lines 2 and" in match["why"], match["why"]


def test_a_duplicate_event_id_in_the_ledger_is_refused(published: Published) -> None:
    duplicate = LEDGER_ROWS[1].replace(",2026-", ",2025-")
    data = csv_text(LEDGER, [*LEDGER_ROWS, duplicate.replace("E1,", "E0,")]).encode()
    argv, path = files_for(published, "ledger", data)
    assert_refused(published, argv, path, len(LEDGER_ROWS) + 2, "event_id")


def test_an_empty_registration_period_is_refused(published: Published) -> None:
    bad = f"{DOCTORS[0]},{HOSPITAL},doctor,2015-01-01,2016-01-01"  # ends before it starts
    data = csv_text(REGISTRY, [*REGISTRY_ROWS, bad]).encode()
    argv, path = files_for(published, "registry", data)
    assert_refused(published, argv, path, len(REGISTRY_ROWS) + 2, "deregistered_on")


@pytest.mark.parametrize("which", ["status", "ledger"])
def test_events_for_a_practitioner_not_in_the_registry_are_refused(
    published: Published, which: str
) -> None:
    header, rows = FILES[which]
    unknown = rows[-1].replace(DOCTORS[len(rows) - 1], "D990105000001").replace("E7,", "E99,")
    data = csv_text(header, [*rows, unknown]).encode()
    argv, path = files_for(published, which, data)
    match = assert_refused(published, argv, path, len(rows) + 2, "practitioner_code")
    assert "D990105000001" in match["why"], match["why"]
    assert "not in the registry" in match["why"], match["why"]


# ---------------------------------------------------------------------------
# Dates

FIELDS_WITH_DATES = {"registry": "registered_on", "status": "effective_from",
                     "ledger": "effective_on"}  # fmt: skip
bad_dates = st.one_of(
    st.dates(max_value=dt.date(1969, 12, 31)).map(lambda d: d.isoformat()),
    st.dates(min_value=dt.date(2149, 6, 6)).map(lambda d: d.isoformat()),
    st.sampled_from(["2025-02-29", "2024-02-30", "2025-13-01", "2025-00-10", "2025-04-31"]),
    st.from_regex(r"\A[0-9]{8}\Z"),
    st.from_regex(r"\A[0-9]{1,4}/[0-9]{1,2}/[0-9]{1,2}\Z"),
    st.text(alphabet="0123456789-年月日 ", min_size=1, max_size=12),
).filter(lambda text: not _a_stored_date(text))


def _a_stored_date(text: str) -> bool:
    try:
        iso_to_day(text)
    except DateError:
        return False
    return True


@FUZZ
@given(which=st.sampled_from(sorted(FILES)), date=bad_dates, row=st.integers(0, 4))
def test_a_date_out_of_range_or_not_a_date_is_refused_naming_line_and_field(
    published: Published, which: str, date: str, row: int
) -> None:
    header, rows = FILES[which]
    fields = rows[row].split(",")
    fields[-1] = date  # the last column is the date named in FIELDS_WITH_DATES
    bad = [*rows[:row], ",".join(fields), *rows[row + 1 :]]
    argv, path = files_for(published, which, csv_text(header, bad).encode())
    match = assert_refused(published, argv, path, row + 2, FIELDS_WITH_DATES[which])
    event(re.sub(r"'[^']*'", "'…'", match["why"])[:60])
