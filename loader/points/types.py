"""The points engine's data: the ledger it reads (``Ledger``, ``Kind``), the
registry records it needs (``RegistrationStarts``), and what it gives back
(``Replay`` for one practitioner, ``PointsResult`` for the whole ledger,
``BarViolation`` for a registry record inside a re-registration bar,
``ClosedRegistration`` for a registration a termination ended)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from contract.days import DAY_NONE, day_to_iso
from contract.domain import Status
from contract.errors import LoadError
from loader.timeline import StatusChange

U8s = npt.NDArray[np.uint8]
U16s = npt.NDArray[np.uint16]
U64s = npt.NDArray[np.uint64]
I64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

NO_MONTHS = 0  # suspension_months column: not given
NO_EVENT = -1  # revokes column: not a REVOKE
NO_CASE = -1  # case column: no case_id (the event is a case of its own)
POINTS_MAX_STORED = 0xFFFF


class Kind(IntEnum):
    """Ledger event kinds. ``REGISTER`` is internal: a registry record merged
    into a practitioner's replay."""

    REGISTER = 0
    SCORE = 1
    REPAIR = 2
    SHORTEN = 3
    REVOKE = 4


@dataclass(frozen=True, eq=False)
class Ledger:
    """The scoring ledger as columns, one row per line of the file, in file
    order. Built by ``loader.ledger`` (which validates every field)."""

    file: str
    event_id: Sequence[str]
    practitioner: U64s  # contract.codes practitioner keys
    institution: U64s  # contract.codes institution keys
    kind: U8s  # Kind
    points: U16s  # 0 where the kind carries none
    effective_on: U16s  # contract.days day numbers
    suspension_months: U8s  # NO_MONTHS where not given
    reference: Sequence[str]  # the reference text as written
    revokes: I64s  # for a REVOKE: row of the event it revokes; NO_EVENT otherwise
    line: I64s  # line number in ``file``
    case: I64s  # index into ``case_names``; NO_CASE where no case_id is given
    case_names: Sequence[str] = ()  # the distinct case_ids as written

    def __post_init__(self) -> None:
        n = len(self.event_id)
        for name in (
            "practitioner",
            "institution",
            "kind",
            "points",
            "effective_on",
            "suspension_months",
            "reference",
            "revokes",
            "line",
            "case",
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"ledger column {name} has {len(getattr(self, name))} rows, not {n}"
                )

    def __len__(self) -> int:
        return len(self.event_id)

    @staticmethod
    def no_cases(n: int) -> I64s:
        """A ``case`` column for a ledger without case_ids."""
        return np.full(n, NO_CASE, dtype=np.int64)

    def __repr__(self) -> str:
        # A million-row ledger must not print itself into a traceback.
        return f"Ledger({self.file!r}, {len(self)} rows)"


class RegistryColumns(Protocol):
    """The registry columns the re-registration rules read (``loader.registry.Registry``)."""

    @property
    def file(self) -> str: ...
    @property
    def practitioner(self) -> U64s: ...
    @property
    def registered_on(self) -> npt.NDArray[np.uint16]: ...
    @property
    def deregistered_on(self) -> npt.NDArray[np.uint16]: ...
    @property
    def lines(self) -> I64s: ...


@dataclass(frozen=True, eq=False)
class RegistrationStarts:
    """Registry records reduced to what the termination rules need: who,
    ``registered_on`` and ``deregistered_on`` (day numbers; DAY_NONE = open),
    and where in which file. ``deregistered_on`` defaults to open for every
    record; the record's row in the registry's columns is its position here."""

    file: str
    practitioner: U64s
    registered_on: npt.NDArray[np.integer[Any]]
    line: I64s
    deregistered_on: npt.NDArray[np.integer[Any]] = field(
        default_factory=lambda: np.zeros(0, np.uint16)
    )

    def __post_init__(self) -> None:
        if len(self.deregistered_on) != len(self.practitioner):
            if len(self.deregistered_on):
                raise ValueError("deregistered_on has another length than practitioner")
            open_ends = np.full(len(self.practitioner), DAY_NONE, dtype=np.uint16)
            object.__setattr__(self, "deregistered_on", open_ends)

    def __repr__(self) -> str:
        return f"RegistrationStarts({self.file!r}, {len(self.practitioner)} records)"

    @classmethod
    def from_registry(cls, registry: RegistryColumns) -> RegistrationStarts:
        """From ``loader.registry.Registry`` (or anything with those columns)."""
        return cls(
            registry.file,
            registry.practitioner,
            registry.registered_on,
            registry.lines,
            registry.deregistered_on,
        )

    @classmethod
    def empty(cls, file: str = "<no registry>") -> RegistrationStarts:
        return cls(file, np.zeros(0, np.uint64), np.zeros(0, np.uint16), np.zeros(0, np.int64))


