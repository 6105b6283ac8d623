"""What every settings section shares: unknown keys refused, keywords and enum values
read in any case, and "did you mean" suggestions."""

from __future__ import annotations

import difflib
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
