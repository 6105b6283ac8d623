"""Durations as the config writes them: ``"15m"``, ``"1h"``, ``"90d"``, ``"900s"`` or ``900``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)?\s*$", re.IGNORECASE)


def parse_duration(text: str | int) -> int:
    """``"15m"`` / ``"1h"`` / ``"900s"`` / ``900`` -> seconds."""
    if isinstance(text, int):
        return text
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration like '15m', '1h' or '900s'")
    n, unit = int(m.group(1)), (m.group(2) or "s").lower()
    return n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
