"""Points policies: the shipped files, loading by name or path, and a clear
error for every kind of bad file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from loader.policy import POLICY_DIR, PolicyError, available_policies, load_policy, parse_policy


def national_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((POLICY_DIR / "national.json").read_text(encoding="utf-8"))
    return doc


def jiangxi_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((POLICY_DIR / "jiangxi.json").read_text(encoding="utf-8"))
    return doc


def test_shipped_policies() -> None:
    assert {"national", "jiangxi"} <= set(available_policies())
    national = load_policy("national")
    assert (national.warn_at, national.suspend_at, national.terminate_at) == (6, 9, 12)
    assert (national.score_min, national.score_max) == (1, 12)
    assert national.needs_event_months and (national.min_months, national.max_months) == (1, 6)
    assert (national.bar_years_accumulated, national.bar_years_single_event) == (1, 3)
    jiangxi = load_policy("jiangxi")
    assert not jiangxi.needs_event_months
    assert dict(jiangxi.months_by_year_total) == {9: 1, 10: 3, 11: 5}
    assert dict(jiangxi.months_by_single_event) == {9: 2, 10: 4, 11: 6}


def test_every_shipped_policy_is_valid() -> None:
    for name in available_policies():
        assert load_policy(name).name == name


@pytest.mark.parametrize(
    ("total", "event_points", "event_months", "national", "jiangxi"),
    [
        (9, 4, 3, 3, 1),  # accumulated to 9
        (10, 5, 2, 2, 3),
        (11, 2, 6, 6, 5),
        (9, 9, 1, 1, 2),  # one event alone carrying 9
        (10, 10, 1, 1, 4),
        (11, 11, 1, 1, 6),
        (11, 9, 1, 1, 5),  # 2 + 9: the longer of 5 (total) and 2 (single)
        (11, 10, 1, 1, 5),  # 1 + 10: the longer of 5 and 4
    ],
)
def test_suspension_months(
    total: int, event_points: int, event_months: int, national: int, jiangxi: int
) -> None:
    assert load_policy("national").suspension_months(total, event_points, event_months) == national
    assert load_policy("jiangxi").suspension_months(total, event_points, event_months) == jiangxi


def test_bar_years() -> None:
    policy = load_policy("national")
    assert policy.bar_years(12) == 3
    assert policy.bar_years(11) == 1
    assert "一次性记满" in policy.bar_label(12) and "累计记满" in policy.bar_label(3)


def test_load_by_path_and_a_new_province_is_just_a_file(tmp_path: Path) -> None:
    doc = jiangxi_doc()
    doc["name"] = "zhejiang"
    doc["suspension"]["by_year_total"] = {"9": 2, "10": 3, "11": 4}
    path = tmp_path / "zhejiang.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    policy = load_policy(path)
    assert policy.name == "zhejiang"
    assert policy.suspension_months(10, 3, 0) == 3
    assert load_policy(str(path)).name == "zhejiang"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(PolicyError) as err:
        load_policy("atlantis")
    assert err.value.field == "name"
    assert "no policy 'atlantis'; known: " in err.value.reason and "national" in err.value.reason


def test_bad_name() -> None:
    with pytest.raises(PolicyError, match="not a policy name"):
        load_policy("Not A Name")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "schema": "points-policy/1",\n  oops\n}', encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_policy(bad)
    assert (err.value.file, err.value.line, err.value.field) == (str(bad), 3, "json")


def test_name_must_match_the_file(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps(national_doc()), encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert err.value.field == "name" and "differs from the file name" in err.value.reason


def _set(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = dotted.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()

BAD = [
    (national_doc, "schema", "points-policy/2", "schema", "is not 'points-policy/1'"),
    (national_doc, "name", "Bad Name", "name", "must match"),
    (national_doc, "title", "", "title", "non-empty string"),
    (national_doc, "thresholds.warn", _DELETE, "thresholds.warn", "missing"),
    (national_doc, "thresholds.typo", 3, "thresholds.typo", "unknown key"),
    (national_doc, "thresholds.suspend", 6, "thresholds.suspend", "6 is outside >= 7"),
    (national_doc, "thresholds.terminate", 9, "thresholds.terminate", "9 is outside >= 10"),
    (national_doc, "thresholds.warn", True, "thresholds.warn", "must be an integer"),
    (national_doc, "thresholds.warn", "6", "thresholds.warn", "must be an integer"),
    (national_doc, "score_points", [1, 12], "score_points", "must be an object"),
    (national_doc, "score_points.min", 0, "score_points.min", "outside >= 1"),
    (national_doc, "suspension.months_from", "law", "suspension.months_from", "'event' or"),
    (national_doc, "suspension.max_months", 13, "suspension.max_months", "outside 1..12"),
    (national_doc, "suspension.by_year_total", {}, "suspension.by_year_total", "unknown key"),
    (
        jiangxi_doc,
        "suspension.by_year_total.10",
        _DELETE,
        "suspension.by_year_total",
        "no length for year totals [10]",
    ),
    (
        jiangxi_doc,
        "suspension.by_year_total.12",
        6,
        "suspension.by_year_total.12",
        "key must be a point total in 9..11",
    ),
    (
        jiangxi_doc,
        "suspension.by_single_event.9",
        7,
        "suspension.by_single_event.9",
        "7 is outside 1..6",
    ),
    (jiangxi_doc, "suspension.by_single_event", _DELETE, "suspension.by_single_event", "missing"),
    (
        national_doc,
        "reregistration_bar_years.single_event",
        0,
        "reregistration_bar_years.single_event",
        "outside 1..100",
    ),
]


@pytest.mark.parametrize(("make", "key", "value", "field", "reason"), BAD, ids=[b[1] for b in BAD])
def test_bad_policies_name_the_key(
    make: Any, key: str, value: Any, field: str, reason: str
) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(_set(make(), key, value), "p.json")
    assert (err.value.file, err.value.field) == ("p.json", field)
    assert reason in err.value.reason
    assert f"p.json:0: field {field!r}" in str(err.value)


def test_document_must_be_an_object() -> None:
    with pytest.raises(PolicyError, match="must be an object"):
        parse_policy([1, 2, 3])
