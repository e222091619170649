"""The client examples under examples/ run against the real gateway (the
embedded default: sample data, as ``make run`` serves it), as a vendor would
run them; and stock tools find the service through server reflection v1."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from grpc_reflection.v1alpha import reflection_pb2

from gateway.server import REFLECTION_V1_NAME
from tests.gateway_process import GatewayProcess

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CHINA_STANDARD_TIME = dt.timezone(dt.timedelta(hours=8))
# What each example prints for the sample's fixed practitioners, whatever the language.
EXPECTED_LINES = [
    "line 1: DECISION_PAY REASON_OK STATUS_ACTIVE",
    "line 2: DECISION_REJECT REASON_SUSPENDED STATUS_SUSPENDED until ",
    "line 3: DECISION_PAY_EMERGENCY_OVERRIDE REASON_SUSPENDED STATUS_SUSPENDED until ",
]
# Maven Central may be out of reach: then (and only then) the Java example is skipped.
MAVEN_TIMEOUT_S = 60
MAVEN_UNREACHABLE = re.compile(
    r"Could not transfer|could not be resolved|Non-resolvable|UnknownHost|Unknown host"
    r"|Connection refused|Network is unreachable|timed out",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    """``python -m gateway`` with no Redis URL: its own redis-server and the sample data."""
    process = GatewayProcess("unused", "unused")
    process.args = [
        sys.executable, "-m", "gateway",
        "--host", "127.0.0.1",
        "--port", str(process.port),
        "--no-demo",
        "--sample-practitioners", "300",
        "--drain-s", "0",
    ]  # fmt: skip
    with process:
        yield process


def today_yyyymmdd() -> int:
    today = dt.datetime.now(CHINA_STANDARD_TIME).date()
    return today.year * 10000 + today.month * 100 + today.day


def run(args: list[str], cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)


def assert_decisions_printed(result: subprocess.CompletedProcess[str], claim_id: str) -> None:
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    # Dated today (China Standard Time), never a fixed date that goes stale.
    assert f'"service_date": {today_yyyymmdd()}' in header.replace(":", ": ").replace("  ", " ")
    assert claim_id in header
    assert len(lines) == len(EXPECTED_LINES)
    for line, expected in zip(lines, EXPECTED_LINES, strict=True):
        assert line.startswith(expected), result.stdout


def test_python_example(gateway: GatewayProcess) -> None:
    # The README's command, as written but for the port.
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/python examples/python/check_claim.py --address localhost:50051" in readme
    command = [sys.executable, "examples/python/check_claim.py", "--address", gateway.address]
    assert_decisions_printed(run(command, ROOT), "EXAMPLE-PY-1")


def test_python_example_prints_the_bad_field(gateway: GatewayProcess) -> None:
    command = [sys.executable, "examples/python/check_claim.py", "--address", gateway.address]
    result = run([*command, "--claim-id", ""], ROOT)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "INVALID_ARGUMENT: claim_id: is required",
        "  field claim_id: is required",
    ]


def test_node_example(gateway: GatewayProcess) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed: the Node example (examples/node) is not run")
    directory = EXAMPLES / "node"
    # The lockfile pins the packages; node_modules is git-ignored.
    ignored = run(["git", "check-ignore", "-q", "examples/node/node_modules/"], ROOT)
    assert ignored.returncode == 0, "examples/node/node_modules is not git-ignored"
    installed = run([npm, "ci", "--no-audit", "--no-fund"], directory, timeout_s=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    result = run([node, "check_claim.js", "--address", gateway.address], directory)
    assert_decisions_printed(result, "EXAMPLE-NODE-1")
    bad = run([node, "check_claim.js", "--address", gateway.address, "--claim-id", ""], directory)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "INVALID_ARGUMENT: claim_id: is required"


def test_java_example(gateway: GatewayProcess) -> None:
    mvn, java = shutil.which("mvn"), shutil.which("java")
    if mvn is None or java is None:
        pytest.skip(
            "Maven or a JDK is not installed: the Java example (examples/java) is not built"
        )
    directory = EXAMPLES / "java"
    try:
        built = run([mvn, "-B", "-q", "package"], directory, timeout_s=MAVEN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(
            f"Maven could not fetch grpc-java in {MAVEN_TIMEOUT_S} s: Java example not built"
        )
    if built.returncode != 0:
        out = built.stdout + built.stderr
        cause = MAVEN_UNREACHABLE.search(out)
        if cause is not None:
            first = next(line for line in out.splitlines() if cause.group(0) in line)
            pytest.skip(f"Maven cannot fetch its packages here: {first.strip()[:300]}")
        pytest.fail(f"mvn package failed:\n{out[-3000:]}")
    command = [java, "-jar", "target/check-claim.jar", "--address", gateway.address]
    assert_decisions_printed(run(command, directory), "EXAMPLE-JAVA-1")


def reflection_v1_messages() -> tuple[Any, Any]:
    # Any: classes made at run time from a descriptor (the stubs know only Message).
    """ServerReflectionRequest / Response of grpc.reflection.v1, built from
    v1alpha's descriptor with the package renamed (the two schemas differ in
    nothing else), so this client speaks v1 by its own names."""
    alpha = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(alpha)
    renamed = text_format.MessageToString(alpha).replace("reflection.v1alpha", "reflection.v1")
    v1 = text_format.Parse(renamed, descriptor_pb2.FileDescriptorProto())
    v1.name = "grpc/reflection/v1/reflection.proto"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(v1)
    request = pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")
    response = pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
    return message_factory.GetMessageClass(request), message_factory.GetMessageClass(response)


@pytest.mark.parametrize(
    "service", [REFLECTION_V1_NAME, "grpc.reflection.v1alpha.ServerReflection"]
)
def test_server_reflection(gateway: GatewayProcess, service: str) -> None:
    request_type, response_type = reflection_v1_messages()
    with grpc.insecure_channel(gateway.address) as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        requests = [
            request_type(list_services=""),
            request_type(file_containing_symbol="eligibility.v1.EligibilityGateway"),
        ]
        listed, described = list(info(iter(requests), timeout=5))
    names = {service.name for service in listed.list_services_response.service}
    assert {"eligibility.v1.EligibilityGateway", "grpc.health.v1.Health"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    (contract,) = [f for f in files if f.package == "eligibility.v1"]
    assert contract.options.java_package == "eligibility.gateway.v1"
    assert contract.options.java_multiple_files
    assert contract.options.csharp_namespace == "Eligibility.V1"
    assert contract.options.go_package.endswith(";eligibilityv1")
