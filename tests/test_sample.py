"""loader.sample: deterministic, valid, covering every status, with the FIXED codes."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from contract.codes import decode_practitioner, encode_institution, encode_practitioner
from contract.days import DAY_NONE, date_to_day
from contract.domain import Status
from loader.cli import build_parser
from loader.pipeline import Inputs, build_snapshot, read_inputs
from loader.sample import FIXED, MAX_PRACTITIONERS, generate_sample, write_sample
from loader.timeline import status_on

TODAY = dt.date(2025, 7, 15)


@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    files = write_sample(tmp_path_factory.mktemp("sample"), practitioners=3000, today=TODAY)
    return read_inputs(files.registry, files.status)


def registered_at(inputs: Inputs, code: str, day: int) -> set[str]:
    """Institutions where ``code`` is registered on ``day``."""
    r = inputs.registry
    mine = (
        (r.practitioner == encode_practitioner(code))
        & (r.registered_on <= day)
        & (day < r.deregistered_on)
    )
    return {
        inst
        for inst in ("H11010500001", "H11010500002", "P11010500001", "P11010500002")
        if (r.institution[mine] == encode_institution(inst)).any()
    }


def status_of(inputs: Inputs, code: str, offset: int) -> tuple[Status, int]:
    day = date_to_day(TODAY) + offset
    change = status_on(inputs.timelines.get(encode_practitioner(code), []), day)
    return change.status, change.until


def test_same_seed_and_day_give_identical_files(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a", practitioners=300, seed=7, today=TODAY)
    b = write_sample(tmp_path / "b", practitioners=300, seed=7, today=TODAY)
    c = write_sample(tmp_path / "c", practitioners=300, seed=8, today=TODAY)
    assert a.registry.read_bytes() == b.registry.read_bytes()
    assert a.status.read_bytes() == b.status.read_bytes()
    assert a.registry.read_bytes() != c.registry.read_bytes()


def test_fixed_practitioners_today(sample_inputs: Inputs) -> None:
    today = date_to_day(TODAY)
    f = FIXED
    assert status_of(sample_inputs, f.active_doctor, 0) == (Status.ACTIVE, DAY_NONE)
    assert registered_at(sample_inputs, f.active_doctor, today) == {f.hospital}
    assert status_of(sample_inputs, f.warned_doctor, 0)[0] == Status.WARNED
    assert status_of(sample_inputs, f.suspended_doctor, 0) == (
        Status.SUSPENDED,
        today + f.suspended_until_offset,
    )
    assert registered_at(sample_inputs, f.suspended_doctor, today) == {
        f.hospital,
        f.second_hospital,
    }
    assert status_of(sample_inputs, f.terminated_doctor, 0)[0] == Status.TERMINATED
    assert registered_at(sample_inputs, f.deregistered_doctor, today) == set()
    assert registered_at(sample_inputs, f.deregistered_doctor, today - 400) == {f.hospital}
    assert status_of(sample_inputs, f.formerly_suspended_nurse, 0)[0] == Status.ACTIVE
    assert status_of(sample_inputs, f.formerly_suspended_nurse, -150)[0] == Status.SUSPENDED
    assert status_of(sample_inputs, f.future_suspended_doctor, 0)[0] == Status.ACTIVE
    assert status_of(sample_inputs, f.future_suspended_doctor, 20)[0] == Status.SUSPENDED
    assert registered_at(sample_inputs, f.second_hospital_doctor, today) == {f.second_hospital}
    assert registered_at(sample_inputs, f.technician, today) == {f.hospital}
    assert registered_at(sample_inputs, f.active_principal, today) == {f.pharmacy}
    assert status_of(sample_inputs, f.active_principal, 0)[0] == Status.ACTIVE
    assert registered_at(sample_inputs, f.suspended_principal, today) == {
        f.pharmacy_with_suspended_principal
    }
    assert status_of(sample_inputs, f.suspended_principal, 0)[0] == Status.SUSPENDED
    assert registered_at(sample_inputs, f.pharmacist, today) == {f.pharmacy}


def test_every_status_and_kind_is_covered(sample_inputs: Inputs) -> None:
    today = date_to_day(TODAY)
    registry = sample_inputs.registry
    today_counts = Counter(
        status_on(changes, today).status for changes in sample_inputs.timelines.values()
    )
    for status in (Status.WARNED, Status.SUSPENDED, Status.TERMINATED, Status.ACTIVE):
        assert today_counts[status] > 0, status
    ever = Counter(c.status for changes in sample_inputs.timelines.values() for c in changes)
    assert ever[Status.SUSPENDED] > 20
    # Suspensions in the past, covering today and in the future.
    starts = [
        c.day
        for changes in sample_inputs.timelines.values()
        for c in changes
        if c.status == Status.SUSPENDED
    ]
    assert min(starts) < today - 100 and max(starts) > today
    # NOT_REGISTERED: practitioners with no registration covering today.
    covering = (registry.registered_on <= today) & (today < registry.deregistered_on)
    registered_today = set(registry.practitioner[covering].tolist())
    assert len(set(registry.practitioner.tolist()) - registered_today) > 10
    letters = Counter(
        decode_practitioner(k).rstrip("0123456789") for k in registry.practitioners.tolist()
    )
    assert set(letters) == {"D", "N", "HJ", "HY"}
    per_practitioner = Counter(registry.practitioner.tolist())
    assert set(per_practitioner.values()) == {1, 2, 3}
    institutions = {int(k) for k in np.unique(registry.institution)}
    assert len(institutions) == 200
    principals = registry.role == registry.role_names.index("principal")
    suspended_principals = [
        key
        for key in set(registry.practitioner[principals].tolist())
        if status_on(sample_inputs.timelines.get(key, []), today).status == Status.SUSPENDED
    ]
    assert len(suspended_principals) >= 3


def test_csv_and_jsonl_samples_build_the_same_snapshot(tmp_path: Path) -> None:
    csv_files = write_sample(tmp_path / "csv", practitioners=500, today=TODAY)
    jsonl_files = write_sample(
        tmp_path / "jsonl", practitioners=500, file_format="jsonl", today=TODAY
    )
    assert jsonl_files.registry.name == "registry.jsonl"
    a, _ = build_snapshot(read_inputs(csv_files.registry, csv_files.status))
    b, _ = build_snapshot(read_inputs(jsonl_files.registry, jsonl_files.status))
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.parametrize(
    "today", [dt.date(2024, 1, 1), dt.date(2024, 2, 29), dt.date(2025, 12, 31), None]
)
def test_sample_is_valid_whatever_the_day(tmp_path: Path, today: dt.date | None) -> None:
    files = write_sample(tmp_path, practitioners=400, seed=3, today=today)
    inputs = read_inputs(files.registry, files.status)
    assert len(inputs.registry) == files.registry_records
    build_snapshot(inputs)


def test_rows_and_bounds() -> None:
    data = generate_sample(practitioners=0, today=TODAY)
    codes = {row["practitioner_code"] for row in data.registry}
    assert FIXED.active_doctor in codes
    with pytest.raises(ValueError):
        generate_sample(practitioners=-1)


@pytest.mark.parametrize("count", ["1000000", "-1", "many"])
def test_the_cli_refuses_a_count_out_of_range_before_writing(
    tmp_path: Path, count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sample"
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["sample", "--out", str(out), "--practitioners", count])
    assert info.value.code == 2
    assert f"argument --practitioners: {count if count == 'many' else int(count)}" in (
        capsys.readouterr().err.replace("'", "")
    )
    assert not out.exists()
    assert (
        build_parser()
        .parse_args(["sample", "--out", str(out), "--practitioners", str(MAX_PRACTITIONERS)])
        .practitioners
        == MAX_PRACTITIONERS
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_staff_scores_a_termination_the_moves_would_break(seed: int) -> None:
    # 12 points in a year terminate with a re-registration bar, which the
    # random moves broke: the loader refused `sample --practitioners 900000`
    # (seed 3 from 99,470 staff on). The ledger staff stay below 12.
    points: Counter[tuple[str, str]] = Counter()
    for row in generate_sample(practitioners=20_000, seed=seed, today=TODAY).ledger:
        if row["kind"] == "SCORE":
            points[row["practitioner_code"], row["effective_on"][:4]] += int(row["points"])
    assert points and max(points.values()) < 12
