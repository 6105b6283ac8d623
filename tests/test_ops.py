"""The ops kit parses, agrees with the code and says what it should: the IAM policy allows
every Connect call the code makes (derived from the code) and nothing more; the alert rules
pass their promtool unit tests; the Kubernetes manifest is complete and restricted; the
database roles let the reader read every table and view; the systemd unit stops on a config
error; compose keeps Postgres' data and says how to query it."""

from __future__ import annotations

import ast
import configparser
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "ops"


# -- docker compose --------------------------------------------------------------------------

def test_compose_brings_up_postgres_collector_and_simulator_with_health_checks() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"postgres", "collector", "simulator"}
    assert all("healthcheck" in s for s in services.values())
    deps = services["collector"]["depends_on"]
    assert deps["postgres"]["condition"] == deps["simulator"]["condition"] == "service_healthy"
    assert services["collector"]["ports"] == ["127.0.0.1:8080:8080"]  # not open to the network


def test_compose_postgres_keeps_its_data_in_a_volume_and_says_how_to_query_it() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    doc = yaml.safe_load(text)
    pg = doc["services"]["postgres"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in pg["volumes"]}
    named = [src for src, dst in mounts.items() if dst == "/var/lib/postgresql/data"]
    assert named and named[0] in (doc.get("volumes") or {}), "a named volume, not the container's layer"
    assert all(p.startswith("127.0.0.1:") for p in pg.get("ports", [])), "published on loopback only"
    # the documented ways in: `docker compose exec` (always) and the published port
    exec_line = "docker compose exec postgres psql -U postgres -d collector"
    assert exec_line in text and exec_line in (OPS / "README.md").read_text()
    env = pg["environment"]
    for p in pg.get("ports", []):
        host_port = p.split(":")[1]
        url = f"postgresql://postgres:{env['POSTGRES_PASSWORD']}@127.0.0.1:{host_port}/{env['POSTGRES_DB']}"
        assert url in text


