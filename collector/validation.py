"""What every settings section shares: unknown keys refused, keywords and enum values
read in any case, and "did you mean" suggestions."""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def keyword(v: Any, word: str, what: str) -> Any:
    """``"all"`` (any case) or a list; anything else is refused in plain words."""
    if isinstance(v, str):
        if v.strip().lower() == word:
            return word
        raise ValueError(f'must be "{word}" or a list of {what}, e.g. [{v.strip()!r}]'.replace("'", '"'))
    if not isinstance(v, list):
        raise ValueError(f'must be "{word}" or a list of {what}')
    return v


def upper(v: Any) -> Any:
    """Enum values are upper case in the API; accept any case where that is unambiguous."""
    return [x.strip().upper() if isinstance(x, str) else x for x in v] if isinstance(v, list) else v


def suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name.upper(), list(known), n=3, cutoff=0.6)
    if close:
        return f"; did you mean {' or '.join(close)}?"
    return f"; known: {', '.join(sorted(known))}"


def unique(values: list[Any], what: str) -> list[Any]:
    """``values`` unchanged, or a ValueError naming the repeated ``what``."""
    if len(set(values)) != len(values):
        raise ValueError(f"a {what} is repeated")
    return values


def in_utc(t: datetime, label: str) -> datetime:
    """An aware time in UTC; a time that has no UTC equivalent (year 1 with an offset east
    of UTC, year 9999 west of it) is refused in plain words (ValueError), not an OverflowError."""
    if t.tzinfo is None:
        raise ValueError(f"{label} {t.isoformat()} has no time zone; give an offset such as Z or +00:00")
    try:
        return t.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{label} {t.isoformat()} is out of range (years 1-9999 in UTC)") from None


def instance_id_problem(iid: str) -> str | None:
    """Why ``iid`` cannot be a Connect instance id (1-100 printable characters), or None."""
    if not 1 <= len(iid) <= 100:
        return "an instance id has 1-100 characters"
    if any(not ch.isprintable() or 0xD800 <= ord(ch) <= 0xDFFF for ch in iid):
        return "an instance id has only printable characters (no NUL, control characters or lone surrogates)"
    return None
