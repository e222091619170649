"""Per-institution report: what share of an institution's registered staff
is suspended or terminated on a day. Pure: snapshot arrays in, rows out.

Staff of an institution on day D: the practitioners with a registration at
that institution covering D (registered_on <= D < deregistered_on), each
counted once even with several registrations there. Of them, the report
counts those SUSPENDED and those TERMINATED on D (the index's status on D,
as the decisions see it). A practitioner registered at two institutions
counts at both. Vectorised over all registrations: a few seconds for a
national snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract import codes
from contract.days import DAY_NONE
from contract.domain import Status
from contract.snapshot import Arrays
from gateway.index import StatusIndex


@dataclass(frozen=True)
class InstitutionShare:
    institution_code: str
    staff: int
    suspended: int
    terminated: int

    @property
    def sanctioned(self) -> int:
        return self.suspended + self.terminated

    @property
    def share(self) -> float:
        return self.sanctioned / self.staff if self.staff else 0.0


def sanction_shares(arrays: Arrays, day: int) -> list[InstitutionShare]:
    """One row per institution with staff on ``day``, highest share first
    (ties: most sanctioned staff, then institution code)."""
    index = StatusIndex(arrays, version=0)
    n = len(index)
    n_inst = len(index.inst_codes)
    if n == 0 or n_inst == 0:
        return []
    offsets = index.reg_offsets.astype(np.int64)
    row_of_reg = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    reg_until = index.reg_until
    active = (index.reg_from <= day) & ((reg_until == DAY_NONE) | (day < reg_until))
    # Each (practitioner, institution) once.
    pairs = np.unique(row_of_reg[active] * n_inst + index.reg_inst[active].astype(np.int64))
    rows = pairs // n_inst
    inst = pairs % n_inst
    status = index.lookup(rows, np.full(len(rows), day, dtype=np.int64), -1).status
    staff = np.bincount(inst, minlength=n_inst)
    suspended = np.bincount(inst[status == Status.SUSPENDED], minlength=n_inst)
    terminated = np.bincount(inst[status == Status.TERMINATED], minlength=n_inst)
    shares = [
        InstitutionShare(codes.decode_institution(int(index.inst_codes[i])), s, su, te)
        for i, s, su, te in zip(
            range(n_inst), staff.tolist(), suspended.tolist(), terminated.tolist(), strict=True
        )
        if s > 0
    ]
    shares.sort(key=lambda r: (-r.share, -r.sanctioned, r.institution_code))
    return shares
