"""The loader CLI end to end against the private redis-server: good loads publish,
bad files stop with file, line and field, and publish nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from contract.codes import encode_practitioner
from contract.reads import read_current_version, read_snapshot
from contract.snapshot import Keys
from gateway.ops.redis_process import RedisProcess, free_port
from loader.cli import main
from loader.sample import FIXED

REGISTRY_HEADER = "practitioner_code,institution_code,role,registered_on,deregistered_on"
STATUS_HEADER = "practitioner_code,status,effective_from,effective_until,reference"
REGISTRY = [
    "D110105000001,H11010500001,doctor,2015-03-01,",
    "D110105000002,H11010500001,doctor,2015-03-01,",
    "HY110105000003,P11010500001,principal,2018-01-01,",
]
STATUS = [
    "D110105000002,SUSPENDED,2025-03-01,2025-05-31,R-1",
    "HY110105000003,TERMINATED,2025-01-01,,R-2",
]


def write(path: Path, header: str, rows: list[str]) -> Path:
    """CSV, or JSON Lines if the name says so (empty values left out)."""
    if path.suffix == ".csv":
        path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        return path
    names = header.split(",")
    lines = [
        json.dumps({k: v for k, v in zip(names, row.split(","), strict=False) if v}) for row in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(tmp_path: Path, url: str, prefix: str, suffix: str = ".csv", **files: list[str]) -> int:
    registry = write(
        tmp_path / f"registry{suffix}", REGISTRY_HEADER, files.get("registry", REGISTRY)
    )
    status = write(tmp_path / f"status{suffix}", STATUS_HEADER, files.get("status", STATUS))
    argv = ["load", "--registry", str(registry), "--status", str(status)]
    return main([*argv, "--redis-url", url, "--prefix", prefix])


def versions(client: redis.Redis, prefix: str) -> set[bytes]:
    return set(client.scan_iter(match=f"{prefix}:snapshot:*"))


def test_load_publishes_and_status_reports(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert load(tmp_path, redis_url, prefix) == 0
    out = capsys.readouterr().out
    assert "registry: 3 records" in out
    assert "status feed: 2 records" in out
    assert "practitioners: 3" in out
    version = read_current_version(redis_client, Keys(prefix))
    assert version is not None
    assert f"published version {version}" in out

    snapshot = read_snapshot(redis_client, Keys(prefix))
    assert snapshot is not None
    manifest, arrays = snapshot
    assert arrays["prac_codes"].tolist() == sorted(
        encode_practitioner(c) for c in ("D110105000001", "D110105000002", "HY110105000003")
    )
    assert len(arrays["st_key"]) == 3  # suspension, its end, the termination
    assert manifest.meta["registry"]["records"] == 3

    assert main(["status", "--redis-url", redis_url, "--prefix", prefix]) == 0
    out = capsys.readouterr().out
    assert f"current version: {version}" in out
    assert "prac_codes: 3" in out

    assert load(tmp_path, redis_url, prefix) == 0
    assert read_current_version(redis_client, Keys(prefix)) == version + 1


def test_jsonl_inputs(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    assert load(tmp_path, redis_url, prefix, suffix=".jsonl") == 0
    assert read_current_version(redis_client, Keys(prefix)) is not None


def test_dry_run_publishes_nothing(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = write(tmp_path / "registry.csv", REGISTRY_HEADER, REGISTRY)
    status = write(tmp_path / "status.csv", STATUS_HEADER, STATUS)
    argv = ["load", "--registry", str(registry), "--status", str(status), "--dry-run"]
    assert main([*argv, "--redis-url", redis_url, "--prefix", prefix]) == 0
    assert "dry run" in capsys.readouterr().out
    assert versions(redis_client, prefix) == set()
    assert main([*argv[:-1], "--dry-run"]) == 0  # no Redis needed at all


def test_environment_gives_redis_and_prefix(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ELIG_REDIS_URL", redis_url)
    monkeypatch.setenv("ELIG_PREFIX", prefix)
    registry = write(tmp_path / "registry.csv", REGISTRY_HEADER, REGISTRY)
    status = write(tmp_path / "status.csv", STATUS_HEADER, STATUS)
    assert main(["load", "--registry", str(registry), "--status", str(status)]) == 0
    assert read_current_version(redis_client, Keys(prefix)) is not None
    assert main(["status"]) == 0


def test_sample_then_load(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    assert (
        main(["sample", "--out", str(tmp_path), "--practitioners", "300", "--format", "jsonl"]) == 0
    )
    argv = [
        "load",
        "--registry",
        str(tmp_path / "registry.jsonl"),
        "--status",
        str(tmp_path / "status.jsonl"),
    ]
    assert main([*argv, "--redis-url", redis_url, "--prefix", prefix]) == 0
    snapshot = read_snapshot(redis_client, Keys(prefix))
    assert snapshot is not None
    assert encode_practitioner(FIXED.suspended_doctor) in set(snapshot[1]["prac_codes"].tolist())


BAD_INPUTS = [
    # (which file, rows, line in the CSV, field)
    (
        "registry",
        [REGISTRY[0], "D11010500000,H11010500001,doctor,2015-03-01,"],
        3,
        "practitioner_code",
    ),
    (
        "registry",
        [REGISTRY[0], "D110105000002,H11010500001,doctor,2025-02-30,"],
        3,
        "registered_on",
    ),
    (
        "registry",
        [*REGISTRY, "D110105000004,H11010500001,doctor,2025-02-01,2025-01-31"],
        5,
        "deregistered_on",
    ),
    ("status", [STATUS[0], "D110105000001,SUSPENDED,2025-02-30,2025-03-31,R"], 3, "effective_from"),
    ("status", [STATUS[0], "D110105000009,TERMINATED,2025-01-01,,R"], 3, "practitioner_code"),
    ("status", [*STATUS, "D110105000002,TERMINATED,2025-03-01,,R-3"], 4, "effective_from"),
    ("status", [STATUS[1], "D110105000002,SUSPENDED,2025-03-01,,R"], 3, "effective_until"),
]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize(("which", "rows", "line", "field"), BAD_INPUTS)
def test_bad_input_stops_with_line_and_publishes_nothing(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    suffix: str,
    which: str,
    rows: list[str],
    line: int,
    field: str,
) -> None:
    keys = Keys(prefix)
    assert load(tmp_path, redis_url, prefix) == 0
    before = read_current_version(redis_client, keys)
    keys_before = versions(redis_client, prefix)
    capsys.readouterr()

    assert load(tmp_path, redis_url, prefix, suffix=suffix, **{which: rows}) == 2
    err = capsys.readouterr().err
    file_line = line if suffix == ".csv" else line - 1  # JSON Lines has no header
    assert f"{which}{suffix}:{file_line}: field {field!r}" in err
    assert "nothing published" in err
    assert read_current_version(redis_client, keys) == before
    assert versions(redis_client, prefix) == keys_before


GOOD_JSONL = (
    b'{"practitioner_code": "D110105000001", "institution_code": "H11010500001", '
    b'"role": "doctor", "registered_on": "2015-03-01"}\n'
)


@pytest.mark.parametrize(
    ("name", "content", "line", "field"),
    [
        (  # missing column
            "registry.csv",
            b"practitioner_code,role,registered_on\nD110105000001,doctor,2015-03-01\n",
            1,
            "institution_code",
        ),
        (  # ragged row
            "registry.csv",
            (REGISTRY_HEADER + "\n" + REGISTRY[0] + "\nD110105000002,H11010500001\n").encode(),
            3,
            "",
        ),
        (  # invalid UTF-8
            "registry.csv",
            (REGISTRY_HEADER + "\n" + REGISTRY[0] + "\n").encode()
            + b"D110105000002,H11010500001,\xff,2015-03-01,\n",
            3,
            "",
        ),
        (  # missing column
            "status.csv",
            b"practitioner_code,status,effective_from\nD110105000001,ACTIVE,2025-01-01\n",
            1,
            "reference",
        ),
        (  # a record without a required field
            "registry.jsonl",
            GOOD_JSONL + b'\n{"practitioner_code": "D110105000002", "role": "doctor", '
            b'"registered_on": "2015-03-01"}\n',
            3,
            "institution_code",
        ),
        ("registry.jsonl", GOOD_JSONL + b'{"practitioner_code": "D1\n', 2, ""),  # malformed
        ("registry.jsonl", GOOD_JSONL + GOOD_JSONL.replace(b"doctor", b"\xe5\x8c"), 2, ""),
    ],
)
def test_broken_files_stop_with_line_and_publish_nothing(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    line: int,
    field: str,
) -> None:
    keys = Keys(prefix)
    assert load(tmp_path, redis_url, prefix) == 0
    before = read_current_version(redis_client, keys)
    keys_before = versions(redis_client, prefix)
    capsys.readouterr()
    (tmp_path / name).write_bytes(content)
    files = {"registry": tmp_path / "registry.csv", "status": tmp_path / "status.csv"}
    files[name.split(".")[0]] = tmp_path / name
    argv = ["load", "--registry", str(files["registry"]), "--status", str(files["status"])]
    assert main([*argv, "--redis-url", redis_url, "--prefix", prefix]) == 2
    err = capsys.readouterr().err
    assert f"{name}:{line}: field {field!r}" in err
    assert read_current_version(redis_client, keys) == before
    assert versions(redis_client, prefix) == keys_before


def test_unreachable_redis_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert load(tmp_path, url, "elig-test") == 1
    assert "Redis" in capsys.readouterr().err


def test_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ELIG_REDIS_URL", raising=False)
    registry = write(tmp_path / "registry.csv", REGISTRY_HEADER, REGISTRY)
    status = write(tmp_path / "status.csv", STATUS_HEADER, STATUS)
    assert main(["load", "--registry", str(registry), "--status", str(status)]) == 2
    assert "ELIG_REDIS_URL" in capsys.readouterr().err
    assert main(["load", "--registry", str(registry), "--dry-run"]) == 2
    assert "--status" in capsys.readouterr().err
    with pytest.raises(SystemExit) as excinfo:
        main([])
    assert excinfo.value.code == 2


def test_status_when_nothing_published(
    redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--redis-url", redis_url, "--prefix", prefix]) == 1
    assert "no snapshot" in capsys.readouterr().out


def test_python_dash_m_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loader", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0
    for command in ("load", "sample", "status"):
        assert command in done.stdout


def test_prac_codes_are_sorted_in_published_snapshot(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    rows = [*reversed(REGISTRY)]
    assert load(tmp_path, redis_url, prefix, registry=rows) == 0
    snapshot = read_snapshot(redis_client, Keys(prefix))
    assert snapshot is not None
    codes = snapshot[1]["prac_codes"]
    assert np.all(codes[1:] > codes[:-1])


LEDGER = (
    "event_id,practitioner_code,institution_code,kind,points,effective_on,"
    "suspension_months,reference\n"
    "E1,D110105000001,H11010500001,SCORE,6,2025-03-10,,\n"
)


def explain(tmp_path: Path, code: str) -> int:
    registry = write(tmp_path / "registry.csv", REGISTRY_HEADER, REGISTRY)
    (tmp_path / "ledger.csv").write_text(LEDGER)
    argv = ["--registry", str(registry), "--ledger", str(tmp_path / "ledger.csv"), code]
    return main(["explain", *argv])


def test_explain_of_a_practitioner_not_in_the_registry_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert explain(tmp_path, "D110105999999") == 1
    out = capsys.readouterr().out
    assert "D110105999999 is not registered in" in out
    assert "NOT_REGISTERED" in out
    assert "ACTIVE" not in out
    # A registered one with no events is ACTIVE throughout, as before.
    assert explain(tmp_path, "D110105000002") == 0
    assert "ACTIVE throughout" in capsys.readouterr().out


def test_change_reports_an_unreachable_redis_before_reading_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The files are missing: read first, they would exit 2 naming them.
    argv = ["--registry", str(tmp_path / "absent.csv"), "--status", str(tmp_path / "none.csv")]
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["change", *argv, "--redis-url", url, "--prefix", "elig-test"]) == 1
    err = capsys.readouterr().err
    assert "Redis" in err and "absent.csv" not in err
    # --dry-run needs no Redis: it reads the files, and says they are missing.
    assert main(["change", *argv, "--dry-run", "--redis-url", url]) == 2
    assert f"cannot read {tmp_path / 'absent.csv'}" in capsys.readouterr().err


def test_change_with_nothing_published_says_so_before_reading_the_files(
    tmp_path: Path, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--registry", str(tmp_path / "absent.csv"), "--status", str(tmp_path / "none.csv")]
    assert main(["change", *argv, "--redis-url", redis_url, "--prefix", prefix]) == 1
    err = capsys.readouterr().err
    assert f"no snapshot is published under prefix {prefix!r}" in err


# -- Sentinel and replicas ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("redis_args", "named"),
    [
        (["--redis-sentinel", "127.0.0.1:26379"], "--redis-master-name"),
        (
            ["--redis-url", "redis://127.0.0.1:6390/0", "--redis-sentinel", "127.0.0.1:1"],
            "not both",
        ),
        (["--redis-sentinel", "127.0.0.1:x", "--redis-master-name", "elig"], "not a TCP port"),
        (["--redis-master-name", "elig"], "only used with --redis-sentinel"),
    ],
)
def test_redis_settings_that_cannot_work_exit_2_naming_the_flag(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_args: list[str],
    named: str,
) -> None:
    for name in ("ELIG_REDIS_URL", "ELIG_REDIS_SENTINEL", "ELIG_REDIS_MASTER_NAME"):
        monkeypatch.delenv(name, raising=False)
    registry = write(tmp_path / "registry.csv", REGISTRY_HEADER, REGISTRY)
    status = write(tmp_path / "status.csv", STATUS_HEADER, STATUS)
    argv = ["load", "--registry", str(registry), "--status", str(status)]
    assert main([*argv, *redis_args]) == 2
    assert named in capsys.readouterr().err
    assert main(["status", *redis_args]) == 2


def test_the_environment_gives_the_sentinels(monkeypatch: pytest.MonkeyPatch) -> None:
    from loader.cli import build_parser

    monkeypatch.setenv("ELIG_REDIS_SENTINEL", "10.0.0.1:26379,10.0.0.2:26379")
    monkeypatch.setenv("ELIG_REDIS_MASTER_NAME", "elig")
    args = build_parser().parse_args(["status"])
    assert (args.redis_sentinel, args.redis_master_name) == (
        "10.0.0.1:26379,10.0.0.2:26379",
        "elig",
    )
    args = build_parser().parse_args(["load", "--registry", "r.csv", "--wait-replicas", "2"])
    assert (args.wait_replicas, args.wait_timeout_ms) == (2, 2000)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["load", "--registry", "r.csv", "--wait-timeout-ms", "0"])


def test_a_publication_no_replica_confirmed_exits_3_saying_it_is_published(
    tmp_path: Path, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with RedisProcess() as primary, RedisProcess() as replica:
        client = redis.Redis.from_url(primary.url)
        client.config_set("repl-diskless-sync-delay", 0)
        client.set("x", "1")
        replica_client = redis.Redis.from_url(replica.url)
        replica_client.replicaof("127.0.0.1", primary.port)
        replica_client.close()
        while int(client.execute_command("WAIT", 1, 1000)) < 1:  # type: ignore[no-untyped-call]
            pass
        assert load(tmp_path, primary.url, prefix) == 0
        assert "replicas: 1 of 1 acknowledged" in capsys.readouterr().out
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGSTOP)  # online, acknowledging nothing
        try:
            registry = write(tmp_path / "registry.csv", REGISTRY_HEADER, REGISTRY)
            status = write(tmp_path / "status.csv", STATUS_HEADER, STATUS)
            argv = ["load", "--registry", str(registry), "--status", str(status)]
            url = ["--redis-url", primary.url, "--prefix", prefix]
            assert main([*argv, *url, "--wait-timeout-ms", "200"]) == 3
            out, err = capsys.readouterr()
            assert "published version 2" in out
            assert "published on the primary" in err and "may not survive a failover" in err
            assert read_current_version(client, Keys(prefix)) == 2  # it is published
            assert main([*argv, *url, "--wait-replicas", "0"]) == 0  # asked for none
        finally:
            replica.proc.send_signal(signal.SIGCONT)
            client.close()
