"""SQL lives in .sql files: versioned migrations and named queries.

Both ship inside the package and are read with :mod:`importlib.resources`, so an
installed wheel, an editable install and the container see the same files. The
migrations' one copy in git is the top-level ``migrations/`` directory, which the
build installs as the ``collector.migrations`` package (see setup.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from collector.errors import MigrationError

_MIGRATION = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Traversable:
    return files("collector.migrations")


def migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """Every migration shipped with this version, in order."""
    root = migrations_dir() if directory is None else directory
    out = []
    for p in sorted((p for p in root.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
        m = _MIGRATION.match(p.name)
        if not m:
            raise ValueError(f"migration file {p.name} is not named NNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), p.read_text(encoding="utf-8")))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a version number")
    return out


def check_versions(known: Iterable[int], applied: Iterable[int]) -> None:
    """Refuse to migrate with no migrations at all (a broken install), or a database
    whose schema is newer than this version of the code."""
    known_set, applied_set = set(known), set(applied)
    if not known_set:
        raise MigrationError(
            f"no migrations found in the installed package ({migrations_dir()}); "
            "reinstall connect-collector from a wheel or `pip install .`"
        )
    newer = sorted(applied_set - known_set)
    if newer and max(newer) > max(known_set):
        raise MigrationError(
            f"the database has migration(s) {newer}, newer than this connect-collector "
            f"(it knows up to {max(known_set)}); upgrade connect-collector"
        )


@cache
def queries() -> dict[str, str]:
    """Every named query of every ``collector/sql/*.sql`` file; a name is used once."""
    out: dict[str, str] = {}
    for f in sorted((p for p in (files("collector") / "sql").iterdir() if p.name.endswith(".sql")),
                    key=lambda p: p.name):
        for name, sql in _named(f.read_text(encoding="utf-8")).items():
            if name in out:
                raise ValueError(f"query {name!r} is named twice (again in {f.name})")
            out[name] = sql
    return out


def _named(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    name: str | None = None
    buf: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^--\s*name:\s*(\w+)\s*$", line)
        if m:
            if name:
                out[name] = "\n".join(buf).strip()
            name, buf = m.group(1), []
        elif name is not None and not line.startswith("--"):
            buf.append(line)
    if name:
        out[name] = "\n".join(buf).strip()
    return out


def q(name: str) -> str:
    return queries()[name]
