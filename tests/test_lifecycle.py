"""The gateway's life as an operator sees it: ``--version`` on every command,
one port per gateway (a second one on a busy port exits with an error naming
it), the drain on SIGTERM, where the metrics listen, and logs that are JSON
only (issue 13, items 1 and 5)."""

from __future__ import annotations

import logging
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2

from contract.version import DISTRIBUTION, _pyproject_version, package_version
from gateway.ops.logs import configure_logging, quiet_grpc_core
from gateway.ops.redis_process import free_port
from gateway.server import check_port_free
from gateway.settings import Settings
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import ROOT, GatewayProcess
from tests.ops_data import ACTIVE, hospital_claim, line, publish, scrape

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _gateway_run(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A gateway run to its exit (one expected to fail at start)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--redis-url", redis_url, "--prefix", prefix,
         "--allow-unsigned", "--poll-interval-s", "0.2", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _json_lines(text: str) -> list[dict[str, object]]:
    """Every line of ``text`` as a JSON object; fails on any other line."""
    events = []
    for raw in text.splitlines():
        event = orjson.loads(raw)
        assert isinstance(event, dict), raw
        events.append(event)
    return events


def _events(gateway: GatewayProcess) -> list[dict[str, object]]:
    """The JSON log lines of a gateway process (its stdout says "serving" in words)."""
    lines = gateway.log_path.read_text().splitlines()
    return _json_lines("\n".join(raw for raw in lines if raw.startswith("{")))


def _claim_paid(address: str, claim_id: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        response = pb_grpc.EligibilityGatewayStub(channel).CheckClaim(
            hospital_claim(claim_id, line(ACTIVE, "1")), timeout=5
        )
    return response.lines[0].decision == pb.DECISION_PAY


@pytest.mark.parametrize("module", ["gateway", "loader", "gateway.ops"])
def test_every_command_prints_its_version(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}")


def test_the_version_falls_back_to_pyproject(tmp_path: Path) -> None:
    assert _pyproject_version(ROOT / "pyproject.toml") == package_version()
    assert _pyproject_version(tmp_path / "missing.toml") == "0+unknown"


def test_a_second_gateway_on_the_port_exits_naming_it_and_the_first_keeps_answering(
    redis_url: str, prefix: str
) -> None:
    publish(redis_url, prefix)
    with GatewayProcess(redis_url, prefix, "--drain-s", "0") as first:
        assert _claim_paid(first.address, "before")
        for host in ("127.0.0.1", "0.0.0.0"):
            second = _gateway_run(redis_url, prefix, "--host", host, "--port", str(first.port))
            assert second.returncode == 1, second.stderr
            assert f"port {first.port} on {host} is in use (another gateway?)" in second.stderr
            # gRPC core's own "Failed to add port" line is silenced: JSON only.
            events = _json_lines(second.stderr)
            assert events[-1]["msg"] == "gateway stopped"
        # The first gateway still holds the port alone and answers.
        for i in range(5):
            assert _claim_paid(first.address, f"after-{i}")
        assert first.proc is not None and first.proc.poll() is None


def test_a_busy_metrics_port_is_one_clear_error(redis_url: str, prefix: str) -> None:
    publish(redis_url, prefix)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        metrics_port = squatter.getsockname()[1]
        done = _gateway_run(redis_url, prefix, "--port", "0", "--metrics-port", str(metrics_port))
    assert done.returncode == 1, done.stderr
    assert f"metrics port {metrics_port} on 127.0.0.1 is in use (another gateway?)" in done.stderr
    _json_lines(done.stderr)


def test_check_port_free_names_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"^metrics port {port} on 127.0.0.1 is in use"):
            check_port_free("127.0.0.1", port, "metrics port")
    check_port_free("127.0.0.1", port)  # free again
    check_port_free("127.0.0.1", 0)  # any free port


def test_sigterm_drains_not_serving_while_claims_are_still_answered(
    redis_url: str, prefix: str
) -> None:
    publish(redis_url, prefix)
    drain_s = 4.0
    gateway = GatewayProcess(
        redis_url, prefix, "--drain-s", str(drain_s), "--shutdown-grace-s", "5"
    ).start()
    try:
        assert gateway.proc is not None
        listening = next(e for e in _events(gateway) if e["msg"] == "gateway listening")
        assert listening["version"] == package_version()
        signalled = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.wait_health(NOT_SERVING, timeout_s=drain_s)
        # A probe sees NOT_SERVING, and a claim (on a new connection) is still decided.
        assert _claim_paid(gateway.address, "during-drain")
        assert time.monotonic() - signalled < drain_s
        assert gateway.proc.poll() is None
        assert gateway.proc.wait(timeout=15) == 0
        assert time.monotonic() - signalled >= drain_s - 0.1
        assert any(str(e["msg"]).startswith("draining") for e in _events(gateway))
    finally:
        gateway.stop()


def test_a_second_signal_ends_the_drain(redis_url: str, prefix: str) -> None:
    publish(redis_url, prefix)
    gateway = GatewayProcess(redis_url, prefix, "--drain-s", "120").start()
    try:
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.wait_health(NOT_SERVING, timeout_s=5)
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(timeout=15) == 0
    finally:
        gateway.stop()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* spell them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


LOOPBACK_V4 = "0100007F"  # 127.0.0.1, little-endian hex
ANY_V4 = "00000000"


@pytest.mark.parametrize(
    ("flags", "addresses"),
    [((), {LOOPBACK_V4}), (("--metrics-host", "0.0.0.0"), {ANY_V4})],
    ids=["loopback-by-default", "all-when-asked"],
)
def test_metrics_listen_on_loopback_unless_asked(
    redis_url: str, prefix: str, flags: tuple[str, ...], addresses: set[str]
) -> None:
    publish(redis_url, prefix)
    metrics_port = free_port()
    # gRPC itself on every address: the metrics do not follow --host.
    args = ("--host", "0.0.0.0", "--metrics-port", str(metrics_port), "--drain-s", "0", *flags)
    with GatewayProcess(redis_url, prefix, *args):
        assert _listening_addresses(metrics_port) == addresses
        assert scrape(metrics_port)[("eligibility_build_info", _build_labels())] == 1


def _build_labels() -> frozenset[tuple[str, str]]:
    return frozenset(
        {
            ("version", package_version()),
            ("python", platform.python_version()),
            ("grpc", grpc.__version__),
        }
    )


def test_metrics_host_and_drain_have_their_environment_variables() -> None:
    settings = Settings.from_env({"ELIG_METRICS_HOST": "0.0.0.0", "ELIG_DRAIN_S": "2.5"})
    assert (settings.metrics_host, settings.drain_s) == ("0.0.0.0", 2.5)
    assert Settings().metrics_host == "127.0.0.1"
    with pytest.raises(ValueError, match="drain_s"):
        Settings(drain_s=-1).validated()


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


def test_grpc_python_loggers_reach_the_json_handler(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    stray = logging.StreamHandler(sys.stderr)  # as absl installs, plain text
    logging.getLogger("absl").addHandler(stray)
    configure_logging("INFO")
    logging.getLogger("grpc._cython.cygrpc").warning("from grpc")
    logging.getLogger("absl").warning("from absl")
    assert stray not in logging.getLogger("absl").handlers
    events = _json_lines(capsys.readouterr().err)
    assert [(e["logger"], e["msg"]) for e in events] == [
        ("grpc._cython.cygrpc", "from grpc"),
        ("absl", "from absl"),
    ]


def test_grpc_core_is_quiet_unless_the_operator_asks() -> None:
    env: dict[str, str] = {}
    quiet_grpc_core(env)
    assert env == {"GRPC_VERBOSITY": "NONE"}
    env = {"GRPC_VERBOSITY": "debug"}
    quiet_grpc_core(env)
    assert env == {"GRPC_VERBOSITY": "debug"}
