"""Prometheus metrics, served on their own HTTP port (``--metrics-port``), on
127.0.0.1 unless ``--metrics-host`` says otherwise.

Every label takes a value from a small closed set (RPC method names the
server registered, gRPC status codes, the Decision / Reason / channel enums):
never a practitioner, institution or claim id.

Nothing on the decision path: the claim path counts lines, amounts and
claim sizes into arrays itself (``gateway.claimpath.Counters``); they are
turned into metric families only when Prometheus scrapes (a custom
collector), as is the state of the index, the snapshot follower and the
override audit. RPC latency, counts and in-flight requests are recorded by
the handler wrappers (``gateway.ops.interceptors``) into ``RpcStats``: plain
lists, exported at scrape time too.

Names follow the Prometheus conventions: an ``eligibility_`` namespace, base
units (seconds, bytes; money in fen, the unit on the wire), ``_total`` on
counters, timestamps as ``_timestamp_seconds``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import platform
import threading
import time
from collections.abc import Iterator, Mapping, Sized
from typing import Protocol
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from contract.domain import Decision, Reason
from contract.version import package_version
from gateway.claimpath import LINES_BUCKETS, N_DECISIONS, N_REASONS, Counters
from gateway.index import Index, IndexHolder

NAMESPACE = "eligibility"

CHANNELS = ("HOSPITAL", "PHARMACY")  # the channels a decided claim can have
# RPC latency buckets (seconds): the gateway aims at well under a millisecond.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip


class RpcStats(Collector):
    """RPC latency, counts by status code, calls in flight and stream messages,
    per method, in plain lists: recording a call is a few list-item adds (no
    lock: every call runs on the event loop's thread; a scrape from the
    metrics thread may read a count or two behind). prometheus_client's
    Histogram and Counter take a lock and cost a few µs per call each, as
    much as the whole decision of a claim (bench/RESULTS.md, issue 14).
    Exported at scrape time."""

    def __init__(self) -> None:
        self.methods: list[tuple[str, str]] = []  # (service, method) per method id
        self.in_flight: list[int] = []
        self.buckets: list[list[int]] = []  # per LATENCY_BUCKETS bound, +Inf last; not cumulative
        self.seconds: list[float] = []
        self.codes: list[dict[str, int]] = []
        self.messages: list[int] = []

    def method(self, service: str, method: str) -> int:
        """The id to record the calls of ``/service/method`` under (one per method)."""
        if (service, method) in self.methods:
            return self.methods.index((service, method))
        self.methods.append((service, method))
        self.in_flight.append(0)
        self.buckets.append([0] * (len(LATENCY_BUCKETS) + 1))
        self.seconds.append(0.0)
        self.codes.append({})
        self.messages.append(0)
        return len(self.methods) - 1

    def finished(self, m: int, seconds: float, code: str) -> None:
        """One call of method ``m`` ended with ``code`` after ``seconds``."""
        self.buckets[m][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds[m] += seconds
        codes = self.codes[m]
        codes[code] = codes.get(code, 0) + 1

    def collect(self) -> Iterator[Metric]:
        seconds = HistogramMetricFamily(
            f"{NAMESPACE}_rpc_duration_seconds",
            "Time to answer an RPC, from the server's first sight of it to its status; "
            "a stream counts from open to close.",
            labels=("service", "method"),
        )
        rpcs = CounterMetricFamily(
            f"{NAMESPACE}_rpcs",
            "RPCs finished, by method and gRPC status code.",
            labels=("service", "method", "code"),
        )
        in_flight = GaugeMetricFamily(
            f"{NAMESPACE}_rpcs_in_flight",
            "RPCs being answered now, by method.",
            labels=("service", "method"),
        )
        messages = CounterMetricFamily(
            f"{NAMESPACE}_stream_messages",
            "Responses sent on streaming RPCs, by method.",
            labels=("service", "method"),
        )
        for m, labels in enumerate(list(self.methods)):
            cumulative = list(itertools.accumulate(self.buckets[m]))
            buckets = [
                (str(b), float(v)) for b, v in zip(LATENCY_BUCKETS, cumulative, strict=False)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            seconds.add_metric(labels, buckets, self.seconds[m])
            for code, count in list(self.codes[m].items()):
                rpcs.add_metric((*labels, code), count)
            in_flight.add_metric(labels, self.in_flight[m])
            messages.add_metric(labels, self.messages[m])
        yield from (seconds, rpcs, in_flight, messages)


class ClaimMetrics:
    """Per-claim counters, exported at scrape time.

    The claim path counts every decided claim itself, into arrays
    (``gateway.claimpath.Counters``: in the compiled path, C integer adds),
    so nothing is done per call in Python for these; a scrape reads the
    arrays (a torn read can only be a count or two behind).
    """

    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        lines = CounterMetricFamily(
            f"{NAMESPACE}_lines_decided",
            "Claim lines decided, by decision, reason and channel.",
            labels=("decision", "reason", "channel"),
        )
        overrides = CounterMetricFamily(
            f"{NAMESPACE}_emergency_overrides",
            "Lines paid by the emergency exception (SPEC rule 5), by the reason overridden.",
            labels=("reason", "channel"),
        )
        rejected = CounterMetricFamily(
            f"{NAMESPACE}_rejected_amount_fen",
            "Amount claimed on rejected lines, in fen (0.01 CNY), by reason and channel.",
            labels=("reason", "channel"),
        )
        claim_lines = HistogramMetricFamily(
            f"{NAMESPACE}_claim_lines",
            "Lines per decided claim, by channel.",
            labels=("channel",),
        )
        for c, channel in enumerate(CHANNELS):
            counters = self.counters
            if counters is None:
                counts = [0] * (N_DECISIONS * N_REASONS)
                amounts = [0] * N_REASONS
                sizes = [0] * (len(LINES_BUCKETS) + 1)
                lines_sum = 0
            else:
                counts = counters.lines_decided[c].tolist()
                amounts = counters.rejected_fen[c].tolist()
                sizes = counters.claim_buckets[c].tolist()
                lines_sum = int(counters.claim_lines_sum[c])
            for d in Decision:
                for r in Reason:
                    value = counts[d * N_REASONS + r]
                    if value:
                        lines.add_metric((d.name, r.name, channel), value)
            for r in (Reason.SUSPENDED, Reason.TERMINATED):
                value = counts[Decision.PAY_EMERGENCY_OVERRIDE * N_REASONS + r]
                overrides.add_metric((r.name, channel), value)
            for r in Reason:
                if amounts[r]:
                    rejected.add_metric((r.name, channel), amounts[r])
            cumulative = list(itertools.accumulate(sizes))
            buckets = [
                (str(float(b)), float(v)) for b, v in zip(LINES_BUCKETS, cumulative, strict=False)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            claim_lines.add_metric((channel,), buckets, float(lines_sum))
        yield from (lines, overrides, rejected, claim_lines)


class FollowerState(Protocol):
    """What the metrics read of the snapshot follower (``gateway.feed.SnapshotFollower``):
    mypy checks the follower against it, so renaming an attribute there fails
    the type check instead of silently dropping a metric.

    ``change_lag_seconds`` is publication to enforcement of the last change
    applied (None before the first; 0 once it is older than
    ``gateway.feed.CHANGE_LAG_WINDOW_S``); ``source`` is "none", "redis" or
    "disk-cache".
    """

    @property
    def redis_ok(self) -> bool: ...
    @property
    def stale_since(self) -> float | None: ...
    @property
    def change_lag_seconds(self) -> float | None: ...
    @property
    def changes_applied(self) -> int: ...
    @property
    def reloads(self) -> int: ...
    @property
    def lost_place(self) -> int: ...
    @property
    def source(self) -> str: ...
    @property
    def follower_up(self) -> bool: ...
    @property
    def last_success(self) -> float | None: ...
    @property
    def data_too_old(self) -> bool: ...
    @property
    def errors(self) -> Mapping[str, int]: ...
    @property
    def rejected(self) -> Mapping[str, int]: ...
    @property
    def epoch_changes(self) -> int: ...
    @property
    def rollbacks(self) -> int: ...


class AuditState(Protocol):
    """What the metrics read of the override audit (``gateway.ops.audit``)."""

    @property
    def pending(self) -> Sized: ...
    @property
    def recorded(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def spool_pending(self) -> int: ...
    @property
    def spool_errors(self) -> int: ...
    @property
    def spool_ok(self) -> bool: ...
    @property
    def refused(self) -> int: ...


def build_info() -> dict[str, str]:
    """What this gateway runs: its version and Python's and gRPC's, the labels
    of ``eligibility_build_info`` and fields of the start-up log line."""
    return {
        "version": package_version(),
        "python": platform.python_version(),
        "grpc": grpc.__version__,
    }


class StateCollector(Collector):
    """Index, follower and audit state, read when Prometheus scrapes."""

    def __init__(
        self,
        holder: IndexHolder,
        follower: FollowerState | None,
        audit: AuditState | None,
        claims: ClaimMetrics,
    ) -> None:
        self.holder = holder
        self.follower = follower
        self.audit = audit
        self.claims = claims
        self.loaded_at: float | None = None  # when the snapshot deciding now was loaded
        self.unsigned_allowed = False  # started with --allow-unsigned
        self.pure_python = False  # started with --pure-python
        self._loaded_snapshot = 0

    def index_swapped(self, index: Index) -> None:
        """Call when a new index starts deciding (the server's on_swap hook).

        With the change feed, every applied change swaps in a new index over
        the same snapshot: only a new snapshot resets the load time."""
        snapshot = index.snapshot_version
        if snapshot != self._loaded_snapshot or self.loaded_at is None:
            self.loaded_at = time.time()
            self._loaded_snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        # The usual *_build_info pattern: constant 1, the facts in labels, so
        # that a dashboard or an alert can join on the version.
        info = build_info()
        build = GaugeMetricFamily(
            f"{NAMESPACE}_build_info",
            "1, labelled with this gateway's version and its Python and gRPC versions.",
            labels=tuple(info),
        )
        build.add_metric(tuple(info.values()), 1)
        yield build
        yield GaugeMetricFamily(
            f"{NAMESPACE}_pure_python",
            "1 if started with --pure-python: claims are decided by the slow Python reference.",
            value=1 if self.pure_python else 0,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_unsigned_data_allowed",
            "1 if started with --allow-unsigned: published data is not verified.",
            value=1 if self.unsigned_allowed else 0,
        )
        yield from self.claims.collect()
        yield from self._index()
        yield from self._follower()
        yield from self._audit()

    def _index(self) -> Iterator[Metric]:
        index = self.holder.current
        yield GaugeMetricFamily(
            f"{NAMESPACE}_index_version",
            "Version of the snapshot deciding now (0: none loaded yet, NOT_SERVING).",
            value=index.version if index is not None else 0,
        )
        if index is None:
            return
        yield GaugeMetricFamily(
            f"{NAMESPACE}_index_snapshot_version",
            "Version of the full snapshot under the changes applied since.",
            value=index.snapshot_version,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_index_practitioners",
            "Practitioners in the index deciding now.",
            value=len(index),
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_index_size_bytes",
            "Bytes of the index arrays deciding now.",
            value=index.nbytes,
        )
        published = published_timestamp(index)
        if published is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_index_published_timestamp_seconds",
                "When the loader published the snapshot deciding now (Unix time).",
                value=published,
            )
        loaded = self.loaded_at if self._loaded_snapshot == index.snapshot_version else None
        if loaded is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_index_loaded_timestamp_seconds",
                "When this gateway loaded the snapshot deciding now (Unix time).",
                value=loaded,
            )
        since = published if published is not None else loaded
        if since is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_index_age_seconds",
                "Age of the full snapshot deciding now (live changes on top do not reset it): "
                "since it was published, or since it was loaded when the snapshot carries no "
                "publication time.",
                value=max(time.time() - since, 0.0),
            )

    def _follower(self) -> Iterator[Metric]:
        follower = self.follower
        if follower is None:
            return
        yield GaugeMetricFamily(
            f"{NAMESPACE}_redis_up",
            "1 if the last read of Redis succeeded; 0 while deciding from the held index "
            "(fail-static).",
            value=1 if follower.redis_ok else 0,
        )
        stale = follower.stale_since
        yield GaugeMetricFamily(
            f"{NAMESPACE}_redis_unreachable_seconds",
            "Seconds since Redis became unreachable; 0 while it is reachable.",
            value=0.0 if stale is None or follower.redis_ok else max(time.time() - stale, 0.0),
        )
        lag = follower.change_lag_seconds
        if lag is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_change_feed_lag_seconds",
                "Publication-to-enforcement delay of the last change applied (from the feed "
                "or taken in by a reload), for 60 s after it was applied; then 0.",
                value=float(lag),
            )
        for name, count, help_text in (
            (
                "changes_applied",
                follower.changes_applied,
                "Single-practitioner changes applied, from the change feed or taken in by a "
                "reload.",
            ),
            (
                "reloads",
                follower.reloads,
                "Full reloads of the snapshot (a new version, or a lost place).",
            ),
            (
                "lost_place",
                follower.lost_place,
                "Reloads because change-feed entries were trimmed before being read.",
            ),
        ):
            yield CounterMetricFamily(f"{NAMESPACE}_change_feed_{name}", help_text, value=count)
        yield GaugeMetricFamily(
            f"{NAMESPACE}_follower_up",
            "1 if the last attempt to follow Redis (snapshots and changes) succeeded.",
            value=1 if follower.follower_up else 0,
        )
        if follower.last_success is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_follower_last_success_timestamp_seconds",
                "When the follower last confirmed the held data with Redis (Unix time).",
                value=follower.last_success,
            )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_data_too_old",
            "1 if nothing was confirmed with Redis for longer than --max-data-age-s.",
            value=1 if follower.data_too_old else 0,
        )
        errors = CounterMetricFamily(
            f"{NAMESPACE}_follower_errors",
            "Failures while following Redis, by cause (redis, data, bug); each is retried.",
            labels=("cause",),
        )
        for cause, count in sorted(follower.errors.items()):
            errors.add_metric((cause,), count)
        yield errors
        rejected = CounterMetricFamily(
            f"{NAMESPACE}_data_rejected",
            "Published data refused: bad signature, digest, format or invariant (by what).",
            labels=("what",),
        )
        for what, count in sorted(follower.rejected.items()):
            rejected.add_metric((what,), count)
        yield rejected
        yield CounterMetricFamily(
            f"{NAMESPACE}_epoch_changes",
            "Times the dataset's epoch changed (Redis lost or replaced its data) and was taken.",
            value=follower.epoch_changes,
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_follower_rollbacks",
            "Times the follower replaced its index by what Redis holds now, older than what it "
            "held: writes lost in a failover (issue 15).",
            value=follower.rollbacks,
        )
        sources = GaugeMetricFamily(
            f"{NAMESPACE}_index_source",
            "Where the index deciding now came from: 1 for the current source.",
            labels=("source",),
        )
        for source in ("none", "redis", "disk-cache"):
            sources.add_metric((source,), 1 if follower.source == source else 0)
        yield sources

    def _audit(self) -> Iterator[Metric]:
        audit = self.audit
        if audit is None:
            return
        yield GaugeMetricFamily(
            f"{NAMESPACE}_override_audit_pending",
            "Emergency-override audit records not yet written to Redis (spool and memory).",
            value=len(audit.pending) + audit.spool_pending,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_override_spool_pending",
            "Emergency-override audit entries on the local spool, not yet confirmed in Redis.",
            value=audit.spool_pending,
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_override_spool_errors",
            "Failed writes to the local override spool (disk full, read-only, I/O error).",
            value=audit.spool_errors,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_override_spool_up",
            "1 if the last write to the local override spool succeeded.",
            value=1 if audit.spool_ok else 0,
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_override_refused",
            "Emergency-override lines answered REJECT because their audit record could not "
            "be stored (--audit-failure-policy reject).",
            value=audit.refused,
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_override_audit_written",
            "Emergency-override audit records written to the Redis stream.",
            value=audit.recorded,
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_override_audit_dropped",
            "Emergency-override audit records lost because the queue was full.",
            value=audit.dropped,
        )


def published_timestamp(index: Index) -> float | None:
    """The snapshot's publication time from its meta (``created_at``, ISO 8601), if any."""
    raw = index.meta.get("created_at")
    if not isinstance(raw, str):
        return None
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


class GatewayMetrics:
    """Every metric of one gateway, in its own registry (not the global one,
    so that several gateways in one process, as in tests, do not collide)."""

    def __init__(
        self,
        holder: IndexHolder,
        *,
        follower: FollowerState | None = None,
        audit: AuditState | None = None,
        counters: Counters | None = None,
    ) -> None:
        """``counters``: the claim path's (``gateway.claimpath.ClaimPath.counters``)."""
        # No *_created series beside every counter and histogram: Prometheus
        # does not use them, and they doubled the series count (issue 13).
        # A switch of prometheus_client's for the whole process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.claims = ClaimMetrics(counters)
        self.state = StateCollector(holder, follower, audit, self.claims)
        self.registry.register(self.state)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.rpcs = RpcStats()
        self.registry.register(self.rpcs)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def index_swapped(self, index: Index) -> None:
        self.state.index_swapped(index)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP from a daemon thread; return the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        self.port = int(server.server_port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
