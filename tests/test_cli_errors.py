"""Every rough edge a new user meets, driven through the real CLI in a subprocess:
one line naming the thing and the fix, and the documented exit code
(0 done, 1 failed slices, 2 bad input or config, 3 the environment)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from collector import errors
from collector.adapters.connect import BotocoreConnect
from collector.model import Target
from collector.simulator import SimulatorConfig
from tests.cli_run import cli_env, run_cli
from tests.conftest import StartSim

SIM_KEYS = {"AWS_ACCESS_KEY_ID": "SIM100000000000", "AWS_SECRET_ACCESS_KEY": "simulator"}


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # no traceback, no second line
    assert lines[0].startswith("collector: ")
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port with a listener on it for the duration of the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _config(tmp_path: Path, dsn: str | None, body: str = "") -> Path:
    p = tmp_path / "c.toml"
    head = f'[database]\ndsn = "{dsn}"\n\n' if dsn else ""
    p.write_text(head + body + '\n[[instances]]\nid = "i-1"\nregion = "us-east-1"\n')
    return p


async def _tables(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return [r["tablename"] for r in rows]


def _range() -> tuple[str, str]:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return (end - timedelta(hours=1)).isoformat(), end.isoformat()


async def test_busy_port_is_one_line_exit_3_and_the_database_is_untouched(
    tmp_path: Path, database_url: str, busy_port: int
) -> None:
    cfg = _config(tmp_path, database_url)
    out = await run_cli("serve", "--config", str(cfg), "--port", str(busy_port), env=cli_env(SIM_KEYS))
    assert out.returncode == 3
    line = _one_line(out)
    assert f"127.0.0.1:{busy_port}" in line and "--port N or COLLECTOR_API__PORT=N" in line
    assert await _tables(database_url) == []  # not even migrated


async def test_busy_port_in_the_sandbox_stops_before_the_simulator_and_database(
    tmp_path: Path, busy_port: int
) -> None:
    out = await run_cli("serve", "--sandbox", env=cli_env({"COLLECTOR_API__PORT": str(busy_port)}),
                        cwd=str(tmp_path))
    assert out.returncode == 3
    assert "COLLECTOR_API__PORT" in _one_line(out)
    assert not (tmp_path / ".data").exists()  # no embedded Postgres was started


async def test_missing_aws_credentials_are_reported_once_before_any_work(
    tmp_path: Path, database_url: str
) -> None:
    start, end = _range()
    out = await run_cli("collect", "--config", str(_config(tmp_path, database_url)),
                        "--start", start, "--end", end, env=cli_env())
    assert out.returncode == 3
    line = _one_line(out)
    assert "No AWS credentials found" in line
    assert "AWS_ACCESS_KEY_ID" in line and "AWS_SECRET_ACCESS_KEY" in line and "AWS_PROFILE" in line
    assert await _tables(database_url) == []  # no run was recorded, nothing planned


async def test_a_named_aws_profile_that_does_not_exist_is_an_environment_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[instances]]\nid = "i-1"\nregion = "us-east-1"\naws_profile = "prod"\n')
    out = await run_cli("serve", "--config", str(cfg), "--port", "0", env=cli_env(SIM_KEYS))
    assert out.returncode == 3
    line = _one_line(out)
    assert "prod" in line and "No AWS credentials found" in line


async def test_missing_credentials_are_not_a_transient_api_failure(
    start_sim: StartSim, small_fleet: SimulatorConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start_sim(small_fleet)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    inst = next(iter(h.sim.fleet.instances.values()))
    async with BotocoreConnect() as source:
        with pytest.raises(errors.NoCredentials) as e:
            await source.list_queues(Target(instance_id=inst.id, region=inst.region, account="a", queues=()), None)
    assert not isinstance(e.value, errors.TransientApiError)
    assert sum(h.sim.stats.by_status.values()) == 0  # nothing was sent


@pytest.mark.parametrize("command", ["migrate", "collect"])
async def test_an_unreachable_database_is_one_line_exit_3(tmp_path: Path, command: str) -> None:
    start, end = _range()
    cfg = _config(tmp_path, "postgresql://postgres@127.0.0.1:1/none")
    args = ["--start", start, "--end", end] if command == "collect" else []
    out = await run_cli(command, "--config", str(cfg), *args, env=cli_env(SIM_KEYS))
    assert out.returncode == 3
    line = _one_line(out)
    assert "cannot connect to the database" in line
    assert "[database] dsn" in line and "COLLECTOR_DATABASE_URL" in line


async def test_a_database_that_does_not_exist_is_one_line_exit_3(database_url: str) -> None:
    p = urlsplit(database_url)
    missing = urlunsplit((p.scheme, p.netloc, p.path + "_missing", p.query, p.fragment))
    out = await run_cli("migrate", env=cli_env({"COLLECTOR_DATABASE_URL": missing}))
    assert out.returncode == 3
    assert "does not exist" in _one_line(out)


async def test_a_dsn_that_is_not_a_postgres_url_is_bad_config_exit_2() -> None:
    out = await run_cli("migrate", env=cli_env({"COLLECTOR_DATABASE_URL": "localhost:5432"}))
    assert out.returncode == 2
    line = _one_line(out)
    assert "environment variable COLLECTOR_DATABASE_URL" in line and "postgresql://" in line


async def test_an_env_override_error_names_the_variable_exit_2(tmp_path: Path) -> None:
    out = await run_cli("migrate", "--config", str(_config(tmp_path, None)),
                        env=cli_env({"COLLECTOR_COLLECTION__GRANULARITY": "1x"}))
    assert out.returncode == 2
    line = _one_line(out)
    assert "environment variable COLLECTOR_COLLECTION__GRANULARITY: collection.granularity: '1x'" in line
    assert "c.toml" not in line


@pytest.mark.parametrize("metrics, needle", [
    ('["HANDLE_TIMES"]', "unknown metric 'HANDLE_TIMES'; did you mean HANDLE_TIME"),
    ('"everything"', 'collection.metrics: must be "all" or a list of metric names'),
])
async def test_bad_metrics_are_one_line_exit_2(tmp_path: Path, metrics: str, needle: str) -> None:
    cfg = _config(tmp_path, "postgresql://postgres@127.0.0.1:1/none", f"[collection]\nmetrics = {metrics}\n")
    start, end = _range()
    out = await run_cli("collect", "--config", str(cfg), "--start", start, "--end", end, env=cli_env(SIM_KEYS))
    assert out.returncode == 2
    line = _one_line(out)
    assert needle in line and f"{cfg}:5:" in line


async def test_simulate_prints_the_environment_that_reaches_it(tmp_path: Path, database_url: str) -> None:
    """Paste what `collector simulate` prints, and a collection from it succeeds."""
    cfg = tmp_path / "sim.toml"
    env = cli_env()
    proc = await anyio.open_process(
        [sys.executable, "-m", "collector", "simulate", "--port", "0", "--queues", "3",
         "--write-config", str(cfg)], env=env)
    printed: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        buf = b""
        with anyio.fail_after(60):
            while "AWS_SECRET_ACCESS_KEY" not in printed:
                buf += await proc.stdout.receive()
                for line in buf.decode().splitlines():
                    if line.strip().startswith("export "):
                        name, _, value = line.strip().removeprefix("export ").partition("=")
                        printed[name] = value
        assert set(printed) == {"AWS_ENDPOINT_URL_CONNECT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        start, end = _range()
        out = await run_cli("collect", "--config", str(cfg), "--start", start, "--end", end,
                            env={**env, **printed, "COLLECTOR_DATABASE_URL": database_url})
        assert out.returncode == 0, out.stderr
        assert "4/4 slices" in out.stdout
    finally:
        proc.terminate()
        await proc.wait()


async def test_sandbox_removes_its_temporary_config(tmp_path: Path, database_url: str) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = await run_cli("sandbox", "--hours", "1",
                        env=cli_env({"TMPDIR": str(tmp), "COLLECTOR_DATABASE_URL": database_url}))
    assert out.returncode == 0, out.stderr
    assert "slices" in out.stdout
    assert list(tmp.glob("collector-sandbox-*")) == []
    # a database of the user's own outlives the command: the psql line for it, over a KPI view
    assert f'psql "{database_url}"' in out.stdout and "kpi_queue_interval" in out.stdout


async def test_sandbox_on_the_embedded_database_prints_no_psql_line_for_it() -> None:
    pg = Path(tempfile.mkdtemp(prefix="collector-test-sandbox-")) / "pg"  # like conftest: pgserver can reach it
    try:
        out = await run_cli("sandbox", "--hours", "1", "--data-dir", str(pg), env=cli_env())
    finally:
        shutil.rmtree(pg.parent, ignore_errors=True)
    assert out.returncode == 0, out.stderr
    assert "psql \"" not in out.stdout  # the embedded Postgres has stopped: such a line would not connect
    assert f"The embedded Postgres in {pg} stopped" in out.stdout
    assert f'COLLECTOR_DATABASE__DATA_DIR="{pg}" collector serve --sandbox' in out.stdout


@pytest.mark.parametrize("start, end", [
    ("0001-01-01T00:00:00+01:00", "2026-01-01T00:00:00Z"),
    ("2026-01-01T00:00:00Z", "9999-12-31T23:00:00-01:00"),
])
async def test_a_time_with_no_utc_equivalent_exits_2_naming_it(tmp_path: Path, start: str, end: str) -> None:
    """Issue 18 item 8: year 1 east of UTC, year 9999 west of it: one line, exit 2 (before:
    an OverflowError traceback, exit 1)."""
    cfg = _config(tmp_path, None)
    out = await run_cli("collect", "--config", str(cfg), "--start", start, "--end", end)
    assert out.returncode == 2, out
    line = _one_line(out)
    assert "out of range" in line and ("--start" in line if start.startswith("0001") else "--end" in line), line


async def test_an_unknown_profile_names_the_configured_ones(tmp_path: Path, database_url: str) -> None:
    """`collect --profile NAME` with no such profile: exit 2, one line that lists the
    profiles the config has (and the close one), before any connection or call."""
    cfg = _config(tmp_path, database_url,
                  '[[profiles]]\nname = "agents_15m"\napi = "v2"\ninterval = "15m"\ngroupings = ["AGENT"]\n'
                  'metrics = ["CONTACTS_HANDLED"]\n[profiles.filters]\nagents = "all"\n\n')
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    out = await run_cli("collect", "--config", str(cfg), "--profile", "agents15m",
                        "--start", (end - timedelta(hours=1)).isoformat(), "--end", end.isoformat(),
                        "--no-progress", env=cli_env(SIM_KEYS))
    assert out.returncode == 2, out.stderr
    line = _one_line(out)
    assert "'agents15m' is not configured" in line
    assert "configured profiles: 'default', 'agents_15m'" in line and "did you mean 'agents_15m'?" in line
    assert await _tables(database_url) == []


async def test_simulate_help_shows_each_options_default() -> None:
    from collector.cli import build_parser

    parser = build_parser()
    sim = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "simulate")[1]  # type: ignore[union-attr]
    out = await run_cli("simulate", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())  # argparse wraps lines
    for action in sim._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = action.option_strings[-1]
        assert flag in text, flag
        after = text.split(flag + " ", 2)[-1].split(" --", 1)[0]  # this option's help, up to the next one
        want = "(default: none written)" if action.default is None else f"(default: {action.default})"
        assert want in after, (flag, after)
