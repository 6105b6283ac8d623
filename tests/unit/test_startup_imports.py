"""Start-up off the critical path: a one-off ``collector collect`` imports only what it
runs. The HTTP stack (FastAPI, uvicorn, the service's API) and the simulator cost start-up
time before the first request and have no part in a collect."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap

import pytest

from collector import cli

pytestmark = pytest.mark.unit

NOT_ON_THE_COLLECT_PATH = (
    "fastapi", "uvicorn", "starlette", "collector.http_api", "collector.service", "collector.simulator",
    "rich.progress", "pgserver",
)


def _collect_imports() -> list[str]:
    """The modules ``collector collect`` imports when it runs (its function-level imports)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cli._collect)))
    return sorted({n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
                  - {"collector.terminal"})  # only with a terminal (the progress bar)


def test_collect_imports_neither_the_http_stack_nor_the_simulator() -> None:
    modules = ["collector.cli", *_collect_imports()]
    assert "collector.wiring" in modules and "collector.runs" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(' '.join(m for m in {NOT_ON_THE_COLLECT_PATH!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
