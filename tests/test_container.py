"""What can be checked of the container without a Docker daemon: the Dockerfile installs
the built wheel as a non-root user with a health check; docker-compose.yml builds the
image once, and its commands, ports, env names and config keys are ones the code knows."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from collector.cli import build_parser
from collector.config import load_settings
from collector.simulator import Fleet, FleetSpec

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_is_multi_stage_and_installs_the_built_wheel_not_editable() -> None:
    lines = _dockerfile()
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and " AS build" in stages[0]
    runtime = lines[lines.index(stages[1]):]
    assert any(line.startswith("COPY --from=build") for line in runtime)
    installs = [line for line in runtime if "pip install" in line]
    assert installs and all(" -e " not in line and "--editable" not in line for line in installs)
    assert "connect-collector" in installs[0] and "--no-index" in installs[0]
    assert not any(line.startswith("COPY collector") for line in runtime)  # no source tree at runtime
    build = lines[:lines.index(stages[1])]
    assert any("pip wheel" in line for line in build)
    copied = {w for line in build if line.startswith("COPY ") for w in line.split()[1:-1]}
    assert {"pyproject.toml", "setup.py", "README.md", "collector", "migrations"} <= copied


def test_dockerfile_runs_as_a_non_root_user_with_a_health_check() -> None:
    lines = _dockerfile()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(users[-1] in line for line in lines if line.startswith("RUN useradd"))
    health = [line for line in lines if line.startswith("HEALTHCHECK")]
    assert len(health) == 1 and "/healthz" in health[0] and "COLLECTOR_API__PORT" in health[0]
    assert lines[-1] == 'CMD ["collector", "serve"]'


def test_compose_builds_the_image_once_for_simulator_and_collector() -> None:
    built = [name for name, s in SERVICES.items() if "build" in s]
    assert built == ["collector"]
    image = SERVICES["collector"]["image"]
    assert SERVICES["simulator"]["image"] == image
    assert SERVICES["simulator"]["pull_policy"] == "never"


def test_compose_commands_parse_with_the_real_cli() -> None:
    parser = build_parser()
    for name in ("simulator", "collector"):
        command = SERVICES[name]["command"]
        assert command[0] == "collector"
        parser.parse_args(command[1:])  # exits 2 on an unknown flag


def test_compose_env_names_and_config_keys_exist_in_the_code(tmp_path: Path) -> None:
    coll = SERVICES["collector"]
    env = {k: str(v) for k, v in coll["environment"].items()}
    for name in env:
        assert name.startswith(("COLLECTOR_", "AWS_")), name
    mount = next(v for v in coll["volumes"] if v.split(":")[1] == "/etc/collector/collector.toml")
    local = ROOT / mount.split(":")[0].removeprefix("./")
    args = build_parser().parse_args(coll["command"][1:])
    assert args.config == "/etc/collector/collector.toml"
    # The mounted config with the compose environment loads: every key and env name is known.
    settings = load_settings(local, environ={k: v for k, v in env.items() if k.startswith("COLLECTOR_")})
    assert settings.database.dsn == env["COLLECTOR_DATABASE_URL"]
    assert settings.log_format == env["COLLECTOR_LOG_FORMAT"]
    # The collector reaches the simulator on the port the simulator listens on.
    sim_args = build_parser().parse_args(SERVICES["simulator"]["command"][1:])
    endpoint = urlsplit(env["AWS_ENDPOINT_URL_CONNECT"])
    assert endpoint.hostname == "simulator" and endpoint.port == sim_args.port
    assert re.fullmatch(r"SIM\d{12}", env["AWS_ACCESS_KEY_ID"]) and env["AWS_SECRET_ACCESS_KEY"]
    # Published port = the API port the collector serves on; health checks hit real routes.
    host_port = coll["ports"][0].rsplit(":", 1)[1]
    assert int(host_port) == (args.port or settings.api.port)
    api = (ROOT / "collector" / "http_api.py").read_text()
    probes = re.findall(r"http://127\.0\.0\.1:\d+(/\w+)", " ".join(coll["healthcheck"]["test"]))
    assert probes
    for probe in probes:
        assert f'@app.get("{probe}"' in api


def test_example_config_names_the_simulators_instances_and_accounts() -> None:
    sim_args = build_parser().parse_args(SERVICES["simulator"]["command"][1:])
    fleet = Fleet(FleetSpec(accounts=sim_args.accounts, regions=tuple(sim_args.regions.split(",")),
                               instances_per_account=sim_args.instances,
                               queues_per_instance=sim_args.queues, seed=sim_args.seed))
    expected = {(i.id, i.region, i.account) for i in fleet.instances.values()}
    settings = load_settings(ROOT / "ops" / "collector.example.toml", environ={})
    assert {(i.id, i.region, i.account) for i in settings.instances} == expected
