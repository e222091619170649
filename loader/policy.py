"""Points policies (记分规则): the numbers of SPEC §7 as data, one JSON file per
province in ``loader/policies/``. A new province is a new file, not new code.

Schema ``points-policy/1`` (every key is required, unknown keys are refused so
that a typo cannot silently fall back to a default)::

    {
      "schema": "points-policy/1",
      "name": "jiangxi",                      # [a-z0-9_-]+, the file's stem
      "title": "...",                         # free text, shown by `explain`
      "source": "...",                        # the regulation it transcribes
      "score_points": {"min": 1, "max": 12},  # allowed points of one SCORE
      "thresholds": {"warn": 6, "suspend": 9, "terminate": 12},
      "suspension": {
        "months_from": "event" | "table",
        "min_months": 1, "max_months": 6,     # allowed suspension lengths
        # only with "table" (keys are year totals / event points as strings):
        "by_year_total":   {"9": 1, "10": 3, "11": 5},
        "by_single_event": {"9": 2, "10": 4, "11": 6}
      },
      "reregistration_bar_years": {"accumulated": 1, "single_event": 3}
    }

Meaning:

- ``thresholds``: year total >= ``warn`` is WARNED, >= ``suspend`` suspends,
  >= ``terminate`` terminates; ``0 < warn < suspend < terminate``.
- ``suspension.months_from = "event"`` (national): the length is the
  triggering event's ``suspension_months``, which must lie in
  ``min_months..max_months``. ``"table"`` (Jiangxi): the length is
  ``by_year_total[year total]``, or ``by_single_event[event points]`` when the
  triggering event alone carries at least ``suspend`` points, whichever is
  longer (江西: 累计 9/10/11 分暂停 1/3/5 个月, 一次记 9/10/11 分暂停 2/4/6
  个月). ``by_year_total`` must name every total from ``suspend`` to
  ``terminate - 1``; ``by_single_event`` only point values in that range.
- ``reregistration_bar_years``: after a termination, re-registration is barred
  for ``single_event`` years when the terminating event alone carries at least
  ``terminate`` points (一次性记满), otherwise for ``accumulated`` years
  (累计记满).

A bad file raises ``PolicyError`` (a ``LoadError`` whose ``field`` is the
dotted path of the bad key; ``line`` is 0 because positions inside a JSON
document are not tracked, except for syntax errors).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from contract.errors import LoadError

SCHEMA = "points-policy/1"
POLICY_DIR = Path(__file__).resolve().parent / "policies"
_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
# Suspensions are "1-6 calendar months" in the national opinion; a province may
# narrow the range but not leave 1..12, which keeps a typo from meaning years.
_MONTHS_LIMIT = 12

MonthsFrom = Literal["event", "table"]


class PolicyError(LoadError):
    """A policy file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Policy:
    """One province's points rules, validated."""

    name: str
    title: str
    source: str
    score_min: int
    score_max: int
    warn_at: int
    suspend_at: int
    terminate_at: int
    months_from: MonthsFrom
    min_months: int
    max_months: int
    months_by_year_total: Mapping[int, int]
    months_by_single_event: Mapping[int, int]
    bar_years_accumulated: int
    bar_years_single_event: int

    @property
    def needs_event_months(self) -> bool:
        """True when a suspending event must carry ``suspension_months``."""
        return self.months_from == "event"

    def suspension_months(self, year_total: int, event_points: int, event_months: int) -> int:
        """Months of suspension for a SCORE that leaves ``year_total`` in the
        suspension band. ``event_months`` is the event's ``suspension_months``
        (0 when absent); under an "event" policy the caller must have checked
        that it is present."""
        if self.months_from == "event":
            return event_months
        months = self.months_by_year_total[year_total]
        single = self.months_by_single_event.get(event_points)
        if single is not None and event_points >= self.suspend_at:
            # The aggravated single-event length applies when it is longer.
            months = max(months, single)
        return months

    def bar_years(self, event_points: int) -> int:
        """Years re-registration is barred after a termination by an event of
        ``event_points`` points."""
        if event_points >= self.terminate_at:
            return self.bar_years_single_event
        return self.bar_years_accumulated

    def bar_label(self, event_points: int) -> str:
        if event_points >= self.terminate_at:
            years = self.bar_years_single_event
            return f"{years}-year bar (一次性记满: one event of {event_points} points)"
        return f"{self.bar_years_accumulated}-year bar (累计记满: accumulated)"


def available_policies() -> list[str]:
    """Names of the policies shipped in ``loader/policies``."""
    return sorted(p.stem for p in POLICY_DIR.glob("*.json"))


