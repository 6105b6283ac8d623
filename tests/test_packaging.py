"""SQL ships inside the package; `migrate` refuses broken installs and newer schemas."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import asyncpg
import pytest

from collector import __version__, errors
from collector.cli import exit_code
from collector.sqlfiles import check_versions, migrations, queries
from tests.cli_run import cli_env, run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_migrations_load_from_the_package_and_match_the_one_copy_in_git() -> None:
    shipped = sorted(p.name for p in files("collector.migrations").iterdir() if p.name.endswith(".sql"))
    in_git = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert shipped == in_git
    assert [f"{m.version:03d}_{m.name}.sql" for m in migrations()] == in_git
    assert not (ROOT / "collector" / "migrations").exists()  # no second copy in the source tree
    assert "upsert_instance" in queries()


def test_no_migrations_at_all_is_an_environment_error() -> None:
    with pytest.raises(errors.MigrationError, match="no migrations found") as e:
        check_versions([], [])
    assert exit_code(e.value) == 3


def test_a_database_newer_than_the_code_is_refused() -> None:
    with pytest.raises(errors.MigrationError, match=r"newer than this connect-collector .*upgrade") as e:
        check_versions([1, 2, 3], [1, 2, 3, 4])
    assert exit_code(e.value) == 3
    check_versions([1, 2, 3], [1, 2])  # older: migrate applies the rest


async def test_version_flag() -> None:
    out = await run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"connect-collector {__version__}"


async def test_migrate_refuses_a_newer_schema_with_one_line_and_exit_3(database_url: str) -> None:
    env = cli_env({"COLLECTOR_DATABASE_URL": database_url})
    first = await run_cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "migrations applied: [1," in first.stdout
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'from_the_future')")
    finally:
        await conn.close()
    out = await run_cli("migrate", env=env)
    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "[999]" in lines[0] and "upgrade connect-collector" in lines[0], out.stderr


async def test_collect_refuses_a_newer_schema_too(tmp_path: Path, database_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    env = cli_env({"COLLECTOR_DATABASE_URL": database_url, "AWS_ACCESS_KEY_ID": "SIM100000000000",
                   "AWS_SECRET_ACCESS_KEY": "simulator"})
    assert (await run_cli("migrate", env=env)).returncode == 0
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'from_the_future')")
    finally:
        await conn.close()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[instances]]\nid = "i-1"\nregion = "us-east-1"\n')
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    out = await run_cli("collect", "--config", str(cfg), "--start", (end - timedelta(hours=1)).isoformat(),
                        "--end", end.isoformat(), env=env)
    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "newer than this connect-collector" in lines[0], out.stderr


def _third_party_imports() -> set[str]:
    import ast
    import sys

    names: set[str] = set()
    for path in (ROOT / "collector").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("collector", "__future__")}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


# imported directly but pinned by the dependency that brings it (declaring it too could conflict)
TRANSITIVE = {"botocore": "aiobotocore"}


def test_runtime_dependencies_are_exactly_what_the_code_imports() -> None:
    import re
    from importlib.metadata import packages_distributions, requires

    declared = {_norm(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0])
                for r in requires("connect-collector") or [] if "extra ==" not in r}
    providers = packages_distributions()
    imported: dict[str, str] = {}
    for module in _third_party_imports():
        dists = {_norm(d) for d in providers.get(module, [])}
        assert dists, f"{module} is imported but no installed distribution provides it"
        if module in TRANSITIVE:
            assert TRANSITIVE[module] in declared
            continue
        hit = dists & declared
        assert hit, f"collector imports {module} ({dists}) but pyproject.toml does not declare it"
        imported[module] = hit.pop()
    unused = declared - set(imported.values())
    assert not unused, f"declared but never imported by collector/: {sorted(unused)}"


async def test_migrate_with_no_migrations_in_the_install_is_one_line_exit_3(
    tmp_path: Path, database_url: str
) -> None:
    """An install whose package lost its SQL (what `pip install .` used to produce)."""
    import sys

    import anyio

    empty = tmp_path / "no-migrations"
    empty.mkdir()
    code = ("import pathlib, sys; import collector.sqlfiles as s; "
            "s.migrations_dir = lambda: pathlib.Path(sys.argv[1]); "
            "from collector.cli import main; raise SystemExit(main(['migrate']))")
    done = await anyio.run_process([sys.executable, "-c", code, str(empty)], check=False,
                                   env=cli_env({"COLLECTOR_DATABASE_URL": database_url}))
    err = done.stderr.decode().strip().splitlines()
    assert done.returncode == 3
    assert len(err) == 1 and "no migrations found in the installed package" in err[0]
    assert "reinstall" in err[0]
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()
