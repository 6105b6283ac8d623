"""The fast unit tier: in-memory fakes only (tests/fakes.py), no Postgres, no simulator.

Every test here is marked ``unit``: ``pytest -m unit`` (or ``pytest tests/unit``) runs
the tier alone in seconds. Nothing here asks for the ``database_url`` or ``start_sim``
fixtures, so no database server is started."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.unit)
