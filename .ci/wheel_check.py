"""The release path, end to end, as a user installs it.

1. build the wheel from a clean copy of the working tree (no stale build/ output);
2. check it ships every migration and the named queries;
3. install it, NOT editable, into a fresh virtual environment;
4. start `collector simulate` from that environment and read the environment it prints;
5. `collector migrate` against a fresh database, then a short `collector collect`;
6. check the documented views exist and hold rows.

Dependencies: by default the fresh environment reuses the packages already installed
for the checkout (a .pth file; fast and offline), and `pip check` confirms they satisfy
the wheel's requirements. `--full` installs them from the package index instead.

Postgres: COLLECTOR_TEST_DATABASE_URL when set, else the embedded one.
Run with the checkout's virtual environment: `make wheel-check`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
VIEWS_WITH_ROWS = ("historical_metrics", "historical_metrics_wide")
VIEWS = (*VIEWS_WITH_ROWS, "collection_gaps_view")


def step(message: str) -> None:
    print(f"wheel-check: {message}", flush=True)


def fail(message: str) -> None:
    print(f"wheel-check: FAILED: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if out.returncode != 0:
        fail(f"{' '.join(map(str, cmd))} exited {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """No COLLECTOR_/AWS_ settings from the caller, no virtualenv leaking in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COLLECTOR_", "AWS_", "PYTHON")) and k != "VIRTUAL_ENV"}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra or {})
    return env


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".data", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    dist = tmp / "dist"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)])
    wheels = list(dist.glob("connect_collector-*.whl"))
    if len(wheels) != 1:
        fail(f"expected one wheel, found {wheels}")
    return wheels[0]


def check_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.rsplit("/", 1)[1] for n in names
                     if n.startswith("collector/migrations/") and n.endswith(".sql"))
    in_git = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    if shipped != in_git:
        fail(f"the wheel ships migrations {shipped}, the repository has {in_git}")
    if "collector/sql/queries.sql" not in names:
        fail("the wheel does not ship collector/sql/queries.sql")
    if any(n.startswith("tests/") for n in names):
        fail("the wheel ships the tests")
    step(f"{wheel.name}: {len(shipped)} migrations and the named queries inside")


def make_venv(tmp: Path, wheel: Path, full: bool) -> Path:
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    env=clean_env()).stdout.strip())
    if full:
        run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-compile", str(wheel)])
    else:
        # Dependencies from this checkout's environment; the wheel itself goes in for real.
        deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (site / "_checkout_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
        run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
             "--no-compile", str(wheel)])
    where = run([str(py), "-c", "import collector; print(collector.__file__)"],
                cwd=str(tmp), env=clean_env()).stdout.strip()
    if not where.startswith(str(site)):
        fail(f"collector is imported from {where}, not from the installed wheel in {site}")
    run([sys.executable, "-m", "pip", "--python", str(py), "check"], cwd=str(tmp))
    step(f"installed (not editable) into a fresh venv; collector imports from {where}")
    return venv


def admin_url() -> str:
    url = os.environ.get("COLLECTOR_TEST_DATABASE_URL")
    if url:
        return url
    from collector.adapters.embedded import embedded_dsn

    return embedded_dsn(tempfile.mkdtemp(prefix="collector-wheel-pg-"))


def with_db(url: str, db: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + db, p.query, p.fragment))


async def check_views(dsn: str, migrations: int) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        counts: dict[str, int] = {}
        for view in VIEWS:
            if await conn.fetchval("SELECT to_regclass($1)", view) is None:
                fail(f"view {view} does not exist after `collector migrate`")
            counts[view] = await conn.fetchval(f"SELECT count(*) FROM {view}")
        for view in VIEWS_WITH_ROWS:
            if not counts[view]:
                fail(f"view {view} holds no rows after `collector collect`")
        applied = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        if applied != migrations:
            fail(f"{applied} migrations recorded, {migrations} shipped")
        return counts
    finally:
        await conn.close()


def start_simulator(venv: Path, tmp: Path, cfg: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [str(venv / "bin" / "collector"), "simulate", "--port", "0", "--accounts", "2", "--queues", "5",
         "--write-config", str(cfg)],
        cwd=str(tmp), env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    printed: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:  # ends when the simulator exits
        if line.strip().startswith("export "):
            name, _, value = line.strip().removeprefix("export ").partition("=")
            printed[name] = value
        if "AWS_SECRET_ACCESS_KEY" in printed:
            break
    wanted = {"AWS_ENDPOINT_URL_CONNECT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    if set(printed) != wanted:
        proc.kill()
        fail(f"`collector simulate` printed {sorted(printed)}, not {sorted(wanted)}: {proc.stderr.read() if proc.stderr else ''}")
    return proc, printed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--full", action="store_true", help="install dependencies from the index")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="collector-wheel-"))
    admin = admin_url()
    db = f"wheel_{uuid.uuid4().hex[:10]}"
    sim: subprocess.Popen[str] | None = None
    try:
        wheel = build_wheel(tmp)
        check_wheel_contents(wheel)
        venv = make_venv(tmp, wheel, args.full)
        collector = str(venv / "bin" / "collector")
        version = run([collector, "--version"], cwd=str(tmp), env=clean_env()).stdout.strip()
        step(version)

        asyncio.run(_exec(admin, f'CREATE DATABASE "{db}"'))
        dsn = with_db(admin, db)
        cfg = tmp / "collector.toml"
        sim, sim_env = start_simulator(venv, tmp, cfg)
        step(f"simulator at {sim_env['AWS_ENDPOINT_URL_CONNECT']}")
        env = clean_env({**sim_env, "COLLECTOR_DATABASE_URL": dsn})

        out = run([collector, "migrate"], cwd=str(tmp), env=env)
        if "migrations applied: [1," not in out.stdout:
            fail(f"`collector migrate` on a fresh database said: {out.stdout.strip()}")
        step(out.stdout.strip())

        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        start = end - timedelta(hours=1)
        out = run([collector, "collect", "--config", str(cfg), "--start", start.isoformat(),
                   "--end", end.isoformat(), "--no-progress"], cwd=str(tmp), env=env)
        step(out.stdout.strip())

        shipped = len(list((ROOT / "migrations").glob("*.sql")))
        counts = asyncio.run(check_views(dsn, shipped))
        step("views: " + ", ".join(f"{v} {n} rows" for v, n in counts.items()))

        again = run([collector, "migrate"], cwd=str(tmp), env=env).stdout.strip()
        if "none (schema is current)" not in again:
            fail(f"a second `collector migrate` said: {again}")
        step(f"passed in {time.monotonic() - began:.1f} s")
        return 0
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(timeout=30)
        asyncio.run(_exec(admin, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        if args.keep:
            step(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def _exec(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
