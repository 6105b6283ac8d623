"""Drive the real ``collector`` CLI in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

import anyio


def cli_env(extra: Mapping[str, str] | None = None, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment without any COLLECTOR_/AWS_ settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COLLECTOR_", "AWS_")) and k not in drop}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra or {})
    return env


async def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: str | None = None,
                  limit: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m collector ARGS`` to its end; stdout and stderr as text."""
    with anyio.fail_after(limit):
        done = await anyio.run_process(
            [sys.executable, "-m", "collector", *args], env=dict(env or cli_env()), cwd=cwd,
            check=False,
        )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(),
                                       done.stderr.decode())
