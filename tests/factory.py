"""A deliberately simple, loop-per-practitioner builder of snapshot arrays from
a readable description, for the pure tests of the index and the kernel (and a
second opinion on loader.build's vectorised one)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contract import codes
from contract.days import DAY_NONE, iso_to_day
from contract.domain import Status
from contract.snapshot import DAY_BITS, Arrays
from gateway.index import StatusIndex


def day(iso: str) -> int:
    return iso_to_day(iso)


@dataclass
class Person:
    code: str
    # (institution code, registered_on ISO, deregistered_on ISO or None)
    registrations: list[tuple[str, str, str | None]] = field(default_factory=list)
    # (from ISO, status, last day ISO or None)
    changes: list[tuple[str, Status, str | None]] = field(default_factory=list)
    # (from ISO, the year's points total from that day)
    points: list[tuple[str, int]] = field(default_factory=list)


def build_arrays(people: list[Person]) -> Arrays:
    people = sorted(people, key=lambda p: codes.encode_practitioner(p.code))
    institutions = sorted(
        {codes.encode_institution(inst) for p in people for inst, _, _ in p.registrations}
    )
    inst_row = {key: i for i, key in enumerate(institutions)}
    offsets, reg_inst, reg_from, reg_until = [0], [], [], []
    st_key, st_status, st_until, pt_key, pt_points = [], [], [], [], []
    for row, person in enumerate(people):
        for inst, start, end in sorted(person.registrations, key=lambda r: r[1]):
            reg_inst.append(inst_row[codes.encode_institution(inst)])
            reg_from.append(day(start))
            reg_until.append(day(end) if end else DAY_NONE)
        offsets.append(len(reg_inst))
        for start, status, last in sorted(person.changes):
            st_key.append((row << DAY_BITS) | day(start))
            st_status.append(int(status))
            st_until.append(day(last) if last else DAY_NONE)
        for start, total in sorted(person.points):
            pt_key.append((row << DAY_BITS) | day(start))
            pt_points.append(total)
    return {
        "prac_codes": np.array([codes.encode_practitioner(p.code) for p in people], dtype="<u8"),
        "reg_offsets": np.array(offsets, dtype="<u4"),
        "reg_inst": np.array(reg_inst, dtype="<u4"),
        "reg_from": np.array(reg_from, dtype="<u2"),
        "reg_until": np.array(reg_until, dtype="<u2"),
        "inst_codes": np.array(institutions, dtype="<u8"),
        "st_key": np.array(st_key, dtype="<u8"),
        "st_status": np.array(st_status, dtype="u1"),
        "st_until": np.array(st_until, dtype="<u2"),
        "pt_key": np.array(pt_key, dtype="<u8"),
        "pt_points": np.array(pt_points, dtype="<u2"),
    }


def build_index(people: list[Person], version: int = 1) -> StatusIndex:
    return StatusIndex(build_arrays(people), version)
