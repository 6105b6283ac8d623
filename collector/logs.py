"""Structured logs with stable event names; secrets never reach them."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(password|secret|token|dsn|authorization|access_key|session_key)", re.I)
_DSN_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")


def redact(value: Any) -> Any:
    if isinstance(value, str):
        return _DSN_PASSWORD.sub(r"\1***\3", value)
    return value


def _redactor(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k, v in list(event.items()):
        if k != "event" and _SECRET_KEYS.search(k):
            event[k] = "***"
        else:
            event[k] = redact(v)
    return event


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is at the time of the call."""

    def __init__(self, *_args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def configure(fmt: str = "console", level: str = "info") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )
    # While the database is away asyncpg's pool logs a traceback for each failed attempt to
    # refill itself; the service's own `retry` events already say what is happening.
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
