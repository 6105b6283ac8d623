"""The analyst's questions (examples/queries.sql) and the KPI views they read, against
the simulator's data collected by v1 and V2 profiles into real Postgres: each question
is one SELECT that answers, the views' names are joined in, and the roll-ups equal what
the API gives for the whole day."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from collector import schema
from collector.config import load_settings
from collector.model import Series
from collector.runs import collect
from collector.simulator import FleetSpec, SimulatorConfig
from collector.wiring import runtime
from tests.conftest import StartSim, write_config
from tests.helpers import utc_floor
from tests.test_kpi_rollup import check_rollup

ROOT = Path(__file__).resolve().parent.parent
TZ = "America/New_York"
QUEUE_METRICS = """[
  "CONTACTS_QUEUED", "CONTACTS_HANDLED", "CONTACTS_ABANDONED", "AVG_HANDLE_TIME", "AVG_QUEUE_ANSWER_TIME",
  "ABANDONMENT_RATE",
  { name = "SERVICE_LEVEL", thresholds = [{ comparison = "LT", value = 20 }, { comparison = "LT", value = 60 }] },
  { name = "SUM_CONTACTS_ANSWERED_IN_X", thresholds = [{ comparison = "LT", value = 20 }, { comparison = "LT", value = 60 }] },
]"""
PROFILES = f"""
[[profiles]]
name = "queues_15m"
api = "v2"
interval = "15m"
time_zone = "{TZ}"
groupings = ["QUEUE", "CHANNEL"]
metrics = {QUEUE_METRICS}
[profiles.filters]
queues = "all"

[[profiles]]
name = "queues_daily"
api = "v2"
interval = "1d"
time_zone = "{TZ}"
groupings = ["QUEUE", "CHANNEL"]
metrics = {QUEUE_METRICS}
[profiles.filters]
queues = "all"