def test_compose_config_validates_where_the_client_exists() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose client on this machine")
    out = subprocess.run([docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# -- Kubernetes ------------------------------------------------------------------------------

def _manifest() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((OPS / "kubernetes/connect-collector.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert len(kinds) == len(docs), "one object of each kind"
    return kinds


def _http_api_source() -> str:
    """The module that declares the HTTP routes, wherever it lives in the package."""
    sources = [p.read_text() for p in sorted((ROOT / "collector").rglob("*.py"))]
    routes = [s for s in sources if '@app.get("/healthz"' in s]
    assert len(routes) == 1, "one module declares the HTTP routes"
    return routes[0]


def _image_uid() -> int:
    m = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert m, "the Dockerfile creates its user with a fixed uid"
    return int(m.group(1))


def test_kubernetes_manifest_defines_everything_it_names() -> None:
    kinds = _manifest()
    assert {"ServiceAccount", "Secret", "ConfigMap", "Deployment", "Service"} <= set(kinds)
    dep = kinds["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    # the ServiceAccount the pods run as exists, with the IRSA role annotation
    sa = kinds["ServiceAccount"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+",
                        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
    # every Secret, ConfigMap and volume reference resolves
    containers = pod["initContainers"] + pod["containers"]
    for c in containers:
        assert [e["secretRef"]["name"] for e in c["envFrom"]] == [kinds["Secret"]["metadata"]["name"]]
        volumes = {v["name"] for v in pod["volumes"]}
        assert {m["name"] for m in c["volumeMounts"]} <= volumes
    assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} == {kinds["ConfigMap"]["metadata"]["name"]}
    # the selector picks the pods, and the Service reaches the API port
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = kinds["Service"]["spec"]
    assert svc["type"] == "ClusterIP" and svc["selector"].items() <= labels.items()
    collector = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in collector["ports"]}
    (svc_port,) = svc["ports"]
    assert svc_port["targetPort"] in ports and svc_port["port"] == ports[svc_port["targetPort"]]
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["http"])
    assert collector["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert collector["readinessProbe"]["httpGet"]["path"] == "/readyz"
    api = _http_api_source()
    for route in ("/healthz", "/readyz", annotations.get("prometheus.io/path", "/metrics")):
        assert f'@app.get("{route}"' in api


def test_kubernetes_pods_run_restricted() -> None:
    pod = _manifest()["Deployment"]["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    # a numeric uid: with the image's named USER, runAsNonRoot could not be verified
    assert psc["runAsUser"] == _image_uid() != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], c["name"]
        assert c["imagePullPolicy"] in ("IfNotPresent", "Always"), c["name"]
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}  # the root filesystem is read-only


def test_kubernetes_api_binds_all_interfaces_with_the_secrets_token(tmp_path: Path) -> None:
    """The pod's API must be reachable (probes, Service) and so needs a token: the config the
    manifest gives (ConfigMap + Secret + env + command line) loads, and would not without it."""
    from collector.cli import build_parser
    from collector.config import check_api_exposure, load_settings

    kinds = _manifest()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    collector = pod["containers"][0]
    config = tmp_path / "collector.toml"
    config.write_text(kinds["ConfigMap"]["data"]["collector.toml"])
    environ = {**kinds["Secret"]["stringData"],
               **{e["name"]: e["value"] for e in collector["env"] if "value" in e}}
    assert environ["COLLECTOR_CONFIG"].endswith("/collector.toml")
    args = build_parser().parse_args(collector["command"][1:])
    assert collector["command"][:2] == ["collector", "serve"] and args.host == "0.0.0.0"
    settings = load_settings(config, environ=environ)
    assert settings.api.token == environ["COLLECTOR_API_TOKEN"]
    assert settings.database.dsn == environ["COLLECTOR_DATABASE_URL"]
    assert not settings.api.allow_unauthenticated
    api = settings.api.model_copy(update={"host": args.host})
    check_api_exposure(api)  # passes: the token is set
    with pytest.raises(ValueError, match="token"):
        check_api_exposure(api.model_copy(update={"token": None}))
    init = pod["initContainers"][0]
    assert init["command"] == ["collector", "migrate"] and init["image"] == collector["image"]


def test_kubernetes_manifest_matches_the_api_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for doc in yaml.safe_load_all((OPS / "kubernetes/connect-collector.yaml").read_text()):
        kv.validate(doc, kv.latest_version(), strict=True)


# -- IAM -------------------------------------------------------------------------------------

# What each Connect action needs, from the Service Authorization Reference ("Actions,
# resources, and condition keys for Amazon Connect"): sample ARNs of its resource types
# ("*" where it supports none) and its dependent actions. A call the code starts making
# must be added here (and to ops/iam-policy.json) before this test passes.
_ARN = "arn:aws:connect:eu-west-2:111122223333:instance/0a1b2c3d-0000-4000-8000-000000000001"
ACTION_RESOURCES: dict[str, list[str]] = {
    "connect:GetMetricData": [f"{_ARN}/queue/q-1"],
    # the instance (ResourceArn) and every resource type it filters or groups by
    "connect:GetMetricDataV2": [_ARN, f"{_ARN}/queue/q-1", f"{_ARN}/agent/u-1",
                                f"{_ARN}/routing-profile/rp-1", f"{_ARN}/agent-group/g-1"],
    # real time: the instance and the queues / routing profiles (agents, hierarchy groups) filtered on
    "connect:GetCurrentMetricData": [_ARN, f"{_ARN}/queue/q-1", f"{_ARN}/routing-profile/rp-1"],
    "connect:GetCurrentUserData": [_ARN, f"{_ARN}/queue/q-1", f"{_ARN}/agent/u-1", f"{_ARN}/routing-profile/rp-1",
                                   f"{_ARN}/agent-group/g-1"],
    "connect:ListQueues": [f"{_ARN}/queue/*"],
    "connect:ListInstances": ["*"],
    "connect:ListUsers": [_ARN],
    "connect:SearchUsers": [_ARN],
    "connect:ListRoutingProfiles": [_ARN],
    "connect:ListUserHierarchyGroups": [_ARN],
    # dependent actions
    "connect:DescribeUser": [f"{_ARN}/agent/u-1"],
    "connect:ListUserProficiencies": [_ARN, f"{_ARN}/agent/u-1"],
    "ds:DescribeDirectories": ["*"],
}
DEPENDENT_ACTIONS: dict[str, set[str]] = {
    "connect:ListInstances": {"ds:DescribeDirectories"},
    "connect:SearchUsers": {"connect:DescribeUser", "connect:ListUserProficiencies"},
}


def _as_list(v: str | list[str]) -> list[str]:
    return [v] if isinstance(v, str) else v


def connect_operations_the_code_calls() -> set[str]:
    """Every Connect operation named in a module that creates a boto client: as a client
    method (``client.list_queues(...)``, or the ``"list_queues"`` string passed to getattr)
    or as an event name (``before-send.connect.GetMetricData``), checked against botocore's
    own model of the service."""
    from botocore import xform_name
    from botocore.session import get_session

    operations = set(get_session().get_service_model("connect").operation_names)
    by_method = {xform_name(op): op for op in operations}
    called: set[str] = set()
    modules = 0
    for path in sorted((ROOT / "collector").rglob("*.py")):
        if "simulator" in path.relative_to(ROOT).parts:  # answers the calls, makes none
            continue
        tree = ast.parse(path.read_text(), str(path))
        creates = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                   and isinstance(n.func, ast.Attribute) and n.func.attr == "create_client"]
        if not creates:
            continue
        modules += 1
        services = {n.args[0].value if n.args and isinstance(n.args[0], ast.Constant) else None for n in creates}
        assert services <= {"connect", "sts"}, f"{path}: clients of {services}: give them a policy too"
        if "sts" in services:  # the roles of [[accounts]]: sts:AssumeRole, in its own policy
            assumed = json.loads((ROOT / "ops/iam-assume-role-policy.json").read_text())
            assert any(st["Effect"] == "Allow" and "sts:AssumeRole" in _as_list(st["Action"])
                       for st in assumed["Statement"]), "the STS client needs sts:AssumeRole"
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
            elif isinstance(node, ast.Attribute):
                name = node.attr
            else:
                continue
            event = re.fullmatch(r"[\w-]+\.connect\.(\w+)", name)
            for candidate in (name, by_method.get(name), event and event.group(1)):
                if candidate in operations:
                    called.add(f"connect:{candidate}")
    assert modules, "no module creates a boto client: where did the Connect adapter go?"
    return called


def _allowed(policy: dict[str, Any], action: str, resource: str) -> bool:
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if st["Effect"] == "Allow" and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions) \
                and any(fnmatch.fnmatchcase(resource, r) for r in resources):
            return True
    return False


def test_iam_policy_allows_every_connect_call_the_code_makes() -> None:
    called = connect_operations_the_code_calls()
    # a floor, so a scan that silently finds nothing cannot pass
    assert {"connect:GetMetricData", "connect:GetMetricDataV2", "connect:ListQueues",
            "connect:ListInstances", "connect:SearchUsers", "connect:GetCurrentMetricData",
            "connect:GetCurrentUserData"} <= called
    unknown = called - ACTION_RESOURCES.keys()
    assert not unknown, f"the code calls {sorted(unknown)}: add their resource types here and to the policy"
    needed = called | {d for a in called for d in DEPENDENT_ACTIONS.get(a, set())}
    policy = json.loads((OPS / "iam-policy.json").read_text())
    for action in sorted(needed):
        for resource in ACTION_RESOURCES[action]:
            assert _allowed(policy, action, resource), f"{action} on {resource} is not allowed"


def test_iam_policy_is_least_privilege() -> None:
    called = connect_operations_the_code_calls()
    needed = called | {d for a in called for d in DEPENDENT_ACTIONS.get(a, set())}
    policy = json.loads((OPS / "iam-policy.json").read_text())
    granted: set[str] = set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and not {"NotAction", "NotResource"} & st.keys()
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all("*" not in a and "?" not in a for a in actions), f"wildcard action in {st['Sid']}"
        granted |= set(actions)
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if "*" in resources:
            # only what supports no resource type may have every resource
            assert all(ACTION_RESOURCES[a] == ["*"] for a in actions), st["Sid"]
        else:
            assert all(r.startswith("arn:aws:connect:") and ":instance/" in r for r in resources), st["Sid"]
    assert granted == needed  # nothing the code does not call
    assume = json.loads((OPS / "iam-assume-role-policy.json").read_text())
    assert {st["Action"] for st in assume["Statement"]} == {"sts:AssumeRole"}


# -- Prometheus ------------------------------------------------------------------------------

def _rules(name: str) -> list[dict[str, Any]]:
    doc = yaml.safe_load((OPS / "prometheus" / name).read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_every_alert_rule_says_what_to_do_and_has_a_runbook_entry() -> None:
    text = (OPS / "prometheus/alerts.yml").read_text()
    rules = _rules("alerts.yml")
    runbook = (OPS / "README.md").read_text()
    for rule in rules:
        assert f"### {rule['alert']}" in runbook
        block = text.split(f"- alert: {rule['alert']}")[0].rsplit("- alert:", 1)[-1]
        assert "What to do" in block, rule["alert"]
        # no rule selects a scrape job: annotation-based scraping names it after the scrape config
        assert "job=" not in rule["expr"].replace(" ", ""), rule["alert"]
    dashboard = json.loads((OPS / "grafana/connect-collector.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("collector_collection_lag_seconds", "collector_api_throttles_total", "collector_gaps_total"):
        assert metric in exprs


def test_the_profiles_file_lists_each_profile_once_with_its_api_and_interval() -> None:
    from collector.config import load_settings

    intervals = {900, 1800, 3600, 86400, 604800}
    listed: dict[str, tuple[str, int]] = {}
    for rule in _rules("profiles.yml"):
        assert rule["record"] == "collector_profile:interval_seconds"
        profile, api = rule["labels"]["profile"], rule["labels"]["api"]
        assert profile not in listed, f"{profile} is listed twice"
        assert api in ("v1", "v2"), profile
        m = re.fullmatch(r"vector\((\d+)\)", rule["expr"].strip())
        assert m, rule["expr"]
        seconds = int(m.group(1))
        assert seconds in intervals if api == "v2" else 0 < seconds < 86400, profile
        listed[profile] = (api, seconds)
    # the example config's profiles are there as they are configured
    settings = load_settings(OPS / "collector.example.toml", environ={})
    assert listed["default"] == ("v1", settings.collection.granularity_seconds)
    v2_seconds = {"15m": 900, "30m": 1800, "1h": 3600, "1d": 86400, "1w": 604800}
    for p in settings.profiles:
        prof: Any = p  # a v1 profile has a granularity, a V2 one an interval
        fields = prof.model_dump()
        want = ("v2", v2_seconds[fields["interval"]]) if "interval" in fields else ("v1", prof.granularity_seconds)
        assert listed.get(prof.name) == want, prof.name


def test_every_alert_rule_passes_its_promtool_unit_tests() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: `make promtool` (part of `make test`) installs Debian's prometheus package"
    tests_dir = OPS / "prometheus/tests"
    files = sorted(tests_dir.glob("*.yml"))
    rules = {r["alert"] for r in _rules("alerts.yml")}
    tested = {t["alertname"] for f in files for case in yaml.safe_load(f.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    assert rules == tested  # every rule has its unit test, and no test names a rule that is gone
    for f in files:  # the tests judge lag by the shipped profiles file
        assert set(yaml.safe_load(f.read_text())["rule_files"]) == {"../alerts.yml", "../profiles.yml"}
    out = subprocess.run([promtool, "check", "rules", str(OPS / "prometheus/alerts.yml"),
                          str(OPS / "prometheus/profiles.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([promtool, "test", "rules", *map(str, files)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_connect_instance_label_does_not_collide_with_prometheus_instance() -> None:
    from collector.observability import GAPS, LAG

    for metric in (GAPS, LAG):
        assert "instance" not in metric._labelnames and "connect_instance" in metric._labelnames
    dashboard = (OPS / "grafana/connect-collector.json").read_text()
    assert "by (instance)" not in dashboard and "{{instance}}" not in dashboard


def test_the_alert_rules_use_only_metrics_the_collector_exports() -> None:
    """CollectorDown and CollectorCrashLooping find the collector's targets by
    collector_channel_depth, so a renamed metric would silently blind them."""
    from collector import observability

    exported = {m._name for m in vars(observability).values() if hasattr(m, "_labelnames")}
    assert "collector_channel_depth" in exported
    for rule in _rules("alerts.yml"):
        for token in set(re.findall(r"\bcollector_[a-z_]+(?::[a-z_]+)?", rule["expr"])):
            if ":" not in token:  # recording rules (profiles.yml) have a colon
                assert token.removesuffix("_total") in exported, f"{rule['alert']}: {token}"


# -- systemd ---------------------------------------------------------------------------------

def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((OPS / "systemd/connect-collector.service").read_text())
    return unit


def test_systemd_does_not_restart_a_config_error() -> None:
    from collector import cli

    svc = _unit()["Service"]
    assert (cli.EXIT_BAD_INPUT, cli.EXIT_ENVIRONMENT) == (2, 3)
    assert svc["Restart"] == "on-failure"
    assert str(cli.EXIT_BAD_INPUT) in svc["RestartPreventExitStatus"].split()
    assert str(cli.EXIT_ENVIRONMENT) not in svc["RestartPreventExitStatus"].split()  # restarted until it clears
    # RestartPreventExitStatus= reads the main process' status only: a config error found by
    # `collector migrate` in ExecStartPre= would be restarted forever, so both run as the main process
    assert "ExecStartPre" not in svc
    argv = shlex.split(svc["ExecStart"])
    assert argv[:2] == ["/bin/sh", "-c"]
    script = argv[2]
    assert re.fullmatch(r"(\S+)/collector migrate && exec \1/collector serve", script), script
    runbook = (OPS / "README.md").read_text()
    assert "RestartPreventExitStatus=2" in runbook and "exit 3" in runbook


def test_systemd_unit_is_hardened_with_a_state_directory() -> None:
    svc = _unit()["Service"]
    assert svc["StateDirectory"] == "connect-collector"
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "true"
    assert svc["User"] != "root" and "EnvironmentFile" in svc
    assert "COLLECTOR_DATABASE_URL" not in svc.get("Environment", "")  # secrets stay in the file


# -- database roles --------------------------------------------------------------------------

def _roles_sql(collector: str, reader: str, password: str, dbname: str) -> str:
    """ops/database-role.sql as psql would run it (its -v variables substituted), under
    role names of this test's own (roles are shared by every database of the cluster)."""
    sql = (OPS / "database-role.sql").read_text()
    sql = sql.replace(":'collector_password'", "'" + password.replace("'", "''") + "'")
    sql = sql.replace(':"dbname"', '"' + dbname.replace('"', '""') + '"')
    assert ":'" not in sql and ':"' not in sql
    return re.sub(r"\bconnect_metrics_reader\b", reader, re.sub(r"\bconnect_collector\b", collector, sql))


def _migrations() -> list[str]:
    files = sorted((ROOT / "migrations").glob("[0-9][0-9][0-9]_*.sql"), key=lambda p: int(p.name[:3]))
    assert files
    return [f.read_text() for f in files]


def _created_relations() -> set[str]:
    names: set[str] = set()
    for sql in _migrations():
        names |= set(re.findall(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+)?(?:TABLE|VIEW)\s+"
                                r"(?:IF\s+NOT\s+EXISTS\s+)?(?!IF\b)(\w+)", sql, re.IGNORECASE))
    return names


async def test_database_roles_let_the_reader_read_every_table_and_view(database_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    collector, reader = f"ct_{tag}_collector", f"ct_{tag}_reader"
    conn = await asyncpg.connect(database_url)
    try:
        dbname = await conn.fetchval("SELECT current_database()")
        await conn.execute(_roles_sql(collector, reader, "pw", dbname))
        # `collector migrate` as the collector's role, then a partition as the writer makes them
        await conn.execute(f'SET ROLE "{collector}"')
        for sql in _migrations():
            await conn.execute(sql)
        await conn.execute("SELECT collector_ensure_partition(current_date)")
        await conn.execute("CREATE VIEW later_view AS SELECT 1 AS x")  # a later migration's view
        await conn.execute("RESET ROLE")
        relations = {r["relname"]: r["relkind"] for r in await conn.fetch(
            "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')")}
        assert _created_relations() <= relations.keys()
        assert {"agents", "routing_profiles", "hierarchy_groups", "collected_slices",
                "historical_metrics", "historical_metrics_wide", "collection_gaps_view"} <= relations.keys()
        unreadable = [r["relname"] for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
            " AND NOT has_table_privilege($1, c.oid, 'SELECT')", reader)]
        assert unreadable == []
        writable = [r["relname"] for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
            " AND has_table_privilege($1, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')", reader)]
        assert writable == []
        # and as the reader: every view runs, nothing can be created or written
        await conn.execute(f'SET ROLE "{reader}"')
        for name in sorted(relations):
            await conn.fetch(f'SELECT * FROM "{name}" LIMIT 1')
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE reader_table (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM collection_runs")
        await conn.execute("RESET ROLE")
    finally:
        await conn.execute("RESET ROLE")
        # one role at a time: DROP OWNED BY both at once trips over the collector's default
        # privileges that name the reader ("could not find tuple for default ACL")
        await conn.execute(f'DROP OWNED BY "{reader}"')
        await conn.execute(f'DROP OWNED BY "{collector}"')
        await conn.execute(f'DROP ROLE "{collector}"')
        await conn.execute(f'DROP ROLE "{reader}"')
        await conn.close()
