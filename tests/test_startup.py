"""Start-up diagnosis (issue 13) of the real gateway (``python -m gateway``):
while it holds no index it says every few seconds why (Redis unreachable,
nothing published under its prefix, the current snapshot unusable), with the
URL's password masked, and never that it decides from stale data; a load
timeout (``--load-timeout-s`` or ``ELIG_LOAD_TIMEOUT_S``) ends it naming that
cause."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import numpy as np
import pytest
import redis

from contract.snapshot import Keys
from gateway.feed import masked_url
from gateway.ops.redis_process import free_port
from tests.gateway_process import ROOT, GatewayProcess
from tests.ops_data import publish

WAITING = "waiting for a snapshot under prefix"


def log_lines(process: GatewayProcess) -> list[dict[str, Any]]:
    """The gateway's JSON log lines so far (other output skipped)."""
    lines = []
    for raw in process.log_path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if isinstance(doc, dict) and "msg" in doc:
            lines.append(doc)
    return lines


def waiting_line(process: GatewayProcess, cause: str, within_s: float = 5.0) -> dict[str, Any]:
    """The first "waiting for a snapshot" line with ``cause``, logged within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for line in log_lines(process):
            if line["msg"].startswith(WAITING) and line.get("cause") == cause:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no {cause!r} waiting line within {within_s} s:\n{process.log()}")


def test_redis_unreachable_is_said_with_the_url_masked_and_nothing_called_stale(
    prefix: str,
) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://app:s3cret@127.0.0.1:{port}/0"
    with GatewayProcess(url, prefix).start(wait_serving=False) as process:
        line = waiting_line(process, "redis-unreachable")
        lines = log_lines(process)
    assert line["msg"].startswith(
        f"{WAITING} {prefix!r} at redis://app:***@127.0.0.1:{port}/0 ("
    ), line
    assert "Redis unreachable: ConnectionError" in line["msg"]
    assert all("s3cret" not in json.dumps(doc) for doc in lines)
    # It holds no index: nothing may say it decides from one.
    assert not [doc["msg"] for doc in lines if "stale" in doc["msg"]]


def test_nothing_published_under_the_prefix_names_the_prefixes_that_hold_snapshots(
    redis_url: str, prefix: str
) -> None:
    publish(redis_url, f"{prefix}-prod")  # what a mistyped --prefix missed
    with GatewayProcess(redis_url, prefix).start(wait_serving=False) as process:
        line = waiting_line(process, "nothing-published")
    assert f"{WAITING} {prefix!r} at {redis_url} (" in line["msg"]
    unset = f"{prefix}:snapshot:current is not set"
    assert f"nothing published under the prefix ({unset})" in line["msg"]
    # The most like ours first.
    assert f"prefixes that hold snapshots: '{prefix}-prod'" in line["msg"]


def test_an_unusable_current_snapshot_is_said_with_the_follower_error(
    redis_url: str, prefix: str
) -> None:
    version = publish(redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    try:  # random bytes of the right length over one array: its digest no longer matches
        chunk = Keys(prefix).chunk(version, "prac_codes", 0)
        raw = client.get(chunk)
        assert isinstance(raw, bytes)
        client.set(chunk, np.random.default_rng(7).integers(0, 256, len(raw), np.uint8).tobytes())
    finally:
        client.close()
    with GatewayProcess(redis_url, prefix).start(wait_serving=False) as process:
        line = waiting_line(process, "snapshot-unusable")
    assert "the current snapshot is unusable: SnapshotError:" in line["msg"]
    assert "digest" in line["msg"]


def run_until_exit(process: GatewayProcess, timeout_s: float = 60.0) -> tuple[int, str]:
    done = subprocess.run(
        process.args, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    return done.returncode, done.stdout + done.stderr


def test_the_load_timeout_flag_ends_the_gateway_naming_the_cause(prefix: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    code, output = run_until_exit(GatewayProcess(url, prefix, "--load-timeout-s", "2"))
    assert code == 1, output
    assert f"no snapshot loaded from prefix {prefix!r} at {url} within 2.0 s" in output
    assert "Redis unreachable" in output


def test_the_load_timeout_comes_from_elig_load_timeout_s_too(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ELIG_LOAD_TIMEOUT_S", "2")  # the child inherits it
    code, output = run_until_exit(GatewayProcess(redis_url, prefix))
    assert code == 1, output
    assert f"no snapshot loaded from prefix {prefix!r}" in output
    assert "nothing published under the prefix" in output


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@db:6379/0", "redis://:***@db:6379/0"),
        ("rediss://app:p%40ss@db.example:6380/2", "rediss://app:***@db.example:6380/2"),
        ("redis://app@db:6379/0", "redis://app@db:6379/0"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://127.0.0.1:7001/0", "redis://127.0.0.1:7001/0"),
    ],
)
def test_masked_url_hides_the_password_only(url: str, shown: str) -> None:
    assert masked_url(url) == shown
