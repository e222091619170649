"""The monitoring files in ops/: the Prometheus config and alert rules pass
``promtool`` (check and unit tests), and the Grafana dashboard and the alerts
only use metrics the gateway really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from contract.snapshot import Keys
from gateway.claimpath import CompiledPath
from gateway.decide import Policy
from gateway.feed import SnapshotFollower
from gateway.index import IndexHolder
from gateway.ops.audit import OverrideAudit
from gateway.ops.metrics import GatewayMetrics
from gateway.servicer import EligibilityServicer
from tests.factory import build_index
from tests.gateway_process import ROOT
from tests.ops_data import ACTIVE, PEOPLE, SUSPENDED, hospital_claim, line

PROMETHEUS = ROOT / "ops" / "prometheus"
RUNBOOKS = ROOT / "ops" / "runbooks"
DASHBOARD = ROOT / "ops" / "grafana" / "eligibility-gateway.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package 'prometheus'; `make setup` installs it)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_accepts_the_config_and_rules_and_the_alert_unit_tests_pass() -> None:
    for args in (
        ("check", "config", str(PROMETHEUS / "prometheus.yml")),
        ("check", "rules", str(PROMETHEUS / "alerts.yml")),
        ("test", "rules", str(PROMETHEUS / "alerts_test.yml")),
    ):
        result = promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def exported_names() -> set[str]:
    """Every sample name a gateway exports once it has decided something."""
    holder = IndexHolder()
    holder.swap(build_index(PEOPLE))
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # never connected
    keys = Keys("configs")
    audit = OverrideAudit(client, keys.overrides)
    follower = SnapshotFollower(client, keys, holder)
    follower.last_change_lag_s, follower.last_change_at = 0.01, time.time()  # one change
    path = CompiledPath(Policy(), 10)
    metrics = GatewayMetrics(holder, follower=follower, audit=audit, counters=path.counters)
    assert holder.current is not None
    metrics.index_swapped(holder.current)
    servicer = EligibilityServicer(
        holder, Policy(), max_lines_per_claim=10, overrides=audit, path=path
    )
    servicer.check_claim(hospital_claim("c", line(ACTIVE, "1"), line(SUSPENDED, "2", 5)))
    method = metrics.rpcs.method("eligibility.v1.EligibilityGateway", "CheckClaim")
    metrics.rpcs.finished(method, 0.001, "OK")
    metrics.rpcs.in_flight[method] += 1
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def used_names(text: str) -> set[str]:
    return set(re.findall(r"\beligibility_[a-z_]+\b", text))


def test_the_dashboard_and_the_alerts_use_only_exported_metrics() -> None:
    exported = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    in_dashboard = used_names("\n".join(exprs))
    in_alerts = used_names((PROMETHEUS / "alerts.yml").read_text())
    assert in_dashboard - exported == set()
    assert in_alerts - exported == set()
    # What ops asked for is on the dashboard.
    for name in (
        "eligibility_claim_lines_count",
        "eligibility_rpc_duration_seconds_bucket",
        "eligibility_lines_decided_total",
        "eligibility_emergency_overrides_total",
        "eligibility_index_age_seconds",
        "eligibility_redis_up",
        "eligibility_change_feed_lag_seconds",
    ):
        assert name in in_dashboard, name


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_ops_files_are_where_the_readme_says() -> None:
    readme = (ROOT / "README.md").read_text()
    for path in (DASHBOARD, PROMETHEUS / "prometheus.yml", PROMETHEUS / "alerts.yml"):
        assert Path(path).is_file()
        assert str(path.relative_to(ROOT)) in readme, path


def alert_rules() -> dict[str, str]:
    """Each alert of alerts.yml and the text of its rule (no YAML library here:
    a rule is the lines from its ``- alert:`` to the next)."""
    text = (PROMETHEUS / "alerts.yml").read_text()
    parts = re.split(r"^\s+- alert: (\w+)\n", text, flags=re.MULTILINE)[1:]
    return dict(zip(parts[::2], parts[1::2], strict=True))


def test_every_alert_links_its_runbook_and_every_runbook_has_an_alert() -> None:
    alerts = alert_rules()
    assert len(alerts) == (PROMETHEUS / "alerts.yml").read_text().count("- alert:")
    for name, rule in alerts.items():
        # Relative to the repository root (ops/runbooks/README.md says how to make it a link).
        urls = re.findall(r"^\s+runbook_url: (\S+)$", rule, flags=re.MULTILINE)
        assert urls == [f"ops/runbooks/{name}.md"], name
        text = (ROOT / urls[0]).read_text()
        assert text.startswith(f"# {name}\n"), name
        for section in ("**What it means.**", "**What to check.**", "**What to do.**"):
            assert section in text, (name, section)
    runbooks = {path.stem for path in RUNBOOKS.glob("*.md")} - {"README"}
    assert runbooks == set(alerts)


def test_there_is_an_alert_on_the_snapshot_age() -> None:
    assert "expr: eligibility_index_age_seconds >" in alert_rules()["EligibilitySnapshotOld"]
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    for name in ("EligibilitySnapshotOld", "EligibilityChangeFeedLagging"):
        assert f"alertname: {name}" in tests, name
