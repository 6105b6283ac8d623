"""The simulator's metrics agree with each other the way Connect's do (issue 19, item 5):
every metric of a group derives from one summary of its contacts, deterministically."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

from collector.simulator import FleetSpec, Simulator, SimulatorConfig

V1_METRICS: list[tuple[str, float | None]] = [
    ("CONTACTS_QUEUED", None), ("CONTACTS_HANDLED", None), ("CONTACTS_ABANDONED", None),
    ("HANDLE_TIME", None), ("INTERACTION_AND_HOLD_TIME", None), ("INTERACTION_TIME", None),
    ("HOLD_TIME", None), ("QUEUE_ANSWER_TIME", None), ("QUEUED_TIME", None),
    ("SERVICE_LEVEL", 10.0), ("SERVICE_LEVEL", 20.0), ("SERVICE_LEVEL", 60.0), ("SERVICE_LEVEL", 300.0),
]


def _sl(comparison: str, value: int) -> list[dict[str, Any]]:
    return [{"Comparison": comparison, "ThresholdValue": value}]


V2_QUEUE_METRICS: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("CONTACTS_QUEUED", [], []), ("CONTACTS_HANDLED", [], []), ("CONTACTS_ABANDONED", [], []),
    ("ABANDONMENT_RATE", [], []), ("AVG_HANDLE_TIME", [], []), ("AVG_INTERACTION_AND_HOLD_TIME", [], []),
    ("AVG_INTERACTION_TIME", [], []), ("AVG_QUEUE_ANSWER_TIME", [], []),
    ("SERVICE_LEVEL", _sl("LT", 20), []), ("SERVICE_LEVEL", _sl("LT", 60), []),
    ("SERVICE_LEVEL", _sl("LTE", 60), []), ("SUM_CONTACTS_ANSWERED_IN_X", _sl("LT", 20), []),
    ("SUM_CONTACTS_ANSWERED_IN_X", _sl("LT", 60), []),
]
V2_AGENT_METRICS: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("CONTACTS_HANDLED", [], []), ("AGENT_OCCUPANCY", [], []), ("SUM_CONTACT_TIME_AGENT", [], []),
    ("SUM_IDLE_TIME_AGENT", [], []),
]


def _sim() -> Simulator:
    return Simulator(SimulatorConfig(fleet=FleetSpec(accounts=1, instances_per_account=1, queues_per_instance=4)))


def _values(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in result["Collections"]:
        m = c["Metric"]
        t = m.get("Threshold")
        if isinstance(t, list):
            key = f'{m["Name"]} {t[0]["Comparison"]} {t[0]["ThresholdValue"]}'
        elif t:
            key = f'{m["Name"]} {t["ThresholdValue"]:g}'
        else:
            key = m["Name"]
        out[key] = c.get("Value")
    return out


def test_v1_metrics_of_a_group_agree() -> None:
    sim = _sim()
    (iid, inst), = sim.fleet.instances.items()
    start = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
    seen = 0
    for k in range(8):
        s = start + dt.timedelta(minutes=15 * k)
        filters = {"Queues": list(inst.queues), "Channels": ["VOICE", "CHAT", "TASK"]}
        results = sim.expected(iid, s, s + dt.timedelta(minutes=15), ["QUEUE", "CHANNEL"], filters, V1_METRICS)
        assert results == sim.expected(iid, s, s + dt.timedelta(minutes=15), ["QUEUE", "CHANNEL"], filters,
                                       V1_METRICS)  # deterministic
        for r in results:
            v = _values(r)
            assert v["CONTACTS_HANDLED"] + v["CONTACTS_ABANDONED"] <= v["CONTACTS_QUEUED"]
            if v["CONTACTS_QUEUED"] == 0:
                continue
            sls = [v[f"SERVICE_LEVEL {t}"] for t in (10, 20, 60, 300)]
            assert sls == sorted(sls) and sls[0] >= 0 and sls[-1] <= 100
            assert sls[-1] <= 100.0 * v["CONTACTS_HANDLED"] / v["CONTACTS_QUEUED"] + 0.01
            if v["CONTACTS_HANDLED"]:
                assert v["HANDLE_TIME"] >= v["INTERACTION_AND_HOLD_TIME"] >= v["INTERACTION_TIME"]
                assert v["INTERACTION_AND_HOLD_TIME"] >= v["HOLD_TIME"]
                assert v["QUEUED_TIME"] >= v["QUEUE_ANSWER_TIME"]
                seen += 1
    assert seen > 20


def _v2(sim: Simulator, start: dt.datetime, end: dt.datetime, period: str, groupings: list[str],
        metrics: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    (inst,) = sim.fleet.instances.values()
    return sim.v2.results(inst, int(start.timestamp()), int(end.timestamp()), period, ZoneInfo("Europe/Berlin"),
                          {"QUEUE": list(inst.queues)}, groupings, metrics)


def test_v2_queue_metrics_agree_and_intervals_sum_to_the_day() -> None:
    sim = _sim()
    day = dt.datetime(2026, 3, 2, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(dt.UTC)
    quarters = _v2(sim, day, day + dt.timedelta(days=1), "FIFTEEN_MIN", ["QUEUE", "CHANNEL"], V2_QUEUE_METRICS)
    whole = _v2(sim, day, day + dt.timedelta(days=1), "DAY", ["QUEUE", "CHANNEL"], V2_QUEUE_METRICS)
    assert quarters == _v2(sim, day, day + dt.timedelta(days=1), "FIFTEEN_MIN", ["QUEUE", "CHANNEL"],
                           V2_QUEUE_METRICS)  # deterministic
    sums: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in quarters + whole:
        v = _values(r)
        assert v["CONTACTS_HANDLED"] + v["CONTACTS_ABANDONED"] <= v["CONTACTS_QUEUED"]
        assert v["SERVICE_LEVEL LT 20"] <= v["SERVICE_LEVEL LT 60"] <= v["SERVICE_LEVEL LTE 60"] <= 100
        assert v["SUM_CONTACTS_ANSWERED_IN_X LT 20"] <= v["SUM_CONTACTS_ANSWERED_IN_X LT 60"] <= v["CONTACTS_HANDLED"]
        assert v["SERVICE_LEVEL LT 60"] == round(100.0 * v["SUM_CONTACTS_ANSWERED_IN_X LT 60"] / v["CONTACTS_QUEUED"], 2)
        assert v["ABANDONMENT_RATE"] == round(100.0 * v["CONTACTS_ABANDONED"] / v["CONTACTS_QUEUED"], 2)
        assert v["AVG_HANDLE_TIME"] >= v["AVG_INTERACTION_AND_HOLD_TIME"] >= v["AVG_INTERACTION_TIME"]
        if r in quarters:
            key = tuple(sorted(r["Dimensions"].items()))
            for name in ("CONTACTS_QUEUED", "CONTACTS_HANDLED", "CONTACTS_ABANDONED", "SUM_CONTACTS_ANSWERED_IN_X LT 20"):
                sums[key][name] += v[name]
            sums[key]["handle"] += v["AVG_HANDLE_TIME"] * v["CONTACTS_HANDLED"]
    assert len(whole) == len(sums) > 4
    for r in whole:
        v, s = _values(r), sums[tuple(sorted(r["Dimensions"].items()))]
        for name in ("CONTACTS_QUEUED", "CONTACTS_HANDLED", "CONTACTS_ABANDONED", "SUM_CONTACTS_ANSWERED_IN_X LT 20"):
            assert v[name] == s[name], name
        # the day's average handle time is the quarters' weighted by contacts handled
        assert abs(v["AVG_HANDLE_TIME"] - s["handle"] / s["CONTACTS_HANDLED"]) < 0.01 * len(quarters)


def test_v2_agent_occupancy_is_contact_time_over_contact_and_idle_time() -> None:
    sim = _sim()
    start = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
    results = _v2(sim, start, start + dt.timedelta(hours=2), "FIFTEEN_MIN", ["AGENT"], V2_AGENT_METRICS)
    assert results
    for r in results:
        v = _values(r)
        busy, idle = v["SUM_CONTACT_TIME_AGENT"], v["SUM_IDLE_TIME_AGENT"]
        assert 0 <= v["AGENT_OCCUPANCY"] <= 100
        assert v["AGENT_OCCUPANCY"] == round(100.0 * busy / (busy + idle), 2)


def test_v1_and_v2_agree_on_a_queue_and_channel_where_they_measure_the_same_thing() -> None:
    sim = _sim()
    (iid, inst), = sim.fleet.instances.items()
    start = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
    end = start + dt.timedelta(hours=1)
    v2 = {(r["Dimensions"]["QUEUE"], r["Dimensions"]["CHANNEL"], r["MetricInterval"]["StartTime"]): _values(r)
          for r in _v2(sim, start, end, "FIFTEEN_MIN", ["QUEUE", "CHANNEL"], V2_QUEUE_METRICS)}
    v1: dict[tuple[str, str, int], dict[str, Any]] = {}
    for k in range(4):
        s = start + dt.timedelta(minutes=15 * k)
        filters = {"Queues": list(inst.queues), "Channels": ["VOICE", "CHAT", "TASK"]}
        for r in sim.expected(iid, s, s + dt.timedelta(minutes=15), ["QUEUE", "CHANNEL"], filters, V1_METRICS):
            v1[(r["Dimensions"]["Queue"]["Id"], r["Dimensions"]["Channel"], int(s.timestamp()))] = _values(r)
    assert v2 and set(v2) <= set(v1)  # every V2 group has its v1 twin
    pairs = [("CONTACTS_QUEUED", "CONTACTS_QUEUED"), ("CONTACTS_HANDLED", "CONTACTS_HANDLED"),
             ("CONTACTS_ABANDONED", "CONTACTS_ABANDONED"), ("HANDLE_TIME", "AVG_HANDLE_TIME"),
             ("INTERACTION_TIME", "AVG_INTERACTION_TIME"), ("QUEUE_ANSWER_TIME", "AVG_QUEUE_ANSWER_TIME"),
             ("SERVICE_LEVEL 20", "SERVICE_LEVEL LT 20"), ("SERVICE_LEVEL 60", "SERVICE_LEVEL LT 60")]
    for key, b in v2.items():
        a = v1[key]
        for n1, n2 in pairs:
            assert a[n1] == b[n2], (key, n1, a[n1], b[n2])
