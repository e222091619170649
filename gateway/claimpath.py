"""How a running gateway decides claims: request bytes to response bytes.

``CompiledPath`` is the one serving implementation: ``gateway.kernel``
(Cython, built by ``pip install -e .``) reads the request, decides every line
against a packed form of the index and writes the response, with no Python
work per line. ``PurePath`` runs the readable reference
(``gateway.reference``) instead; a gateway uses it only when started with
``--pure-python`` (a warning and a metric say so), never as a silent fallback.

Both answer ``check(index, data, today_day)`` the same way (see
``gateway/kernel.pyx``): the response bytes; or (response bytes, overrides);
or ``PUNT`` / ``INVALID`` for a request to be explained by protobuf and
``gateway.claims`` (``gateway.servicer``). Both count the lines they decide in
the same arrays (``Counters``), which the metrics export at scrape time.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from contract.domain import Channel, Decision, Reason
from contract.errors import InvalidRequestError
from gateway.decide import Override, Policy
from gateway.index import Index, LayeredIndex, StatusIndex
from gateway.reference import check_claim
from proto.eligibility.v1 import eligibility_pb2 as pb

log = logging.getLogger(__name__)

try:
    from gateway import kernel  # type: ignore[attr-defined]  # compiled: no stubs
except ImportError as exc:  # not built: the gateway refuses to start (gateway.server)
    kernel = None
    KERNEL_MISSING = f"{exc}"
else:
    KERNEL_MISSING = ""

# What check() returns instead of an answer (gateway/kernel.pyx).
PUNT = 1
INVALID = 2
Result = bytes | tuple[bytes, list[Override]] | int

# Upper bounds of the lines-per-claim buckets: POS baskets to big HIS claims
# (the kernel's bucket_of has the same bounds; tests/test_kernel.py checks).
LINES_BUCKETS: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
N_DECISIONS = len(Decision)
N_REASONS = len(Reason)
Int64s = npt.NDArray[np.int64]
INT64_MAX = 2**63 - 1


class Counters(Protocol):
    """Per channel (0 hospital, 1 pharmacy): lines by decision * N_REASONS +
    reason, rejected amounts by reason (fen), claims by size bucket (not
    cumulative; the last is +Inf) and lines in all."""

    @property
    def lines_decided(self) -> Int64s: ...
    @property
    def rejected_fen(self) -> Int64s: ...
    @property
    def claim_buckets(self) -> Int64s: ...
    @property
    def claim_lines_sum(self) -> Int64s: ...


class ClaimPath(Protocol):
    compiled: bool

    @property
    def counters(self) -> Counters: ...

    def prepare(self, index: Index) -> None:
        """Build what ``check`` needs of ``index`` (before it serves)."""

    def check(self, index: Index, data: bytes, today_day: int) -> Result: ...


class CompiledPath:
    compiled = True

    def __init__(self, policy: Policy, max_lines: int) -> None:
        if kernel is None:
            raise ValueError(
                f"the compiled claim path gateway.kernel is not built ({KERNEL_MISSING}): run "
                "`make setup` (or `pip install -e .`; it needs gcc and the Python headers), or "
                "start with --pure-python to decide claims with the slow Python reference"
            )
        self.kernel = kernel.ClaimKernel(
            check_registered_at_institution=policy.check_registered_at_institution,
            emergency_covers_terminated=policy.emergency_covers_terminated,
            max_lines=max_lines,
        )
        self._check = self.kernel.check

    @property
    def counters(self) -> Counters:
        return self.kernel  # type: ignore[no-any-return]

    def prepare(self, index: Index) -> None:
        view_of(index)

    def check(self, index: Index, data: bytes, today_day: int) -> Result:
        view = index.compiled
        if view is None:
            view = view_of(index)
        return self._check(view, data, today_day)  # type: ignore[no-any-return]


def view_of(index: Index) -> Any:
    """The kernel's view of ``index``, built once: the snapshot's packed
    records (shared by every index over that snapshot) and the overlay's."""
    assert kernel is not None
    if index.compiled is not None:
        return index.compiled
    if isinstance(index, LayeredIndex):
        base, overlay = index.base, index.overlay
    elif isinstance(index, StatusIndex):
        base, overlay = index, None
    else:
        raise TypeError(f"no compiled view of {type(index).__name__}")
    if base.packed is None:
        if base.share_packed is None:
            base.packed = kernel.PackedIndex(base.arrays)
        else:  # several workers: one table for all, in shared memory
            arrays = base.arrays
            table = base.share_packed(lambda: kernel.PackedIndex(arrays).table_words)
            base.packed = kernel.PackedIndex(arrays, table)
    packed_overlay = (
        kernel.PackedIndex(overlay.arrays) if overlay is not None and len(overlay) else None
    )
    index.compiled = kernel.IndexView(base.packed, packed_overlay, index.version)
    return index.compiled


class PurePath:
    """The reference in Python (``--pure-python``): the same answers, slower."""

    compiled = False

    def __init__(self, policy: Policy, max_lines: int) -> None:
        self.policy = policy
        self.max_lines = max_lines
        self.lines_decided = np.zeros((2, N_DECISIONS * N_REASONS), dtype=np.int64)
        self.rejected_fen = np.zeros((2, N_REASONS), dtype=np.int64)
        self.claim_buckets = np.zeros((2, len(LINES_BUCKETS) + 1), dtype=np.int64)
        self.claim_lines_sum = np.zeros(2, dtype=np.int64)

    @property
    def counters(self) -> Counters:
        return self

    def prepare(self, index: Index) -> None:
        pass

    def check(self, index: Index, data: bytes, today_day: int) -> Result:
        try:
            request = pb.CheckClaimRequest.FromString(data)
            response, overrides = check_claim(
                index, self.policy, request, max_lines=self.max_lines, today_day=today_day
            )
        except DecodeError:
            return PUNT
        except InvalidRequestError:
            return INVALID
        channel = 1 if int(request.channel) == Channel.PHARMACY else 0
        for line, decided in zip(request.lines, response.lines, strict=True):
            self.lines_decided[channel, decided.decision * N_REASONS + decided.reason] += 1
            if int(decided.decision) == Decision.REJECT:  # saturating, as the kernel's
                total = int(self.rejected_fen[channel, decided.reason]) + line.amount_fen
                self.rejected_fen[channel, decided.reason] = min(total, INT64_MAX)
        n = len(request.lines)
        self.claim_buckets[channel, sum(1 for b in LINES_BUCKETS if n > b)] += 1
        self.claim_lines_sum[channel] += n
        data = response.SerializeToString()
        return (data, overrides) if overrides else data


def claim_path(policy: Policy, max_lines: int, *, pure_python: bool) -> ClaimPath:
    if pure_python:
        log.warning(
            "--pure-python: claims are decided by the Python reference, not the compiled "
            "claim path: correct but several times slower (eligibility_pure_python 1)"
        )
        return PurePath(policy, max_lines)
    return CompiledPath(policy, max_lines)