def load_policy(name_or_path: str | Path) -> Policy:
    """Load and validate a policy by name (``"national"``, ``"jiangxi"``) or by
    path to a JSON file; raise ``PolicyError`` naming the file and the key."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".json") or "/" in text:
        path = Path(name_or_path)
    elif _NAME.match(text):
        path = POLICY_DIR / f"{text}.json"
        if not path.exists():
            known = ", ".join(available_policies())
            raise PolicyError(str(path), 0, "name", f"no policy {text!r}; known: {known}")
    else:
        raise PolicyError(text, 0, "name", "not a policy name ([a-z0-9_-]+) or a .json path")
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), 0, "file", f"cannot read: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PolicyError(str(path), exc.lineno, "json", exc.msg) from exc
    policy = parse_policy(doc, str(path))
    if policy.name != path.stem:
        # One name, one file: `--policy jiangxi` must never load other rules.
        raise PolicyError(str(path), 0, "name", f"{policy.name!r} differs from the file name")
    return policy


def parse_policy(doc: Any, file: str = "<policy>") -> Policy:
    """Validate a decoded policy document; raise ``PolicyError``."""
    v = _Validator(file)
    top = v.obj(
        doc,
        "",
        {
            "schema",
            "name",
            "title",
            "source",
            "score_points",
            "thresholds",
            "suspension",
            "reregistration_bar_years",
        },
    )
    if top["schema"] != SCHEMA:
        v.fail("schema", f"{top['schema']!r} is not {SCHEMA!r}")
    name = v.text(top["name"], "name")
    if not _NAME.match(name):
        v.fail("name", f"{name!r} must match [a-z0-9_-]{{1,64}}")

    score = v.obj(top["score_points"], "score_points", {"min", "max"})
    score_min = v.integer(score["min"], "score_points.min", 1)
    score_max = v.integer(score["max"], "score_points.max", score_min)

    th = v.obj(top["thresholds"], "thresholds", {"warn", "suspend", "terminate"})
    warn = v.integer(th["warn"], "thresholds.warn", 1)
    suspend = v.integer(th["suspend"], "thresholds.suspend", warn + 1)
    terminate = v.integer(th["terminate"], "thresholds.terminate", suspend + 1)

    susp = top["suspension"]
    months_from: MonthsFrom
    given = v.obj(susp, "suspension", None).get("months_from")
    if given == "event":
        months_from = "event"
        susp = v.obj(susp, "suspension", {"months_from", "min_months", "max_months"})
    elif given == "table":
        months_from = "table"
        keys = {"months_from", "min_months", "max_months", "by_year_total", "by_single_event"}
        susp = v.obj(susp, "suspension", keys)
    else:
        v.fail("suspension.months_from", f"{given!r} must be 'event' or 'table'")
    min_months = v.integer(susp["min_months"], "suspension.min_months", 1, _MONTHS_LIMIT)
    max_months = v.integer(susp["max_months"], "suspension.max_months", min_months, _MONTHS_LIMIT)
    by_total: dict[int, int] = {}
    by_single: dict[int, int] = {}
    if months_from == "table":
        band = range(suspend, terminate)
        by_total = v.table(
            susp["by_year_total"], "suspension.by_year_total", band, min_months, max_months
        )
        missing = [t for t in band if t not in by_total]
        if missing:
            v.fail("suspension.by_year_total", f"no length for year totals {missing}")
        by_single = v.table(
            susp["by_single_event"], "suspension.by_single_event", band, min_months, max_months
        )

    bar = v.obj(
        top["reregistration_bar_years"], "reregistration_bar_years", {"accumulated", "single_event"}
    )
    return Policy(
        name=name,
        title=v.text(top["title"], "title"),
        source=v.text(top["source"], "source"),
        score_min=score_min,
        score_max=score_max,
        warn_at=warn,
        suspend_at=suspend,
        terminate_at=terminate,
        months_from=months_from,
        min_months=min_months,
        max_months=max_months,
        months_by_year_total=by_total,
        months_by_single_event=by_single,
        bar_years_accumulated=v.integer(
            bar["accumulated"], "reregistration_bar_years.accumulated", 1, 100
        ),
        bar_years_single_event=v.integer(
            bar["single_event"], "reregistration_bar_years.single_event", 1, 100
        ),
    )


class _Validator:
    """Small typed accessors that raise ``PolicyError`` naming the key."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, field: str, reason: str) -> NoReturn:
        raise PolicyError(self.file, 0, field or "<document>", reason)

    def obj(self, value: Any, field: str, keys: set[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, f"must be an object, not {type(value).__name__}")
        if keys is not None:
            missing = sorted(keys - value.keys())
            unknown = sorted(value.keys() - keys)
            prefix = f"{field}." if field else ""
            if missing:
                self.fail(f"{prefix}{missing[0]}", "missing")
            if unknown:
                self.fail(
                    f"{prefix}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(keys))})"
                )
        return value

    def integer(self, value: Any, field: str, low: int, high: int | None = None) -> int:
        # bool is an int in Python; `true` is never a valid count here.
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be an integer, not {value!r}")
        if value < low or (high is not None and value > high):
            shown = f"{low}..{high}" if high is not None else f">= {low}"
            self.fail(field, f"{value} is outside {shown}")
        return value

    def text(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(field, "must be a non-empty string")
        return value

    def table(self, value: Any, field: str, band: range, low: int, high: int) -> dict[int, int]:
        table: dict[int, int] = {}
        for key, months in self.obj(value, field, None).items():
            if not (key.isascii() and key.isdigit()) or int(key) not in band:
                self.fail(
                    f"{field}.{key}", f"key must be a point total in {band.start}..{band.stop - 1}"
                )
            table[int(key)] = self.integer(months, f"{field}.{key}", low, high)
        return table
