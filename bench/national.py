"""A national-scale synthetic data set, built directly as snapshot arrays
(``contract.snapshot``), and claim streams of the two shapes the gateway sees.

Scale and mix (SPEC §1, §3), chosen to look like the national registry:

- ``n`` practitioners (15 million by default): doctors ``D`` 35 %, nurses
  ``N`` 40 %, technicians ``HJ`` 12 %, pharmacy staff ``HY`` 13 %, of which
  the first ``n_pharmacies`` are pharmacy principals. Codes are a 6-digit
  county (one of 3,000) and a 6-digit serial, so they are unique and sorted
  by construction (no sort of 15 million keys).
- 40,000 hospitals (``H``) and ``n // 25`` pharmacies (``P``, 600,000 at
  15 million). Hospital staff are registered at hospitals, pharmacy staff at
  pharmacies; each principal at its own pharmacy.
- Registrations: 85 % of practitioners have one, 12 % two (多点执业 or a
  move: the first one usually ended), 3 % three: ~1.18 per practitioner.
  2 % of single registrations ended in the past (NOT_REGISTERED today).
- Statuses: 1.5 % WARNED this year, 0.3 % SUSPENDED now, 0.1 % TERMINATED,
  0.5 % with a suspension that ran out last year (SUSPENDED, then ACTIVE);
  points change points to match.

Everything is numpy: 15 million practitioners build in a few seconds and
~22 bytes each. Claims are ``CheckClaimRequest`` messages drawn with a seeded
generator: 1-5-line pharmacy baskets (40 % over-the-counter lines, the
pharmacy's own principal) and 20-200-line hospital settlements (a handful of
the hospital's own staff, a few from elsewhere), with 0.1 % malformed codes,
0.5 % unknown practitioners and 2 % emergency lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from contract import codes
from contract.days import DAY_NONE, day_to_yyyymmdd, iso_to_day, today_day
from contract.domain import Status
from contract.snapshot import DAY_BITS, Arrays, validate_arrays
from proto.eligibility.v1 import eligibility_pb2 as pb

NATIONAL_PRACTITIONERS = 15_000_000
N_HOSPITALS = 40_000
N_COUNTIES = 3_000
# (letters, share of practitioners, works at a pharmacy)
PROFESSIONS: tuple[tuple[str, float, bool], ...] = (
    ("D", 0.35, False),
    ("HJ", 0.12, False),
    ("HY", 0.13, True),
    ("N", 0.40, False),
)

U64s = npt.NDArray[np.uint64]
I64s = npt.NDArray[np.int64]


def _letters_base(letters: str) -> int:
    return codes.encode_practitioner(letters + "0" * codes.PRACTITIONER_DIGITS)


@dataclass(frozen=True)
class NationalData:
    """The snapshot arrays plus what claim generation needs to know about them."""

    arrays: Arrays
    today: int  # day number the data is relative to
    pharmacy_staff: tuple[int, int]  # [lo, hi) rows of HY practitioners
    n_pharmacies: int  # rows pharmacy_staff[0] + i is the principal of pharmacy i
    first_pharmacy: int  # row in inst_codes of pharmacy 0 (hospitals come first)

    @property
    def n_practitioners(self) -> int:
        return len(self.arrays["prac_codes"])

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())

    @cached_property
    def hospital_staff(self) -> tuple[I64s, I64s]:
        """(rows sorted by their latest registration's hospital, start of each hospital)."""
        latest = self.arrays["reg_offsets"][1:].astype(np.int64) - 1
        first_inst = self.arrays["reg_inst"][latest].astype(np.int64)
        rows = np.flatnonzero(first_inst < self.first_pharmacy)
        order = np.argsort(first_inst[rows], kind="stable")
        by_hospital = rows[order]
        starts = np.searchsorted(first_inst[by_hospital], np.arange(self.first_pharmacy + 1))
        return by_hospital.astype(np.int64), starts.astype(np.int64)


def national_data(
    n: int = NATIONAL_PRACTITIONERS, *, seed: int = 20260101, today: int | None = None
) -> NationalData:
    """Build the national data set for ``n`` practitioners (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    today = today_day() if today is None else today
    n_pharmacies = max(n // 25, 1)

    # Practitioner codes: letters block by block, each sorted (county, serial).
    prac_parts: list[U64s] = []
    pharmacy_staff = (0, 0)
    row = 0
    for i, (letters, share, _) in enumerate(PROFESSIONS):
        count = n - row if i == len(PROFESSIONS) - 1 else int(n * share)
        per_county = -(-count // N_COUNTIES)
        seq = np.arange(count, dtype=np.uint64)
        county = 110000 + (seq // np.uint64(per_county)) * np.uint64(29)
        serial = seq % np.uint64(per_county)
        prac_parts.append(
            np.uint64(_letters_base(letters)) + county * np.uint64(1_000_000) + serial
        )
        if letters == "HY":
            pharmacy_staff = (row, row + count)
        row += count
    prac_codes = np.concatenate(prac_parts)
    n_pharmacies = min(n_pharmacies, pharmacy_staff[1] - pharmacy_staff[0])

    # Institutions: hospitals first, then pharmacies; both sorted by key.
    hospital_keys = np.uint64(codes.encode_institution("H11010500000")) + np.arange(
        N_HOSPITALS, dtype=np.uint64
    ) * np.uint64(7)
    pharmacy_keys = np.uint64(codes.encode_institution("P11010500000")) + np.arange(
        n_pharmacies, dtype=np.uint64
    ) * np.uint64(3)
    inst_codes = np.concatenate([hospital_keys, pharmacy_keys])

    # Registrations per practitioner: 1 (85 %), 2 (12 %), 3 (3 %).
    counts = rng.choice(np.array([1, 2, 3], dtype=np.int64), size=n, p=[0.85, 0.12, 0.03])
    principals = np.arange(pharmacy_staff[0], pharmacy_staff[0] + n_pharmacies)
    counts[principals] = 1
    reg_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=reg_offsets[1:])
    r = int(reg_offsets[-1])
    owner = np.repeat(np.arange(n, dtype=np.int64), counts)
    slot = np.arange(r, dtype=np.int64) - reg_offsets[owner]
    at_pharmacy = (owner >= pharmacy_staff[0]) & (owner < pharmacy_staff[1])
    reg_inst = np.where(
        at_pharmacy,
        N_HOSPITALS + rng.integers(0, n_pharmacies, size=r),
        rng.integers(0, N_HOSPITALS, size=r),
    )
    principal_regs = reg_offsets[principals]
    reg_inst[principal_regs] = N_HOSPITALS + np.arange(n_pharmacies)

    # Periods: the last registration is open (5 % of single ones ended last
    # year); earlier ones started earlier and mostly ended.
    start_2000 = iso_to_day("2000-01-01")
    reg_from = rng.integers(start_2000, today - 1000, size=r) + slot * 300
    last = slot == counts[owner] - 1
    ended = np.where(last, (counts[owner] == 1) & (rng.random(r) < 0.02), rng.random(r) < 0.8)
    reg_until = np.where(ended, np.minimum(reg_from + 200, today - 30), DAY_NONE)
    reg_until[principal_regs] = DAY_NONE

    # Statuses: a sample of rows with one kind of timeline each.
    n_warned, n_susp, n_term, n_past = (int(n * f) for f in (0.015, 0.003, 0.001, 0.005))
    picked = rng.choice(n, size=n_warned + n_susp + n_term + n_past, replace=False)
    picked = picked[~np.isin(picked, principals[: max(n_pharmacies // 50, 1)])]
    warned, susp, term, past = np.split(picked, np.cumsum([n_warned, n_susp, n_term])[:3].tolist())
    jan1 = iso_to_day(f"{_year_of(today)}-01-01")
    st_rows: list[I64s] = []
    st_days: list[I64s] = []
    st_status: list[I64s] = []
    st_until: list[I64s] = []
    pt_rows: list[I64s] = []
    pt_days: list[I64s] = []
    pt_points: list[I64s] = []

    def add_status(rows: I64s, days: I64s, status: int, until: I64s | int) -> None:
        st_rows.append(rows)
        st_days.append(days)
        st_status.append(np.full(len(rows), status, dtype=np.int64))
        st_until.append(np.broadcast_to(np.asarray(until, dtype=np.int64), rows.shape))

    def add_points(rows: I64s, days: I64s, points: int) -> None:
        pt_rows.append(rows)
        pt_days.append(days)
        pt_points.append(np.full(len(rows), points, dtype=np.int64))

    span = max(today - jan1, 1)
    warned_from = jan1 + rng.integers(0, span, size=len(warned))
    add_status(warned, warned_from, Status.WARNED, DAY_NONE)
    add_points(warned, warned_from, 6)
    susp_from = today - rng.integers(1, 60, size=len(susp))
    susp_until = today + rng.integers(1, 150, size=len(susp))
    add_status(susp, susp_from, Status.SUSPENDED, susp_until)
    add_points(susp, susp_from, 9)
    term_from = today - rng.integers(1, 300, size=len(term))
    add_status(term, term_from, Status.TERMINATED, DAY_NONE)
    add_points(term, term_from, 12)
    past_from = jan1 - 200 + rng.integers(0, 60, size=len(past))
    past_until = past_from + 89
    add_status(past, past_from, Status.SUSPENDED, past_until)
    add_status(past, past_until + 1, Status.ACTIVE, DAY_NONE)
    add_points(past, past_from, 9)

    def keyed(rows: list[I64s], days: list[I64s], *values: list[I64s]) -> list[I64s]:
        key = (np.concatenate(rows).astype(np.uint64) << np.uint64(DAY_BITS)) | np.concatenate(
            days
        ).astype(np.uint64)
        order = np.argsort(key, kind="stable")
        return [key[order].astype(np.int64), *(np.concatenate(v)[order] for v in values)]

    s_key, s_status, s_until = keyed(st_rows, st_days, st_status, st_until)
    p_key, p_points = keyed(pt_rows, pt_days, pt_points)
    arrays: Arrays = {
        "prac_codes": prac_codes.astype("<u8"),
        "reg_offsets": reg_offsets.astype("<u4"),
        "reg_inst": reg_inst.astype("<u4"),
        "reg_from": reg_from.astype("<u2"),
        "reg_until": reg_until.astype("<u2"),
        "inst_codes": inst_codes.astype("<u8"),
        "st_key": s_key.astype("<u8"),
        "st_status": s_status.astype("u1"),
        "st_until": s_until.astype("<u2"),
        "pt_key": p_key.astype("<u8"),
        "pt_points": p_points.astype("<u2"),
    }
    validate_arrays(arrays)
    return NationalData(arrays, today, pharmacy_staff, n_pharmacies, N_HOSPITALS)


def _year_of(day: int) -> int:
    return day_to_yyyymmdd(day) // 10000


class ClaimGenerator:
    """Seeded streams of ``CheckClaimRequest`` over a ``NationalData`` set."""

    def __init__(self, data: NationalData, seed: int = 7) -> None:
        self.data = data
        self.rng = np.random.default_rng(seed)
        self.codes = data.arrays["prac_codes"]
        self.inst_codes = data.arrays["inst_codes"]
        self.today = day_to_yyyymmdd(data.today)
        self._serial = 0

    def _claim_id(self, kind: str) -> str:
        self._serial += 1
        return f"{kind}-{self._serial:010d}"

    def _code(self, row: int) -> str:
        roll = self.rng.random()
        if roll < 0.001:
            return "D1101-BAD"
        if roll < 0.006:  # unknown: a serial past every county's last one
            return codes.decode_practitioner(int(self.codes[row]) + 999_000)
        return codes.decode_practitioner(int(self.codes[row]))

    def _line(self, i: int, code: str) -> pb.ClaimLine:
        return pb.ClaimLine(
            line_id=str(i + 1),
            prescriber_code=code,
            emergency=bool(self.rng.random() < 0.02),
            item_code=f"XB01AC{int(self.rng.integers(0, 10_000)):04d}",
            amount_fen=int(self.rng.integers(100, 500_000)),
        )

    def pharmacy_basket(
        self, n_lines: int | None = None, otc_share: float = 0.4
    ) -> pb.CheckClaimRequest:
        """A POS basket: 1-5 lines (or ``n_lines``), ``otc_share`` over the counter."""
        data = self.data
        n_lines = int(self.rng.integers(1, 6)) if n_lines is None else n_lines
        pharmacy = int(self.rng.integers(0, data.n_pharmacies))
        principal = data.pharmacy_staff[0] + pharmacy
        lines = []
        for i in range(n_lines):
            otc = self.rng.random() < otc_share
            row = int(self.rng.integers(0, data.n_practitioners))
            lines.append(self._line(i, "" if otc else self._code(row)))
        return pb.CheckClaimRequest(
            claim_id=self._claim_id("POS"),
            institution_code=codes.decode_institution(
                int(self.inst_codes[data.first_pharmacy + pharmacy])
            ),
            channel=pb.CHANNEL_PHARMACY,
            principal_code=codes.decode_practitioner(int(self.codes[principal])),
            service_date=self.today,
            lines=lines,
        )

    def hospital_settlement(self, n_lines: int | None = None) -> pb.CheckClaimRequest:
        """A settlement: 20-200 lines (or ``n_lines``) by 2-8 of one hospital's staff."""
        by_hospital, starts = self.data.hospital_staff
        n_lines = int(self.rng.integers(20, 201)) if n_lines is None else n_lines
        while True:
            hospital = int(self.rng.integers(0, self.data.first_pharmacy))
            lo, hi = int(starts[hospital]), int(starts[hospital + 1])
            if hi > lo:
                break
        staff = by_hospital[self.rng.integers(lo, hi, size=int(self.rng.integers(2, 9)))]
        # One line in 20 by someone from elsewhere (a consultant, a mistake).
        outsiders = self.rng.integers(0, self.data.n_practitioners, size=n_lines)
        pick = staff[self.rng.integers(0, len(staff), size=n_lines)]
        rows = np.where(self.rng.random(n_lines) < 0.05, outsiders, pick).tolist()
        lines = [self._line(i, self._code(row)) for i, row in enumerate(rows)]
        return pb.CheckClaimRequest(
            claim_id=self._claim_id("HIS"),
            institution_code=codes.decode_institution(int(self.inst_codes[hospital])),
            channel=pb.CHANNEL_HOSPITAL,
            service_date=self.today,
            lines=lines,
        )

    def claims(
        self, shape: str, count: int, n_lines: int | None = None
    ) -> list[pb.CheckClaimRequest]:
        """``count`` claims of ``shape``: "pharmacy" (baskets), "pharmacy-rx" (baskets
        with a prescriber on every line) or "hospital" (settlements)."""
        if shape == "hospital":
            return [self.hospital_settlement(n_lines) for _ in range(count)]
        otc_share = 0.0 if shape == "pharmacy-rx" else 0.4
        return [self.pharmacy_basket(n_lines, otc_share) for _ in range(count)]
