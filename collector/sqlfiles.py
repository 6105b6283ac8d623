"""SQL lives in .sql files: versioned migrations and named queries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = ROOT / "migrations"
QUERIES_FILE = Path(__file__).resolve().parent / "sql" / "queries.sql"
_MIGRATION = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out = []
    for p in sorted(directory.glob("*.sql")):
        m = _MIGRATION.match(p.name)
        if not m:
            raise ValueError(f"migration file {p.name} is not named NNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), p.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a version number")
    return out


@cache
def queries() -> dict[str, str]:
    text = QUERIES_FILE.read_text()
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
