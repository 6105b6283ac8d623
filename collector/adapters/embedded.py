"""The embedded PostgreSQL (pgserver) used when no DSN is configured."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("collector.embedded")

_servers: dict[str, Any] = {}


def embedded_dsn(data_dir: str) -> str:
    """Start (or reuse) an embedded Postgres under ``data_dir``; return its DSN."""
    if "XDG_RUNTIME_DIR" not in os.environ:  # pgserver's platformdirs wants a private runtime dir
        runtime_dir = Path(f"/tmp/collector-runtime-{os.getuid()}")
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    import pgserver  # imported here: only the embedded default needs it

    path = str(Path(data_dir).resolve())
    server = _servers.get(path)
    if server is None:
        Path(path).mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(path, cleanup_mode="stop")  # type: ignore[attr-defined]
        _servers[path] = server
        log.info("embedded_postgres_started", data_dir=path)
    uri: str = server.get_uri()
    return uri