[[profiles]]
name = "agents_15m"
api = "v2"
interval = "15m"
time_zone = "{TZ}"
groupings = ["AGENT"]
metrics = ["CONTACTS_HANDLED", "AVG_HANDLE_TIME", "AGENT_OCCUPANCY", "SUM_CONTACT_TIME_AGENT", "SUM_IDLE_TIME_AGENT"]
[profiles.filters]
agents = "all"
"""


def queries() -> dict[str, str]:
    text = (ROOT / "examples" / "queries.sql").read_text(encoding="utf-8")
    parts = re.split(r"^-- name: (\w+)\n", text, flags=re.M)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


async def _collect_everything(start_sim: StartSim, database_url: str, tmp_path: Path) -> dict[str, Any]:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=3, agents_per_instance=4),
                                        throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, extra=PROFILES)
    text = cfg.read_text().replace('account = "', 'name = "Support NY"\naccount = "', 1)
    cfg.write_text(text)
    settings = load_settings(cfg)
    tz = ZoneInfo(TZ)
    today = dt.datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    y_start, y_end = (today - dt.timedelta(days=1)).astimezone(dt.UTC), today.astimezone(dt.UTC)
    now_floor = utc_floor(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20), 900)
    v1_end = now_floor
    async with runtime(settings) as rt:
        for profile in ("queues_15m", "agents_15m"):
            _r, s = await collect(rt, y_start, max(y_end, now_floor - dt.timedelta(hours=2)), profile=profile)
            assert s.slices_failed == 0, s.failures
        _r, s = await collect(rt, y_start, y_end, profile="queues_daily")
        assert s.slices_failed == 0, s.failures
        _r, s = await collect(rt, v1_end - dt.timedelta(hours=2), v1_end)
        assert s.slices_failed == 0, s.failures
        # one failed slice and one gap, for "is my data complete?"
        h.sim.fail_next = [(400, "InvalidParameterException", "injected for the example")]
        _r, s = await collect(rt, v1_end - dt.timedelta(minutes=15), v1_end)
        assert s.slices_failed == 1
        iid = next(iter(h.sim.fleet.instances))
        series = Series(iid, "default", 900, (900, 900))
        await rt.store.record_gaps(series, [v1_end - dt.timedelta(hours=30)], "aged_out", dt.datetime.now(dt.UTC))
        # a service whose frontier is 6 hours back: the 4 hours before what was collected are overdue
        await rt.store.set_frontiers([(series, v1_end - dt.timedelta(hours=6))])
    return {"sim": h.sim, "y_start": y_start, "iid": iid, "v1_end": v1_end}


async def test_each_question_is_one_select_over_the_views_and_roll_ups_match_the_api(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    ctx = await _collect_everything(start_sim, database_url, tmp_path)
    qs = queries()
    assert set(qs) == {"service_level_per_queue_yesterday", "handle_time_per_hour", "abandonment_per_queue",
                       "contacts_and_occupancy_per_agent_per_day", "busiest_half_hour_of_the_week",
                       "missing_slices"}
    conn = await asyncpg.connect(database_url)
    try:
        answers = {name: await conn.fetch(sql) for name, sql in qs.items()}
        for name, rows in answers.items():
            assert rows, f"{name} answered nothing"

        # profiles know their API, interval and time zone
        prof = {r["name"]: dict(r) for r in await conn.fetch("SELECT * FROM profiles")}
        assert (prof["queues_15m"]["api"], prof["queues_15m"]["interval_seconds"], prof["queues_15m"]["period"],
                prof["queues_15m"]["time_zone"]) == ("v2", 900, "FIFTEEN_MIN", TZ)
        assert (prof["default"]["api"], prof["default"]["interval"], prof["default"]["time_zone"]) == ("v1", "15m", "UTC")

        # names joined in: the configured instance name, queue names, agent names
        sl = answers["service_level_per_queue_yesterday"]
        assert {r["instance_name"] for r in sl} == {"Support NY"}
        assert all(r["queue_name"] and r["queue_name"].startswith("queue-") for r in sl)
        for r in sl:
            assert 0 <= r["service_level_20"] <= r["service_level_60"] <= 100
        agents = answers["contacts_and_occupancy_per_agent_per_day"]
        assert all(r["username"].startswith("agent") for r in agents)
        assert all(r["occupancy"] is None or 0 <= r["occupancy"] <= 100 for r in agents)
        assert any(r["occupancy"] is not None for r in agents)

        # the 15-minute slices rolled up to yesterday equal the API's own day (1d profile)
        y_date = ctx["y_start"].astimezone(ZoneInfo(TZ)).date()
        cols = "queue_id, channel, contacts_queued, contacts_handled, contacts_abandoned, service_level, " \
               "avg_handle_time, avg_answer_time, abandonment_rate"
        rolled = {(r["queue_id"], r["channel"]): r for r in await conn.fetch(
            f"SELECT {cols}, intervals FROM kpi_queue_daily WHERE profile = 'queues_15m' AND local_date = $1", y_date)}
        direct = {(r["queue_id"], r["channel"]): r for r in await conn.fetch(
            f"SELECT {cols}, intervals FROM kpi_queue_daily WHERE profile = 'queues_daily' AND local_date = $1", y_date)}
        assert rolled and set(rolled) == set(direct)
        for key, d in direct.items():
            r = rolled[key]
            assert d["intervals"] == 1 and r["intervals"] > 1
            for c in ("contacts_queued", "contacts_handled", "contacts_abandoned", "abandonment_rate"):
                assert r[c] == d[c], (key, c)
            assert r["service_level"] == d["service_level"], key
            for c in ("avg_handle_time", "avg_answer_time"):
                assert abs(r[c] - d[c]) < 0.01, (key, c, r[c], d[c])

        # v1 (UTC slices) lands in the same views with the same service-level shape
        v1 = await conn.fetch("SELECT service_level, abandonment_rate FROM kpi_queue_interval WHERE api = 'v1'")
        assert v1 and all(set(json.loads(r["service_level"] or "{}")) <= {"20", "60"} for r in v1)

        await _wide_is_the_long_view_pivoted(conn)
        # the maintained roll-up (031) on v1 and V2 data (answered-in counts included)
        await check_rollup(conn, "v1 and V2 collections")

        problems = answers["missing_slices"]
        kinds = {(r["kind"], r["profile"]) for r in problems}
        assert ("failed", "default") in kinds and ("gap", "default") in kinds
        v1_end = ctx["v1_end"]
        overdue = await conn.fetch("SELECT interval_start, interval_end FROM collection_problems "
                                   "WHERE kind = 'not_collected' AND interval_start < $1 ORDER BY 1", v1_end)
        assert [(r["interval_start"], r["interval_end"]) for r in overdue] == [
            (v1_end - dt.timedelta(hours=6, minutes=-15 * k), v1_end - dt.timedelta(hours=6, minutes=-15 * (k + 1)))
            for k in range(16)]
        failed = [r for r in problems if r["kind"] == "failed"]
        assert all("injected for the example" in r["reason"] for r in failed)
        assert all(r["instance_id"] == ctx["iid"] for r in problems)
        assert not [r for r in problems if r["kind"] == "not_collected" and r["profile"] != "default"]
    finally:
        await conn.close()


async def _wide_is_the_long_view_pivoted(conn: asyncpg.Connection) -> None:
    """historical_metrics_wide (reading the arrays directly) holds exactly the long view's
    values: one row per slice and dimension group, each v1 metric in its column, v1
    service levels in ``service_level``, V2 values in ``v2_metrics``."""
    keys = ("instance_id", "interval_start", "interval_end", "queue_id", "channel", "routing_profile_id",
            "agent_status_id", "routing_step_expression", "subtype", "validation_test_type", "profile", "api",
            "agent_id", "dimensions")
    want: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in await conn.fetch("SELECT * FROM historical_metrics"):
        row = want.setdefault(tuple(r[k] for k in keys), {c.lower(): None for c in schema.WIDE_METRIC_COLUMNS}
                              | {"service_level": None, "v2_metrics": None})
        if r["api"] == "v2":
            label = r["metric_name"]
            if r["threshold_value"] is not None:
                label += f' {r["threshold_comparison"]} {int(r["threshold_value"])}'
            if r["metric_filters"] is not None:
                label += " " + json.dumps(json.loads(r["metric_filters"]))
            row["v2_metrics"] = {**(row["v2_metrics"] or {}), label: r["value"]}
        elif r["metric_name"] == "SERVICE_LEVEL":
            row["service_level"] = {**(row["service_level"] or {}), str(int(r["threshold_value"])): r["value"]}
        else:
            row[r["metric_name"].lower()] = r["value"]
    got: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in await conn.fetch("SELECT * FROM historical_metrics_wide"):
        row = {c: r[c] for c in [*schema.WIDE_METRIC_COLUMNS, "service_level", "v2_metrics"]}
        for c in ("service_level", "v2_metrics"):
            row[c] = json.loads(row[c]) if row[c] is not None else None
        key = tuple(r[k] for k in keys)
        assert key not in got
        got[key] = row
    assert len(want) > 100 and {r["api"] for r in await conn.fetch("SELECT api FROM historical_metrics_wide")} == {
        "v1", "v2"}
    assert got == want
