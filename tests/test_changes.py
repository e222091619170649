"""loader.changes and ``python -m loader change`` against the private redis-server:
changes land atomically in the stream and the overlay hash, on top of the
current snapshot only, and a bad change file publishes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest
import redis

from contract.changes import decode_arrays, index_version
from contract.codes import encode_practitioner
from contract.days import iso_to_day
from contract.domain import Status
from contract.errors import ChangeNotPublishedError
from contract.snapshot import Keys
from loader.changes import publish_change
from loader.cli import main
from loader.publish import publish_snapshot
from tests.factory import Person, build_arrays

HOSPITAL = "H11010500001"
A, B = "D110105000001", "D110105000002"
Entries = list[tuple[bytes, dict[bytes, bytes]]]


def snapshot(client: redis.Redis, keys: Keys) -> int:
    people = [
        Person(A, [(HOSPITAL, "2020-01-01", None)]),
        Person(B, [(HOSPITAL, "2020-01-01", None)]),
    ]
    return publish_snapshot(client, keys, build_arrays(people)).version


def suspension(code: str, start: str = "2025-02-01") -> Person:
    return Person(code, [(HOSPITAL, "2020-01-01", None)], [(start, Status.SUSPENDED, "2025-04-30")])


def stream(client: redis.Redis, keys: Keys) -> Entries:
    return cast(Entries, client.xrange(keys.changes))


def overlay(client: redis.Redis, keys: Keys, version: int) -> dict[bytes, bytes]:
    return cast(dict[bytes, bytes], client.hgetall(keys.overlay(version)))


def test_changes_are_numbered_and_merged_into_the_overlay(
    redis_client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    v1 = snapshot(redis_client, keys)
    marker_id, marker = stream(redis_client, keys)[0]
    assert marker == {b"kind": b"snapshot", b"version": str(v1).encode()}
    assert overlay(redis_client, keys, v1) == {b"seq": b"0", b"id": marker_id}

    first = publish_change(redis_client, keys, build_arrays([suspension(A)]))
    second = publish_change(redis_client, keys, build_arrays([suspension(B, "2025-03-01")]))
    assert (first.base, first.seq, second.seq) == (v1, 1, 2)
    assert second.index_version == index_version(v1, 2)

    entries = stream(redis_client, keys)
    assert [e[1][b"kind"] for e in entries] == [b"snapshot", b"change", b"change"]
    assert [int(e[1][b"seq"]) for e in entries[1:]] == [1, 2]
    assert {int(e[1][b"base"]) for e in entries[1:]} == {v1}
    assert entries[2][0].decode() == second.stream_id
    change = decode_arrays(entries[1][1], "entry")
    assert change["prac_codes"].tolist() == [encode_practitioner(A)]

    state = overlay(redis_client, keys, v1)
    assert (state[b"seq"], state[b"id"].decode()) == (b"2", second.stream_id)
    merged = decode_arrays(state, "overlay")
    assert merged["prac_codes"].tolist() == sorted([encode_practitioner(A), encode_practitioner(B)])
    assert merged["st_status"].tolist().count(Status.SUSPENDED) == 2

    # A newer record of A replaces the older one, B stays.
    publish_change(redis_client, keys, build_arrays([Person(A, [(HOSPITAL, "2020-01-01", None)])]))
    merged = decode_arrays(overlay(redis_client, keys, v1), "overlay")
    assert len(merged["prac_codes"]) == 2
    assert len(merged["st_key"]) == 1  # B's suspension; A has none now


def test_a_new_snapshot_supersedes_the_changes_and_trims_the_stream(
    redis_client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    v1 = snapshot(redis_client, keys)
    publish_change(redis_client, keys, build_arrays([suspension(A)]))
    v2 = snapshot(redis_client, keys)
    entries = stream(redis_client, keys)
    assert [e[1] for e in entries] == [{b"kind": b"snapshot", b"version": str(v2).encode()}]
    assert overlay(redis_client, keys, v2)[b"seq"] == b"0"
    assert overlay(redis_client, keys, v1)[b"seq"] == b"1"  # kept with v1 (previous)
    result = publish_change(redis_client, keys, build_arrays([suspension(B)]))
    assert (result.base, result.seq) == (v2, 1)
    v3 = snapshot(redis_client, keys)
    snapshot(redis_client, keys)
    assert overlay(redis_client, keys, v1) == {}  # garbage-collected with its version
    assert v3 > v2


def test_refused_changes_write_nothing(redis_client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    change = build_arrays([suspension(A)])
    with pytest.raises(ChangeNotPublishedError, match="no snapshot is published"):
        publish_change(redis_client, keys, change)
    assert stream(redis_client, keys) == []
    v1 = snapshot(redis_client, keys)
    with pytest.raises(ChangeNotPublishedError, match=f"built for snapshot {v1 + 5}"):
        publish_change(redis_client, keys, change, expect_snapshot=v1 + 5)
    assert len(stream(redis_client, keys)) == 1
    assert overlay(redis_client, keys, v1)[b"seq"] == b"0"
    assert publish_change(redis_client, keys, change, expect_snapshot=v1).seq == 1


def test_the_stream_is_bounded(redis_client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    snapshot(redis_client, keys)
    for _ in range(300):
        publish_change(redis_client, keys, build_arrays([suspension(A)]), stream_max_entries=10)
    # MAXLEN ~ trims whole nodes (100 entries by default): bounded, not exact.
    assert redis_client.xlen(keys.changes) <= 200
    current = int(cast(bytes, redis_client.get(keys.current)))
    assert overlay(redis_client, keys, current)[b"seq"] == b"300"


REGISTRY_HEADER = "practitioner_code,institution_code,role,registered_on,deregistered_on"
STATUS_HEADER = "practitioner_code,status,effective_from,effective_until,reference"
LEDGER_HEADER = (
    "event_id,practitioner_code,institution_code,kind,points,effective_on,suspension_months,"
    "reference"
)


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_the_change_command_publishes_a_suspension_and_a_revoke(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = Keys(prefix)
    v1 = snapshot(redis_client, keys)
    registry = write(
        tmp_path / "registry.csv", REGISTRY_HEADER, [f"{A},{HOSPITAL},doctor,2020-01-01,"]
    )
    status = write(
        tmp_path / "status.csv", STATUS_HEADER, [f"{A},SUSPENDED,2025-02-01,2025-04-30,R-9"]
    )
    argv = ["--redis-url", redis_url, "--prefix", prefix]
    assert main(["change", "--registry", str(registry), "--status", str(status), *argv]) == 0
    out = capsys.readouterr().out
    assert f"change: 1 practitioners: {A}" in out
    assert (
        f"published change 1 on top of snapshot {v1} (index_version {index_version(v1, 1)}" in out
    )
    assert main(["status", *argv]) == 0
    status_out = capsys.readouterr().out
    assert f"live changes on top: 1 (index_version {index_version(v1, 1)})" in status_out

    # The ledger way: a 9-point event suspends, then its REVOKE (an appeal upheld) undoes it.
    ledger_rows = [f"E1,{B},{HOSPITAL},SCORE,9,2025-02-01,3,"]
    registry_b = write(tmp_path / "rb.csv", REGISTRY_HEADER, [f"{B},{HOSPITAL},doctor,2020-01-01,"])
    ledger = write(tmp_path / "ledger.csv", LEDGER_HEADER, ledger_rows)
    assert main(["change", "--registry", str(registry_b), "--ledger", str(ledger), *argv]) == 0
    merged = decode_arrays(overlay(redis_client, keys, v1), "overlay")
    assert Status.SUSPENDED in merged["st_status"].tolist()
    write(
        tmp_path / "ledger.csv",
        LEDGER_HEADER,
        [*ledger_rows, f"E2,{B},{HOSPITAL},REVOKE,0,2025-03-01,,E1"],
    )
    assert main(["change", "--registry", str(registry_b), "--ledger", str(ledger), *argv]) == 0
    merged = decode_arrays(overlay(redis_client, keys, v1), "overlay")
    b_row = merged["prac_codes"].tolist().index(encode_practitioner(B))
    b_points = merged["st_key"] >> np.uint64(16) == b_row
    assert not b_points.any()  # B is ACTIVE again: no status change point left
    assert int(overlay(redis_client, keys, v1)[b"seq"]) == 3
    assert iso_to_day("2025-02-01") in (merged["st_key"] & np.uint64(0xFFFF)).tolist()


def test_a_bad_change_file_names_file_line_and_field_and_publishes_nothing(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = Keys(prefix)
    v1 = snapshot(redis_client, keys)
    registry = write(
        tmp_path / "registry.csv", REGISTRY_HEADER, [f"{A},{HOSPITAL},doctor,2020-01-01,"]
    )
    status = write(
        tmp_path / "status.csv",
        STATUS_HEADER,
        [f"{A},SUSPENDED,2025-02-01,2025-04-30,R-1", f"{A},SUSPENDED,2025-13-01,,R-2"],
    )
    argv = ["--redis-url", redis_url, "--prefix", prefix]
    assert main(["change", "--registry", str(registry), "--status", str(status), *argv]) == 2
    err = capsys.readouterr().err
    assert f"{status}:3" in err
    assert "effective_from" in err
    assert "nothing published" in err
    assert len(stream(redis_client, keys)) == 1
    assert overlay(redis_client, keys, v1)[b"seq"] == b"0"
    assert main(["change", "--registry", str(registry), *argv]) == 2
    assert "give --status, --ledger or both" in capsys.readouterr().err
