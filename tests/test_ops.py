"""The ops kit parses and says what it should; `docker compose config` where the client has it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_brings_up_postgres_collector_and_simulator_with_health_checks() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"postgres", "collector", "simulator"}
    assert all("healthcheck" in s for s in services.values())
    deps = services["collector"]["depends_on"]
    assert deps["postgres"]["condition"] == deps["simulator"]["condition"] == "service_healthy"
    assert services["collector"]["ports"] == ["127.0.0.1:8080:8080"]  # not open to the network


def test_compose_config_validates_where_the_client_exists() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose client on this machine")
    out = subprocess.run([docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_kubernetes_deployment_probes_and_secret() -> None:
    docs = list(yaml.safe_load_all((ROOT / "ops/kubernetes/connect-collector.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert {"Secret", "ConfigMap", "Deployment"} <= set(kinds)
    assert "COLLECTOR_DATABASE_URL" in kinds["Secret"]["stringData"]
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_iam_policy_is_least_privilege() -> None:
    policy = json.loads((ROOT / "ops/iam-policy.json").read_text())
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions == {"connect:GetMetricData", "connect:ListQueues", "connect:ListInstances"}
    assume = json.loads((ROOT / "ops/iam-assume-role-policy.json").read_text())
    assert {st["Action"] for st in assume["Statement"]} == {"sts:AssumeRole"}


def test_every_alert_rule_says_what_to_do_and_has_a_runbook_entry() -> None:
    text = (ROOT / "ops/prometheus/alerts.yml").read_text()
    rules = yaml.safe_load(text)["groups"][0]["rules"]
    runbook = (ROOT / "ops/README.md").read_text()
    for rule in rules:
        assert f"### {rule['alert']}" in runbook
        block = text.split(f"- alert: {rule['alert']}")[0].rsplit("- alert:", 1)[-1]
        assert "What to do" in block, rule["alert"]
    dashboard = json.loads((ROOT / "ops/grafana/connect-collector.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("collector_collection_lag_seconds", "collector_api_throttles_total", "collector_gaps_total"):
        assert metric in exprs


def test_every_alert_rule_passes_its_promtool_unit_tests() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian/Ubuntu: apt-get install prometheus; .ci/run installs it)"
    tests_dir = ROOT / "ops/prometheus/tests"
    files = sorted(tests_dir.glob("*.yml"))
    rules = {r["alert"] for g in yaml.safe_load((ROOT / "ops/prometheus/alerts.yml").read_text())["groups"]
             for r in g["rules"]}
    tested = {t["alertname"] for f in files for case in yaml.safe_load(f.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    assert rules == tested  # every rule has its unit test, and no test names a rule that is gone
    out = subprocess.run([promtool, "check", "rules", str(ROOT / "ops/prometheus/alerts.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([promtool, "test", "rules", *map(str, files)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_connect_instance_label_does_not_collide_with_prometheus_instance() -> None:
    from collector.observability import GAPS, LAG

    for metric in (GAPS, LAG):
        assert "instance" not in metric._labelnames and "connect_instance" in metric._labelnames
    dashboard = (ROOT / "ops/grafana/connect-collector.json").read_text()
    assert "by (instance)" not in dashboard and "{{instance}}" not in dashboard
