"""The README's Layout rules, checked on the source: adapters meet the core in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "collector"
DRIVERS = ("aiobotocore", "botocore", "asyncpg", "pgserver", "collector.adapters")
# The composition root and the CLI's preflights; the adapters and the simulator (an
# HTTP server of its own) are outside the core.
ALLOWED = {"wiring.py", "cli.py"}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _core_modules() -> list[Path]:
    return [
        p for p in sorted(ROOT.rglob("*.py"))
        if not {"adapters", "simulator"} & set(p.relative_to(ROOT).parts)
        and p.relative_to(ROOT).as_posix() not in ALLOWED
    ]


def test_the_core_imports_no_driver_and_no_adapter() -> None:
    offenders = {
        p.relative_to(ROOT).as_posix(): sorted(m for m in _imports(p) if m.startswith(DRIVERS))
        for p in _core_modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) > 20  # the walk found the core


def test_nothing_above_the_adapters_catches_bare_exception() -> None:
    caught = []
    for p in _core_modules():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ExceptHandler) and (
                node.type is None or (isinstance(node.type, ast.Name) and node.type.id in ("Exception", "BaseException"))
            ):
                caught.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert caught == []
