"""Small builders for unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector.apis.v1.api import plan
from collector.apis.v1.settings import CollectionSettings
from collector.apis.v1.unit import SliceWork
from collector.model import Target

NOW = datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)
COLL = CollectionSettings(groupings=["QUEUE"], metrics=["CONTACTS_HANDLED"], service_levels=[])


def target(iid: str = "i-1", account: str = "a1", region: str = "us-east-1", lease: int | None = None) -> Target:
    return Target(iid, region, account, ("q-1",), lease=lease)


def works(n: int, t: Target | None = None, now: datetime = NOW) -> list[SliceWork]:
    """``n`` consecutive 15-minute slices of one target, ending an hour before ``now``."""
    end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return plan([t or target()], COLL, end - timedelta(minutes=15 * n), end, now)
