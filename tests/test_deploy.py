"""The deployment files beside docker-compose.yml (deploy/prometheus, deploy/grafana): well
formed, and every droneshield metric their expressions name is one the daemon exports, so they
cannot rot as metrics are renamed. The compose profile that runs them is in test_compose.py."""

from __future__ import annotations

import json
import re
import shutil
from typing import Final

import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .support.processes import ROOT

DEPLOY: Final = ROOT / "deploy"
METRIC: Final = re.compile(r"\bdroneshield_[a-z0-9_]+")
SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}
WEBHOOK_METRICS: Final = {
    "droneshield_webhook_deliveries_total",
    "droneshield_outbox_depth",
    "droneshield_outbox_oldest_age_seconds",
}
# Prometheus's own checker (Debian's `prometheus` package): parses the PromQL and the config
# as Prometheus will, which no YAML or regex check here does.
PROMTOOL: Final = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)


@pytest.fixture
async def exported(api) -> set[str]:  # type: ignore[no-untyped-def]
    """Every sample name the running daemon's /metrics can carry (a labelled metric with no
    series yet still announces its family)."""
    with trio.fail_after(10):
        text = (await api.get("/metrics")).text
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names


def _rules() -> list[dict]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _panels() -> list[dict]:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "droneshield.json").read_text())[
        "panels"
    ]


def _unknown(expressions: list[str], exported: set[str]) -> set[str]:
    named = {m for expr in expressions for m in METRIC.findall(expr)}
    return named - exported


async def test_alert_rules_are_complete_and_name_only_exported_metrics(exported):
    rules = _rules()
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
    assert _unknown([r["expr"] for r in rules], exported) == set()
    named = {m for r in rules for m in METRIC.findall(r["expr"])}
    assert {"droneshield_sensors", "droneshield_transitions_total"} <= named
    assert WEBHOOK_METRICS <= named


async def test_grafana_dashboard_panels_name_only_exported_metrics(exported):
    panels = _panels()
    expressions = [t["expr"] for p in panels for t in p["targets"]]
    assert _unknown(expressions, exported) == set()
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["datasource"]["uid"] == "prometheus" for p in panels)
    named = {m for expr in expressions for m in METRIC.findall(expr)}
    assert {"droneshield_sensors", "droneshield_sensors_by_version"} <= named
    assert WEBHOOK_METRICS <= named


def test_prometheus_loads_the_rules_and_grafana_the_dashboard_and_data_source():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    # Beside the config: /etc/prometheus in the container (./deploy/prometheus), and here.
    assert config["rule_files"] == ["alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["daemon:8000"]
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert (source["uid"], source["url"]) == ("prometheus", "http://prometheus:9090")
    [provider] = yaml.safe_load((provisioning / "dashboards" / "droneshield.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"  # ./deploy/grafana/dashboards


async def _promtool(*args: str) -> str:
    assert PROMTOOL is not None
    with trio.fail_after(30):
        done = await trio.run_process(
            [PROMTOOL, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    return output


@needs_promtool
async def test_promtool_accepts_the_alert_rules_and_the_prometheus_config():
    rules = await _promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert f"SUCCESS: {len(_rules())} rules found" in rules
    # Loads the rule files it names, relative to itself, as the container does.
    config = await _promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert "SUCCESS" in config


@needs_promtool
async def test_promtool_parses_every_dashboard_query(tmp_path):
    """Grafana sends each panel's query to Prometheus as it is: as recording rules, promtool
    parses them with Prometheus's own PromQL parser."""
    expressions = [t["expr"] for p in _panels() for t in p["targets"]]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr}
                    for n, expr in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(expressions)} rules found" in await _promtool(
        "check", "rules", str(path)
    )