@dataclass(frozen=True)
class BarViolation:
    """A registry record whose ``registered_on`` falls inside a re-registration bar."""

    practitioner: int
    registry_file: str
    registry_line: int
    registered_on: int
    terminated_on: int
    bar_end: int  # first day re-registration is allowed
    bar_label: str
    cause: str  # the event that set the bar's end, "E7 (ledger.csv:8)"

    def error(self) -> LoadError:
        last = day_to_iso(self.bar_end - 1)
        return LoadError(
            self.registry_file,
            self.registry_line,
            "registered_on",
            f"{day_to_iso(self.registered_on)} is inside the re-registration "
            f"bar after the termination on {day_to_iso(self.terminated_on)} "
            f"by {self.cause}: {self.bar_label}, barred until {last} "
            f"(re-registration allowed from {day_to_iso(self.bar_end)})",
        )


@dataclass(frozen=True)
class ClosedRegistration:
    """A registry record (``row`` of ``RegistrationStarts``) that a termination
    ends: from ``ends_on`` (its new ``deregistered_on``) it no longer holds."""

    row: int
    ends_on: int


@dataclass(frozen=True)
class Replay:
    """One practitioner's replay: the timelines, the registry records refused,
    whether a termination happened (then registry records matter), and the
    registrations the terminations ended."""

    status_changes: list[StatusChange]
    points_changes: list[tuple[int, int]]
    violations: list[BarViolation]
    terminated: bool = False
    closed: list[ClosedRegistration] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class PointsResult:
    """Timelines of every practitioner with ledger rows, as CSR arrays:
    practitioner ``practitioners[i]`` has status change points
    ``st_*[st_offsets[i]:st_offsets[i+1]]`` and points change points
    ``pt_*[pt_offsets[i]:pt_offsets[i+1]]``, each in increasing day order."""

    policy: str
    practitioners: U64s  # sorted practitioner keys
    st_offsets: I64s
    st_day: U16s
    st_status: U8s
    st_until: U16s
    pt_offsets: I64s
    pt_day: U16s
    pt_points: U16s
    violations: tuple[BarViolation, ...] = ()
    # Registrations ended by terminations: registry rows (positions in the
    # ``RegistrationStarts`` given) and their new ``deregistered_on``, by row.
    closed_rows: I64s = field(default_factory=lambda: np.zeros(0, np.int64))
    closed_on: U16s = field(default_factory=lambda: np.zeros(0, np.uint16))

    def _row(self, key: int) -> int:
        pos = int(np.searchsorted(self.practitioners, np.uint64(key)))
        if pos < len(self.practitioners) and int(self.practitioners[pos]) == key:
            return pos
        return -1

    def status_changes(self, key: int) -> list[StatusChange]:
        """The practitioner's status change points ([] = ACTIVE throughout)."""
        row = self._row(key)
        if row < 0:
            return []
        lo, hi = int(self.st_offsets[row]), int(self.st_offsets[row + 1])
        return [
            StatusChange(int(d), Status(int(s)), int(u))
            for d, s, u in zip(
                self.st_day[lo:hi], self.st_status[lo:hi], self.st_until[lo:hi], strict=True
            )
        ]

    def points_changes(self, key: int) -> list[tuple[int, int]]:
        """The practitioner's ``(day, year total from that day)`` points."""
        row = self._row(key)
        if row < 0:
            return []
        lo, hi = int(self.pt_offsets[row]), int(self.pt_offsets[row + 1])
        return [
            (int(d), int(p)) for d, p in zip(self.pt_day[lo:hi], self.pt_points[lo:hi], strict=True)
        ]

    def timelines(self) -> dict[int, list[StatusChange]]:
        """Status change points by practitioner key, for ``loader.build``;
        practitioners with none (ACTIVE throughout) are left out."""
        out: dict[int, list[StatusChange]] = {}
        off = self.st_offsets.tolist()
        rows = zip(
            self.st_day.tolist(), self.st_status.tolist(), self.st_until.tolist(), strict=True
        )
        status_of = {int(s): s for s in Status}  # faster than Status(s) a million times
        changes = [StatusChange(d, status_of[s], u) for d, s, u in rows]
        for i, key in enumerate(self.practitioners.tolist()):
            if off[i] != off[i + 1]:
                out[key] = changes[off[i] : off[i + 1]]
        return out

    def points_timelines(self) -> dict[int, list[tuple[int, int]]]:
        """Points change points by practitioner key, for ``loader.build``;
        practitioners with none are left out."""
        out: dict[int, list[tuple[int, int]]] = {}
        off = self.pt_offsets.tolist()
        points = list(zip(self.pt_day.tolist(), self.pt_points.tolist(), strict=True))
        for i, key in enumerate(self.practitioners.tolist()):
            if off[i] != off[i + 1]:
                out[key] = points[off[i] : off[i + 1]]
        return out
