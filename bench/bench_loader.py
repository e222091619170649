"""The loader at national scale (SPEC §8, issue 3): a 15-million-row registry
and a 1-million-event scoring ledger turned into published data by
``python -m loader load --registry R --ledger L --policy national`` against
a private redis-server (never 6379). Target: <= 60 s end to end.

    python -m bench.bench_loader [--rows 15000000] [--events 1000000] [--keep DIR]

The registry is the national data set's registrations (``bench.national``,
~12.7 million practitioners for 15 million rows) written as CSV with
pyarrow; the ledger scores ~500,000 practitioners with one to three events
each (tiers 1-3: 70 %, 4-6: 20 %, 7-9: 8 %, 10-12: 2 %), plus REPAIRs (5 %)
and REVOKEs of an earlier SCORE (1 %), over the last two years. Only the
``loader load`` run is timed; writing the files is not.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv

from bench.national import PROFESSIONS, NationalData, national_data
from bench.processes import ROOT
from contract import codes
from contract.days import DAY_NONE
from gateway.ops.redis_process import RedisProcess

ROLES = {"D": "doctor", "HJ": "technician", "HY": "pharmacist", "N": "nurse"}


def fixed_strings(prefix: str, numbers: npt.NDArray[np.int64], digits: int) -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` as a pyarrow string array, without a Python loop."""
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    matrix = np.empty((len(numbers), len(head) + digits), dtype=np.uint8)
    matrix[:, : len(head)] = head
    rest = numbers.astype(np.int64)
    for k in range(digits - 1, -1, -1):
        matrix[:, len(head) + k] = rest % 10 + 48
        rest = rest // 10
    width = matrix.shape[1]
    raw = pa.py_buffer(matrix.tobytes())
    offsets = pa.py_buffer((np.arange(len(numbers) + 1, dtype=np.int32) * width).tobytes())
    return pa.Array.from_buffers(pa.string(), len(numbers), [None, offsets, raw])


def practitioner_strings(data: NationalData) -> pa.Array:
    """Every practitioner's code, in row order (one block per profession)."""
    keys = data.arrays["prac_codes"]
    parts = []
    row = 0
    for letters, _, _ in PROFESSIONS:
        base = codes.encode_practitioner(letters + "0" * codes.PRACTITIONER_DIGITS)
        end = int(np.searchsorted(keys, np.uint64(base + 10**codes.PRACTITIONER_DIGITS)))
        digits = (keys[row:end] - np.uint64(base)).astype(np.int64)
        parts.append(fixed_strings(letters, digits, codes.PRACTITIONER_DIGITS))
        row = end
    return pa.concat_arrays(parts)


def institution_strings(data: NationalData) -> pa.Array:
    keys = data.arrays["inst_codes"].astype(np.int64)
    letter = keys // 10**codes.INSTITUTION_DIGITS
    parts = []
    for value in np.unique(letter).tolist():
        chosen = keys[letter == value] % 10**codes.INSTITUTION_DIGITS
        parts.append(fixed_strings(chr(ord("A") - 1 + value), chosen, codes.INSTITUTION_DIGITS))
    return pa.concat_arrays(parts)


def registry_rows(rows: int) -> int:
    """Practitioners whose registrations come to about ``rows`` rows (1.17 each)."""
    return int(rows / 1.173)


def write_registry(data: NationalData, path: Path, rows: int) -> tuple[pa.Array, int]:
    """Write the registry CSV (first ``rows`` registrations); return (codes, rows written)."""
    arrays = data.arrays
    offsets = arrays["reg_offsets"].astype(np.int64)
    n_prac = int(np.searchsorted(offsets, rows, side="right")) - 1
    r = int(offsets[n_prac])
    owner = np.repeat(np.arange(n_prac), np.diff(offsets[: n_prac + 1]))
    prac = practitioner_strings(data)
    inst = institution_strings(data)
    role_of_row = np.empty(data.n_practitioners, dtype=np.int32)
    row = 0
    keys = arrays["prac_codes"]
    for i, (letters, _, _) in enumerate(PROFESSIONS):
        base = codes.encode_practitioner(letters + "0" * codes.PRACTITIONER_DIGITS)
        end = int(np.searchsorted(keys, np.uint64(base + 10**codes.PRACTITIONER_DIGITS)))
        role_of_row[row:end] = i
        row = end
    roles = pa.DictionaryArray.from_arrays(
        pa.array(role_of_row[owner]), pa.array([ROLES[p[0]] for p in PROFESSIONS])
    )
    until = arrays["reg_until"][:r].astype(np.int32)
    table = pa.table(
        {
            "practitioner_code": prac.take(pa.array(owner)),
            "institution_code": inst.take(pa.array(arrays["reg_inst"][:r].astype(np.int64))),
            "role": roles.cast(pa.string()),
            "registered_on": pa.array(arrays["reg_from"][:r].astype(np.int32), pa.date32()),
            "deregistered_on": pa.array(until, pa.date32(), mask=until == DAY_NONE),
        }
    )
    pa_csv.write_csv(table, path)
    return prac, r


