"""`make run` installs the runtime dependencies only and passes PORT on; `make test` adds
the test tools. Checked with `make -n` (prints the commands, runs none)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _dry_run(tmp_path: Path, *args: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    out = subprocess.run([make, "-n", "--no-print-directory", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", *args],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_run_installs_runtime_dependencies_only_and_takes_port(tmp_path: Path) -> None:
    out = _dry_run(tmp_path, "run", "PORT=8123")
    installs = [line for line in out.splitlines() if "pip install" in line]
    assert len(installs) == 1 and installs[0].rstrip().endswith("-e .")
    assert "[dev]" not in out
    assert "collector serve --sandbox --port 8123" in out


def test_make_run_without_port_uses_the_configured_one(tmp_path: Path) -> None:
    out = _dry_run(tmp_path, "run", "PORT=")
    assert out.splitlines()[-1].strip().endswith("collector serve --sandbox")


def test_make_test_adds_the_test_tools(tmp_path: Path) -> None:
    out = _dry_run(tmp_path, "test")
    assert "-e '.[dev]'" in out
    for tool in ("ruff check", "mypy collector", "pytest"):
        assert tool in out
