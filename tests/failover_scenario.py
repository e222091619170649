"""The failover scenario of issue 15, shared by the cluster test
(``tests/test_cluster.py``, which asserts its correctness figures) and the
benchmark (``python -m bench.failover``, which reports its timings too).

On 127.0.0.1: a Redis primary, one replica and three Sentinels
(``tests/cluster.py``); the sample data set loaded by the loader CLI through
Sentinel, signed; three gateways (``python -m gateway --redis-sentinel ...
--read-from replicas``), each with its own audit spool; one client thread
sending claims round_robin over the three with the published service config
(``examples/service_config.json``: retries on UNAVAILABLE). Each claim has
four lines with known answers: a WARNED doctor (PAY), a SUSPENDED one (REJECT),
the same as emergency care (PAY_EMERGENCY_OVERRIDE: an audit record), and the
ACTIVE doctor that the change of step (a) suspends (PAY before the change's
``index_version``, REJECT from it on). Then, under that load:

(a) the primary is SIGKILLed; Sentinel promotes the replica; the loader CLI
    publishes the change through Sentinel (to the new primary); every gateway
    must enforce it (``GetPractitionerStatus`` on each);
(b) one gateway is SIGKILLed, and restarted on the same port and spool (as a
    StatefulSet pod is);
(c) a gateway whose Redis user could not write (an ACL without ``@write``, on
    every node: its audit drain has failed all along, so its spool holds every
    override it answered) is SIGKILLed; the user gets ``@write`` back and the
    gateway is restarted on the same spool, and drains to the new primary.

Counted: calls failed (after the config's retries), lines decided other than
expected for the ``index_version`` that decided them, override records paid
but not in the stream at the end, stream entries written twice (same chain
and seq), broken hash chains; and the timings.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import datetime as dt
import io
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc
import redis

from contract.days import today_cst
from contract.signing import generate_keypair
from contract.snapshot import Keys
from gateway.ops.audit import read_overrides, verify_chains
from gateway.ops.spool import read_spool_dir
from loader.cli import main as loader_main
from loader.sample import FIXED
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.cluster import Cluster
from tests.gateway_process import ROOT, GatewayProcess

SERVICE_CONFIG = ROOT / "examples" / "service_config.json"
PREFIX = "elig"
TARGET = FIXED.active_doctor  # suspended by the change of step (a)
# The gateway whose Redis user cannot write until step (c).
ACL_USER, ACL_PASSWORD = "elig-gw", "gw-secret"


@dataclass
class FailoverReport:
    calls: int = 0
    failed: int = 0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    lines: int = 0
    wrong: int = 0
    wrong_examples: list[str] = field(default_factory=list)
    overrides_paid: int = 0
    overrides_lost: int = 0
    stream_entries: int = 0
    written_twice: int = 0
    chain_problems: list[str] = field(default_factory=list)
    undrained_at_kill: int = 0  # (c): records only in the killed gateway's spool
    kill_to_promotion_s: float = 0.0
    promotion_to_published_s: float = 0.0
    promotion_to_enforced_s: float = 0.0  # the change enforced on every gateway
    enforced_after_publish_s: list[float] = field(default_factory=list)
    restart_s: list[float] = field(default_factory=list)  # SIGKILL to SERVING again
    duration_s: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "calls": self.calls,
            "calls_failed": self.failed,
            "failures": dict(self.failures),
            "lines": self.lines,
            "lines_wrong": self.wrong,
            "overrides_paid": self.overrides_paid,
            "override_records_lost": self.overrides_lost,
            "stream_entries": self.stream_entries,
            "written_twice": self.written_twice,
            "chain_problems": self.chain_problems,
            "undrained_at_kill": self.undrained_at_kill,
            "kill_to_promotion_s": round(self.kill_to_promotion_s, 3),
            "promotion_to_published_s": round(self.promotion_to_published_s, 3),
            "promotion_to_enforced_s": round(self.promotion_to_enforced_s, 3),
            "enforced_after_publish_s": [round(s, 3) for s in self.enforced_after_publish_s],
            "gateway_restart_s": [round(s, 3) for s in self.restart_s],
            "duration_s": round(self.duration_s, 1),
        }


def _today() -> int:
    today = today_cst()
    return today.year * 10000 + today.month * 100 + today.day


def claim(claim_id: str, date: int) -> pb.CheckClaimRequest:
    return pb.CheckClaimRequest(
        claim_id=claim_id,
        institution_code=FIXED.hospital,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=date,
        lines=[
            pb.ClaimLine(line_id="w", prescriber_code=FIXED.warned_doctor),
            pb.ClaimLine(line_id="s", prescriber_code=FIXED.suspended_doctor),
            pb.ClaimLine(line_id="e", prescriber_code=FIXED.suspended_doctor, emergency=True),
            pb.ClaimLine(line_id="t", prescriber_code=TARGET),
        ],
    )


def expected(line_id: str, index_version: int, change_version: int) -> tuple[int, int]:
    """(decision, reason) of a line of ``claim`` decided from ``index_version``."""
    if line_id == "w":
        return pb.DECISION_PAY, pb.REASON_WARNED
    if line_id == "s":
        return pb.DECISION_REJECT, pb.REASON_SUSPENDED
    if line_id == "e":
        return pb.DECISION_PAY_EMERGENCY_OVERRIDE, pb.REASON_SUSPENDED
    if index_version >= change_version:
        return pb.DECISION_REJECT, pb.REASON_SUSPENDED
    return pb.DECISION_PAY, pb.REASON_OK


class ClaimClient:
    """One thread sending claims round_robin over every gateway, as a settlement
    system would: the published service config, retries enabled, 5 s deadline."""

    def __init__(self, addresses: list[str], interval_s: float) -> None:
        target = "ipv4:" + ",".join(addresses)
        options = [
            ("grpc.service_config", SERVICE_CONFIG.read_text()),
            ("grpc.enable_retries", 1),
        ]
        self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.EligibilityGatewayStub(self.channel)
        self.interval_s = interval_s
        self.answers: list[tuple[str, int, tuple[tuple[str, int, int], ...]]] = []
        self.failures: collections.Counter[str] = collections.Counter()
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claims", daemon=True)

    def start(self) -> ClaimClient:
        self._thread.start()
        return self

    def _run(self) -> None:
        date = _today()
        n = 0
        while not self._stop.is_set():
            n += 1
            request = claim(f"FO-{n}", date)
            self.calls += 1
            try:
                response = self.stub.CheckClaim(request, timeout=5)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                self.failures[str(code)] += 1
            else:
                lines = tuple((x.line_id, int(x.decision), int(x.reason)) for x in response.lines)
                self.answers.append((response.claim_id, int(response.index_version), lines))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.channel.close()


def _status(address: str, code: str) -> tuple[int, int]:
    """(status, index_version) of ``code`` on the gateway at ``address`` (not balanced)."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        request = pb.GetPractitionerStatusRequest(practitioner_code=code, date=_today())
        response = stub.GetPractitionerStatus(request, timeout=2)
        return int(response.status), int(response.index_version)