def write_ledger(
    data: NationalData, prac: pa.Array, n_prac: int, path: Path, events: int, seed: int = 3
) -> None:
    """Write a scoring ledger of about ``events`` events (see the module docstring)."""
    rng = np.random.default_rng(seed)
    arrays = data.arrays
    offsets = arrays["reg_offsets"].astype(np.int64)
    counts = np.diff(offsets[: n_prac + 1])
    first_from = arrays["reg_from"][offsets[:n_prac]].astype(np.int64)
    today = data.today
    # Single registration that began before every event: no re-registration bar to hit.
    eligible = np.flatnonzero((counts == 1) & (first_from < today - 730))
    n_scores = int(events * 0.94)
    per = rng.choice(np.array([1, 2, 3]), size=n_scores, p=[0.5, 0.3, 0.2])
    per = per[: int(np.searchsorted(np.cumsum(per), n_scores)) + 1]
    people = rng.choice(eligible, size=len(per), replace=False)
    who = np.repeat(people, per)[:n_scores]
    tier = rng.choice(np.array([0, 1, 2, 3]), size=n_scores, p=[0.70, 0.20, 0.08, 0.02])
    points = tier * 3 + rng.integers(1, 4, size=n_scores)
    score_day = today - rng.integers(1, 730, size=n_scores)
    inst = arrays["reg_inst"][offsets[who]].astype(np.int64)
    n_repair = int(events * 0.05)
    repair_rows = rng.integers(0, n_scores, size=n_repair)
    n_revoke = events - n_scores - n_repair
    revoke_rows = rng.choice(n_scores, size=n_revoke, replace=False)

    n = n_scores + n_repair + n_revoke
    kinds = np.concatenate(
        [np.zeros(n_scores, np.int32), np.ones(n_repair, np.int32), np.full(n_revoke, 2, np.int32)]
    )
    rows_who = np.concatenate([who, who[repair_rows], who[revoke_rows]])
    days = np.concatenate(
        [
            score_day,
            np.minimum(score_day[repair_rows] + 30, today - 1),
            np.minimum(score_day[revoke_rows] + 20, today - 1),
        ]
    )
    inst_all = np.concatenate([inst, inst[repair_rows], inst[revoke_rows]])
    pts = np.concatenate([points, rng.integers(1, 4, size=n_repair), np.zeros(n_revoke, np.int64)])
    months = np.concatenate(
        [rng.integers(1, 7, size=n_scores), np.zeros(n_repair + n_revoke, np.int64)]
    )
    event_ids = fixed_strings("E", np.arange(n, dtype=np.int64), 9)
    reference = pa.array([None] * (n_scores + n_repair), pa.string())
    revoked_ids = fixed_strings("E", revoke_rows.astype(np.int64), 9)
    inst_codes = institution_strings(data).take(pa.array(inst_all))
    table = pa.table(
        {
            "event_id": event_ids,
            "practitioner_code": prac.take(pa.array(rows_who)),
            "institution_code": inst_codes,
            "kind": pa.DictionaryArray.from_arrays(
                pa.array(kinds), pa.array(["SCORE", "REPAIR", "REVOKE"])
            ).cast(pa.string()),
            "effective_on": pa.array(days.astype(np.int32), pa.date32()),
            "points": pa.array(pts, pa.int64(), mask=kinds == 2),
            "suspension_months": pa.array(months, pa.int64(), mask=kinds != 0),
            "reference": pa.concat_arrays([reference, revoked_ids]),
        }
    )
    pa_csv.write_csv(table, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=15_000_000, help="registry rows")
    parser.add_argument("--events", type=int, default=1_000_000, help="ledger events")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-loader-"))
    workdir.mkdir(parents=True, exist_ok=True)
    registry, ledger = workdir / "registry.csv", workdir / "ledger.csv"
    try:
        started = time.perf_counter()
        data = national_data(registry_rows(args.rows) + 1)
        prac, rows = write_registry(data, registry, args.rows)
        n_prac = int(np.searchsorted(data.arrays["reg_offsets"], rows, side="right")) - 1
        write_ledger(data, prac, n_prac, ledger, args.events)
        del data, prac
        print(
            f"wrote {rows:,} registry rows ({registry.stat().st_size / 1e6:.0f} MB) and "
            f"{args.events:,} ledger events ({ledger.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - started:.1f} s (not timed)",
            flush=True,
        )
        with RedisProcess() as server:
            argv = [
                sys.executable, "-m", "loader", "load", "--registry", str(registry),
                "--ledger", str(ledger), "--policy", "national",
                "--redis-url", server.url, "--prefix", "bench",
            ]  # fmt: skip
            started = time.perf_counter()
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
        print(done.stdout, end="")
        if done.returncode != 0:
            sys.exit(f"loader failed ({done.returncode}): {done.stderr[-3000:]}")
        print(f"loader load, end to end: {elapsed:.1f} s  (target <= 60 s)")
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
