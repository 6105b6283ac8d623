"""GetMetricDataV2 planner: every request within every limit (property tests),
slices aligned to the interval in the profile's time zone, DST days 23/25 hours."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.apis.v2 import catalog
from collector.apis.v2.api import plan
from collector.apis.v2.assemble import split_window
from collector.apis.v2.model import MetricV2, PageV2, V2Request
from collector.apis.v2.planner import (
    check_request,
    filter_batches,
    newest_end,
    nominal_seconds,
    oldest_start,
    slices,
)
from collector.apis.v2.settings import V2ProfileSettings
from collector.errors import MalformedResponse, PlanError
from collector.model import Target

NOW = datetime(2026, 11, 26, 12, 7, 31, tzinfo=UTC)
TARGET = Target("inst-1", "us-east-1", "123456789012", ())
ZONES = ["UTC", "America/New_York", "Europe/London", "Asia/Kolkata", "Australia/Sydney", "Asia/Kathmandu"]
# metrics that take every resource key as grouping and filter (so any grouping choice is valid)
AGENT_METRICS = sorted(
    n for n, s in catalog.METRICS.items()
    if {"QUEUE", "AGENT", "ROUTING_PROFILE", "CHANNEL", *catalog.HIERARCHY_LEVELS} <= s.groupings
    and not s.takes_threshold
)
RESOURCE_KEYS = ["queues", "agents", "routing_profiles", "agent_hierarchy_level_one", "agent_hierarchy_level_two"]
API_KEY = {"queues": "QUEUE", "agents": "AGENT", "routing_profiles": "ROUTING_PROFILE",
           "agent_hierarchy_level_one": "AGENT_HIERARCHY_LEVEL_ONE",
           "agent_hierarchy_level_two": "AGENT_HIERARCHY_LEVEL_TWO"}


def _profile(**kw: Any) -> V2ProfileSettings:
    base: dict[str, Any] = {"name": "p", "api": "v2", "filters": {"queues": "all"}, "metrics": ["CONTACTS_HANDLED"]}
    return V2ProfileSettings(**{**base, **kw})


@st.composite
def profiles(draw: st.DrawFn) -> tuple[V2ProfileSettings, dict[str, dict[str, list[str]]]]:
    interval = draw(st.sampled_from(list(catalog.INTERVALS)))
    tz = draw(st.sampled_from(ZONES))
    keys = draw(st.lists(st.sampled_from(RESOURCE_KEYS), min_size=1, max_size=4, unique=True))
    with_channels = draw(st.booleans())
    found: dict[str, list[str]] = {}
    filters: dict[str, Any] = {}
    for k in keys:
        n = draw(st.integers(1, 400))
        vals = [f"{k[:2]}-{i}" for i in range(n)]
        if draw(st.booleans()):
            filters[k] = "all"
            found[API_KEY[k]] = vals
        else:
            filters[k] = vals
    if with_channels:
        filters["channels"] = draw(st.lists(st.sampled_from(list(catalog.CHANNELS)), min_size=1, unique=True))
    # every key that may need batching is grouped
    groupings = [API_KEY[k] for k in keys]
    extra = draw(st.lists(st.sampled_from(["CHANNEL", "AGENT", "QUEUE"]), max_size=2, unique=True))
    groupings += [g for g in extra if g not in groupings]
    groupings = groupings[:4]
    for k in keys:  # keys cut by the 4-groupings limit: keep them small enough for one request
        if API_KEY[k] not in groupings:
            small = [f"{k[:2]}-{i}" for i in range(3)]
            filters[k] = small
            found.pop(API_KEY[k], None)
    metrics: list[Any] = draw(st.lists(st.sampled_from(AGENT_METRICS), min_size=1, max_size=8, unique=True))
    if draw(st.booleans()):
        metrics.append({"name": "CONTACTS_HANDLED", "metric_filters": [
            {"key": "INITIATION_METHOD", "values": ["INBOUND", "OUTBOUND"][: draw(st.integers(1, 2))]},
            {"key": "DISCONNECT_REASON", "values": ["AGENT_DISCONNECT"], "negate": True},
        ]})
    p = _profile(interval=interval, time_zone=tz, groupings=groupings, filters=filters, metrics=metrics,
                 max_results=draw(st.integers(1, 100)))
    return p, {TARGET.instance_id: found}


@settings(max_examples=60, deadline=None)
@given(profiles(), st.integers(0, 3600))
def test_a_90_day_backfill_is_planned_within_every_limit(
    case: tuple[V2ProfileSettings, dict[str, dict[str, list[str]]]], margin: int
) -> None:
    p, found = case
    interval, tz = p.interval_period, p.time_zone
    start, end = oldest_start(NOW, interval, tz, margin), newest_end(NOW, interval, tz)
    windows = plan([TARGET], p, start, end, NOW, found, lookback_margin=margin)
    limit = catalog.MAX_RANGE_SECONDS[interval]
    # the slices tile [start, end) exactly, in order, each aligned to the interval
    keys = [k for w in windows for k in w.slices]
    assert keys[0].start == start and keys[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(keys))
    assert keys == [k for k in (k for w in windows for k in w.slices)]
    assert [(k.start, k.end) for k in keys] == slices(start, end, interval, tz)
    assert start >= NOW - timedelta(days=90) + timedelta(seconds=margin)
    for w in windows:
        assert (w.end - w.start).total_seconds() < limit
        for r in w.requests:
            check_request(r, NOW)
            assert (r.start, r.end) == (w.start, w.end)
            counted = sum(len(v) for k, v in r.filters if k != "CHANNEL")
            assert 1 <= len(r.filters) <= 5 and counted <= 100
            assert len(r.groupings) <= 4 and 1 <= r.max_results <= 100
            for m in r.metrics:
                assert len(m.metric_filters) <= 2 and all(len(f.values) <= 10 for f in m.metric_filters)
    # as much range per request as allowed: one more slice would break the range limit
    for a, b in itertools.pairwise(windows):
        assert (b.slices[0].end - a.start).total_seconds() >= limit
    # every combination of resource values is asked exactly once per window (batches are disjoint)
    w = windows[0]
    chunks = Counter(r.metrics for r in w.requests)
    for metrics, n in chunks.items():
        reqs = [r for r in w.requests if r.metrics == metrics]
        assert len(reqs) == n
        per_key: dict[str, Counter[str]] = {}
        for r in reqs:
            for k, vals in r.filters:
                per_key.setdefault(k, Counter()).update(vals)
        total = 1
        for k, c in per_key.items():
            batches = {tuple(v) for r in reqs for kk, v in r.filters if kk == k}
            assert sum(len(b) for b in batches) == len(c)  # disjoint
            total *= len(batches)
        assert total == n  # the cartesian product of the batches, nothing twice


def test_day_slices_follow_local_midnight_across_dst() -> None:
    tz = "America/New_York"
    start = datetime(2026, 3, 6, 5, tzinfo=UTC)  # local midnight, EST
    end = datetime(2026, 3, 10, 4, tzinfo=UTC)  # local midnight, EDT
    got = slices(start, end, "DAY", tz)
    hours = [(e - s).total_seconds() / 3600 for s, e in got]
    assert hours == [24, 24, 23, 24]
    fall = slices(datetime(2026, 10, 31, 4, tzinfo=UTC), datetime(2026, 11, 2, 5, tzinfo=UTC), "DAY", tz)
    assert [(e - s).total_seconds() / 3600 for s, e in fall] == [24, 25]
    for s, _e in got + fall:
        local = s.astimezone(ZoneInfo(tz))
        assert (local.hour, local.minute) == (0, 0)
    weeks = slices(datetime(2026, 3, 2, 5, tzinfo=UTC), datetime(2026, 3, 16, 4, tzinfo=UTC), "WEEK", tz)
    assert [(e - s).total_seconds() / 3600 for s, e in weeks] == [167, 168]
    assert all(s.astimezone(ZoneInfo(tz)).weekday() == 0 for s, _e in weeks)
    assert (nominal_seconds("DAY"), nominal_seconds("WEEK"), nominal_seconds("HOUR")) == (86400, 604800, 3600)
    with pytest.raises(PlanError, match="not on a DAY boundary in America/New_York"):
        slices(datetime(2026, 3, 6, 0, tzinfo=UTC), end, "DAY", tz)
    # HOUR in a half-hour zone aligns to the local hour
    (h,) = slices(datetime(2026, 3, 6, 4, 30, tzinfo=UTC), datetime(2026, 3, 6, 5, 30, tzinfo=UTC), "HOUR", "Asia/Kolkata")
    assert h[0].astimezone(ZoneInfo("Asia/Kolkata")).minute == 0


def test_windows_cover_just_under_the_range_limit() -> None:
    p = _profile(interval="15m", groupings=["QUEUE"])
    end = newest_end(NOW, "FIFTEEN_MIN", "UTC")
    ws = plan([TARGET], p, end - timedelta(days=6), end, NOW, {"inst-1": {"QUEUE": ["q1"]}})
    assert [len(w.slices) for w in ws] == [287, 287, 2]  # < 3 days each
    d = _profile(interval="1d", time_zone="America/New_York", groupings=["QUEUE"])
    start = oldest_start(NOW, "DAY", "America/New_York")
    ws = plan([TARGET], d, start, newest_end(NOW, "DAY", "America/New_York"), NOW, {"inst-1": {"QUEUE": ["q1"]}})
    assert all(len(w.slices) <= 35 for w in ws) and sum(len(w.slices) for w in ws) == 89


def test_plan_refuses_what_the_api_would() -> None:
    p = _profile(groupings=["QUEUE"])
    end = newest_end(NOW, "FIFTEEN_MIN", "UTC")
    found = {"inst-1": {"QUEUE": ["q1"]}}
    with pytest.raises(PlanError, match="more than 90 days ago"):
        plan([TARGET], p, end - timedelta(days=91), end, NOW, found)
    with pytest.raises(PlanError, match="in the future"):
        plan([TARGET], p, end, end + timedelta(hours=1), NOW, found)
    with pytest.raises(PlanError, match="not discovered yet"):
        plan([TARGET], p, end - timedelta(hours=1), end, NOW, {})
    # 150 agents not grouped: their batches' sums could not be combined
    a = _profile(groupings=["QUEUE"], filters={"queues": ["q1"], "agents": [f"a{i}" for i in range(150)]})
    with pytest.raises(PlanError, match="AGENT is not among the groupings"):
        plan([TARGET], a, end - timedelta(hours=1), end, NOW, {})


def test_filter_batches_share_the_100_values() -> None:
    b = filter_batches({"QUEUE": [f"q{i}" for i in range(30)], "AGENT": [f"a{i}" for i in range(240)],
                        "CHANNEL": ["VOICE", "CHAT"]}, ["AGENT", "QUEUE"])
    assert len(b) == 4  # 30 queues whole, 240 agents in batches of 70
    for combo in b:
        d = dict(combo)
        assert len(d["QUEUE"]) == 30 and len(d["AGENT"]) <= 70 and d["CHANNEL"] == ("VOICE", "CHAT")


def _req(**kw: Any) -> V2Request:
    base: dict[str, Any] = dict(
        resource_arn="arn:aws:connect:us-east-1:123456789012:instance/inst-1",
        start=NOW - timedelta(hours=2), end=NOW - timedelta(hours=1), interval="FIFTEEN_MIN",
        time_zone="UTC", filters=(("QUEUE", ("q1",)),), groupings=("QUEUE",),
        metrics=(MetricV2("CONTACTS_HANDLED", "COUNT"),), max_results=100,
    )
    return V2Request(**{**base, **kw})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"end": NOW - timedelta(hours=2) + timedelta(days=3)}, "less than 3 days"),
        ({"start": NOW - timedelta(days=91), "end": NOW - timedelta(days=90, hours=23)}, "more than 3 months"),
        ({"end": NOW + timedelta(minutes=1)}, "later than now"),
        ({"filters": (("CHANNEL", ("VOICE",)),)}, "needs QUEUE, ROUTING_PROFILE, AGENT"),
        ({"filters": tuple((k, ("x",)) for k in ["QUEUE", "AGENT", "ROUTING_PROFILE", "CHANNEL",
                                                 "AGENT_HIERARCHY_LEVEL_ONE", "AGENT_HIERARCHY_LEVEL_TWO"])},
         "1-5 keys"),
        ({"filters": (("QUEUE", tuple(f"q{i}" for i in range(60))), ("AGENT", tuple(f"a{i}" for i in range(41))))},
         "at most 100 filter values"),
        ({"groupings": ("QUEUE", "AGENT", "CHANNEL", "ROUTING_PROFILE", "AGENT_HIERARCHY_LEVEL_ONE")}, "at most 4"),
        ({"metrics": (MetricV2("SERVICE_LEVEL", "PERCENT"),)}, "needs a Threshold"),
        ({"metrics": (MetricV2("SERVICE_LEVEL", "PERCENT", ("GT", 20.0)),)}, "comparisons LT/LTE"),
        ({"metrics": (MetricV2("SERVICE_LEVEL", "PERCENT", ("LT", 0.5)),)}, "whole number"),
        ({"groupings": ("AGENT",), "metrics": (MetricV2("SERVICE_LEVEL", "PERCENT", ("LT", 20.0)),)},
         "cannot be grouped by AGENT"),
        ({"metrics": tuple(MetricV2("SERVICE_LEVEL", "PERCENT", ("LT", float(t))) for t in range(1, 22))},
         "at most 20 SERVICE_LEVEL"),
        ({"metrics": (MetricV2("BOT_INTENTS_COMPLETED", "COUNT"),)}, "bot metric"),
        ({"max_results": 101}, "MaxResults"),
        ({"interval": "TOTAL"}, "not collected"),
    ],
)
def test_check_request_names_the_limit(change: dict[str, Any], message: str) -> None:
    check_request(_req(), NOW)
    with pytest.raises(PlanError, match=message):
        check_request(_req(**change), NOW)


def test_split_window_by_metric_interval() -> None:
    p = _profile(groupings=["QUEUE"])
    end = newest_end(NOW, "FIFTEEN_MIN", "UTC")
    (w,) = plan([TARGET], p, end - timedelta(hours=1), end, NOW, {"inst-1": {"QUEUE": ["q1"]}})
    ms = w.requests[0].metrics
    s0 = int(w.slices[0].start.timestamp())
    rows: list[tuple[int, int, tuple[tuple[tuple[str, str], ...], list[float | None]]]] = [
        (s0, s0 + 900, ((("QUEUE", "q1"),), [3.0])), (s0 + 1800, s0 + 2700, ((("QUEUE", "q1"),), [None]))
    ]
    out = split_window(w.slices, [PageV2(ms, rows)], NOW)
    assert [s.rows for s in out] == [1, 0, 1, 0]
    assert out[2].pages == [(ms, [((("QUEUE", "q1"),), [None])])]
    with pytest.raises(MalformedResponse, match="not on a slice"):
        split_window(w.slices, [PageV2(ms, [(s0 + 60, s0 + 960, ((), [1.0]))])], NOW)
    with pytest.raises(MalformedResponse, match="ends at"):
        split_window(w.slices, [PageV2(ms, [(s0, s0 + 1800, ((), [1.0]))])], NOW)
    with pytest.raises(MalformedResponse, match="appears twice"):
        split_window(w.slices, [PageV2(ms, rows), PageV2(ms, rows[:1])], NOW)