def _wait_enforced(addresses: list[str], timeout_s: float) -> list[float]:
    """Poll each gateway until it says TARGET is SUSPENDED; when each did (monotonic)."""
    deadline = time.monotonic() + timeout_s
    when: dict[str, float] = {}
    while len(when) < len(addresses):
        for address in addresses:
            if address in when:
                continue
            with contextlib.suppress(grpc.RpcError):
                if _status(address, TARGET)[0] == pb.STATUS_SUSPENDED:
                    when[address] = time.monotonic()
        if time.monotonic() > deadline:
            missing = sorted(set(addresses) - set(when))
            raise TimeoutError(f"the change is not enforced by {missing} after {timeout_s} s")
        time.sleep(0.005)
    return [when[a] for a in addresses]


def _change_files(sample: Path, out: Path) -> list[str]:
    """The complete new record of TARGET: its registry rows, suspended from yesterday."""
    out.mkdir(parents=True, exist_ok=True)
    with (sample / "registry.csv").open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    column = header.index("practitioner_code")
    with (out / "registry.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *(r for r in rows if r[column] == TARGET)])
    today = today_cst()
    start = (today - dt.timedelta(days=1)).isoformat()
    until = (today + dt.timedelta(days=30)).isoformat()
    (out / "status.csv").write_text(
        "practitioner_code,status,effective_from,effective_until,reference\n"
        f"{TARGET},SUSPENDED,{start},{until},FAILOVER-1\n",
        encoding="utf-8",
    )
    return ["--registry", str(out / "registry.csv"), "--status", str(out / "status.csv")]


def _loader(cluster: Cluster, *argv: str) -> tuple[int, str]:
    """The loader CLI through Sentinel: (exit code, what it printed)."""
    where = ["--redis-sentinel", cluster.sentinel_spec, "--redis-master-name"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = loader_main([*argv, *where, cluster.master_name, "--prefix", PREFIX])
    return code, out.getvalue()


def _publish_until_done(cluster: Cluster, argv: list[str], timeout_s: float) -> int:
    """The loader CLI's change, again while it exits 1 (the failover still
    settling); the change's index_version."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, out = _loader(cluster, *argv)
        if code == 0:
            found = re.search(r"index_version (\d+)", out)
            assert found is not None, out
            return int(found.group(1))
        if time.monotonic() > deadline:
            raise TimeoutError(f"the loader could not publish in {timeout_s} s (exit {code})")
        time.sleep(0.05)


@contextlib.contextmanager
def _gateways(processes: list[GatewayProcess]) -> Iterator[list[GatewayProcess]]:
    try:
        yield processes
    finally:
        for gateway in processes:
            with contextlib.suppress(Exception):
                gateway.stop()


def run_failover(
    directory: Path, *, load_s: float = 1.0, interval_s: float = 0.003, read_from: str = "replicas"
) -> FailoverReport:
    """Run the scenario in ``directory`` (module docstring); everything it
    starts is stopped before it returns or raises. ``read_from``: the gateways'
    ``--read-from`` (with "primary" their followers lose their connections to the
    killed primary and find the new one through Sentinel)."""
    started = time.monotonic()
    report = FailoverReport()
    sample = directory / "sample"
    keys_dir = directory / "keys"
    assert loader_main(["sample", "--out", str(sample), "--practitioners", "200"]) == 0
    private, public = generate_keypair(keys_dir)
    change_argv = _change_files(sample, directory / "change")
    with Cluster(directory / "cluster") as cluster:
        # The restricted user of gateway 3: reads everything, writes nothing (yet).
        cluster.for_each_node(
            "ACL", "SETUSER", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all", "-@write"
        )
        signed = ["--signing-key", str(private)]
        load_argv = ["load", "--registry", str(sample / "registry.csv")]
        code, out = _loader(cluster, *load_argv, "--status", str(sample / "status.csv"), *signed)
        assert code == 0 and "replicas: 1 of 1 acknowledged" in out, out
        spec = cluster.sentinel_spec
        users = [spec, spec, f"redis://{ACL_USER}:{ACL_PASSWORD}@{spec}?sentinel_password="]
        common = ("--redis-master-name", cluster.master_name, "--read-from", read_from)
        processes = [
            GatewayProcess(
                None,
                PREFIX,
                "--redis-sentinel",
                users[i],
                *common,
                "--trusted-keys",
                str(public),
                "--audit-spool-dir",
                str(directory / f"spool-{i}"),
            )
            for i in range(3)
        ]
        with _gateways(processes) as gateways:
            for gateway in gateways:
                gateway.start()
            addresses = [g.address for g in gateways]
            client = ClaimClient(addresses, interval_s).start()
            try:
                time.sleep(load_s)
                # (a) the primary, SIGKILLed under load.
                old_primary = cluster.primary_port()
                assert old_primary is not None
                killed_at = time.monotonic()
                cluster.kill_node(old_primary)
                _, promoted_at = cluster.wait_promotion(old_primary)
                report.kill_to_promotion_s = promoted_at - killed_at
                change = _publish_until_done(cluster, ["change", *change_argv, *signed], 20)
                published_at = time.monotonic()
                report.promotion_to_published_s = published_at - promoted_at
                enforced = _wait_enforced(addresses, timeout_s=20)
                report.promotion_to_enforced_s = max(enforced) - promoted_at
                report.enforced_after_publish_s = [max(t - published_at, 0.0) for t in enforced]
                time.sleep(load_s / 2)
                # (b) a gateway, SIGKILLed under load, restarted on its port and spool.
                report.restart_s.append(_kill_and_restart(gateways, 1))
                time.sleep(load_s / 2)
                # (c) the gateway that could not write: its spool holds its overrides.
                report.undrained_at_kill = _undrained(cluster, directory / "spool-2")
                cluster.for_each_node("ACL", "SETUSER", ACL_USER, "+@all")
                report.restart_s.append(_kill_and_restart(gateways, 2))
                time.sleep(load_s / 2)
            finally:
                client.stop()
            _count(report, client, cluster, change)
    report.duration_s = time.monotonic() - started
    return report


def _kill_and_restart(gateways: list[GatewayProcess], i: int) -> float:
    """SIGKILL gateway ``i``, start it again with the same command line (port,
    spool, Redis user); seconds until it is SERVING again."""
    old = gateways[i]
    assert old.proc is not None
    killed_at = time.monotonic()
    old.proc.kill()
    old.stop()
    gateways[i] = old.again().start()
    return time.monotonic() - killed_at


def _primary(cluster: Cluster) -> redis.Redis:
    port = cluster.primary_port()
    assert port is not None
    return cluster.node(port)


def _undrained(cluster: Cluster, spool: Path) -> int:
    """Records in ``spool`` that the stream does not have (by chain and seq)."""
    client = _primary(cluster)
    try:
        in_stream = {(f.get(b"chain"), f.get(b"seq")) for _, f in _stream(client)}
    finally:
        client.close()
    in_spool = {(e["chain"].encode(), e["seq"].encode()) for e in read_spool_dir(spool)}
    return len(in_spool - in_stream)


def _stream(client: redis.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    entries = client.xrange(Keys(PREFIX).overrides)
    return cast(list[tuple[bytes, dict[bytes, bytes]]], entries)


def _count(report: FailoverReport, client: ClaimClient, cluster: Cluster, change: int) -> None:
    """Check every answer against what its index_version must decide (``change``:
    the change's), and every paid override against the stream."""
    report.calls = client.calls
    report.failures = client.failures
    report.failed = sum(client.failures.values())
    paid: set[tuple[str, str]] = set()
    for claim_id, version, lines in client.answers:
        for line_id, decision, reason in lines:
            report.lines += 1
            if (decision, reason) != expected(line_id, version, change):
                report.wrong += 1
                if len(report.wrong_examples) < 5:
                    report.wrong_examples.append(
                        f"{claim_id} line {line_id} at {version}: {decision}/{reason}"
                    )
            if decision == pb.DECISION_PAY_EMERGENCY_OVERRIDE:
                paid.add((claim_id, line_id))
    if not any(version >= change for _, version, _ in client.answers):
        report.wrong_examples.append("no answer was decided from the change (load too short)")
    report.overrides_paid = len(paid)
    primary = _primary(cluster)
    key = Keys(PREFIX).overrides
    try:
        deadline = time.monotonic() + 20
        while True:  # the restarted gateways drain what they left
            found = {(r.get("claim_id"), r.get("line_id")) for r in read_overrides(primary, key)}
            if paid <= found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        report.overrides_lost = len(paid - found)
        entries = _stream(primary)
        report.stream_entries = len(entries)
        places = collections.Counter((f.get(b"chain"), f.get(b"seq")) for _, f in entries)
        report.written_twice = sum(n - 1 for n in places.values())
        report.chain_problems = [str(p) for p in verify_chains(primary, key).problems]
    finally:
        primary.close()
