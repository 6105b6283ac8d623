"""What one more credential costs the collector (``python -m bench.sessions [N]``).

For N accounts, each a role to assume (the credentials stay deferred: no STS call is made),
creates one Connect client per account the way ``BotocoreConnect`` does, and one per
account the naive way (a fresh ``AioSession`` each), each in its own process, and prints the
process's CPU seconds and peak RSS for both, side by side with the same for one account.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

CHILD = """
import asyncio, os, resource, sys, time
from collector.model import Target

mode, n = sys.argv[1], int(sys.argv[2])
targets = [Target(f"i-{a}", "us-east-1", f"{a:012d}", (), role_arn=f"arn:aws:iam::{a:012d}:role/C")
           for a in range(n)]

async def adapter() -> None:
    from collector.adapters.connect import BotocoreConnect
    async with BotocoreConnect() as c:
        t0 = time.process_time()
        for t in targets:
            await c.client(t)
        print(time.process_time() - t0)

async def naive() -> None:
    from aiobotocore.session import AioSession
    from contextlib import AsyncExitStack
    async with AsyncExitStack() as stack:
        t0 = time.process_time()
        for t in targets:
            await stack.enter_async_context(AioSession().create_client("connect", region_name=t.region))
        print(time.process_time() - t0)

asyncio.run(adapter() if mode == "adapter" else naive())
"""


def _child(mode: str, n: int) -> tuple[float, float, float]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="SIM000000000000", AWS_SECRET_ACCESS_KEY="x",
               AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(n)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _pid, status, ru = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} {n} failed")
    return float(out.strip()), ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("BENCH_SESSIONS", "20"))
    print(f"{'clients':<28} {'client CPU-s':>12} {'process CPU-s':>14} {'peak RSS':>9}")
    for mode in ("naive", "adapter"):
        for k in (1, n):
            t0 = time.perf_counter()
            cpu_clients, cpu, rss = _child(mode, k)
            _ = time.perf_counter() - t0
            label = f"{mode}, {k} account{'s' if k > 1 else ''}"
            print(f"{label:<28} {cpu_clients:>12.2f} {cpu:>14.2f} {rss:>6.0f} MB")
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)) if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4096 else None
    raise SystemExit(main())
