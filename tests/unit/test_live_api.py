"""The real-time APIs as the metric API port: their settings name the key at fault,
their requests keep every limit (100 queues, routing profiles or agents a request; one
user-data filter), and the one scheduler runs them as live profiles: due at a period's
start, never revisited, a missed period recorded as a gap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from collector.apis.current.api import AgentsApi, CurrentApi
from collector.apis.current.decode import current_page, user_page
from collector.apis.current.model import CurrentRequest, UserDataRequest
from collector.apis.current.planner import check_current, check_user_data
from collector.apis.current.settings import AgentsProfileSettings, CurrentProfileSettings
from collector.config import Settings
from collector.errors import MalformedResponse, PlanError
from collector.model import ScheduleOptions, SliceKey, Target
from collector.ports import CompletedSlice
from collector.scheduler import plan_round
from tests.fakes import InMemoryStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 12, 0, 7, tzinfo=UTC)  # 7 s into the 12:00:00 period
P0 = NOW.replace(second=0)
OPTS = ScheduleOptions()  # the service's defaults: settle 15m, revisits 1h ...


def _t(queues: int = 3, agents: int = 0) -> Target:
    res = (("agents", tuple(f"a-{i}" for i in range(agents))),) if agents else ()
    return Target("i-1", "us-east-1", "111111111111", tuple(f"q-{i}" for i in range(queues)), resources=res)


def _error(cls: type, **kw: object) -> str:
    with pytest.raises(ValidationError) as e:
        cls(name="p", **kw)
    return str(e.value)


def test_bad_settings_name_the_key_at_fault() -> None:
    assert "every" in _error(CurrentProfileSettings, every="7s")
    assert "did you mean CONTACTS_IN_QUEUE" in _error(CurrentProfileSettings, metrics=["CONTACTS_IN_QEUE"])
    assert "not both" in _error(CurrentProfileSettings, filters={"queues": "all", "routing_profiles": "all"})
    assert "AGENTS_ONLINE" in _error(CurrentProfileSettings, groupings=["QUEUE", "AGENT_STATUS"])
    assert "CHANNEL needs filters.channels" in _error(CurrentProfileSettings, filters={"queues": "all"})
    assert "at most 10" in _error(CurrentProfileSettings, filters={"queues": "all", "subtypes": list("abcdefghijk")})
    assert "exactly one queue" in _error(CurrentProfileSettings, groupings=["ROUTING_STEP_EXPRESSION"],
                                         filters={"queues": "all", "routing_step_expressions": ["x"]})
    assert "exactly one of" in _error(AgentsProfileSettings, filters={"queues": "all", "agents": ["a"]})
    assert "unknown filter 'agent'" in _error(AgentsProfileSettings, filters={"agent": ["a"]})
    assert "unknown contact state" in _error(AgentsProfileSettings, contact_states=["CONECTED"])


def test_the_config_picks_a_profile_by_its_api_and_refuses_an_unknown_one() -> None:
    s = Settings.model_validate({"profiles": [{"name": "q", "api": "current"}, {"name": "a", "api": "agents"}]})
    assert [type(p).__name__ for p in s.profiles] == ["CurrentProfileSettings", "AgentsProfileSettings"]
    with pytest.raises(ValidationError, match="api 'live' is not one of"):
        Settings.model_validate({"profiles": [{"name": "q", "api": "live"}]})


def test_queues_are_batched_100_a_request_and_each_request_keeps_the_limits() -> None:
    api = CurrentApi(CurrentProfileSettings(name="q"))
    (unit,) = api.plan(_t(queues=250), P0, P0 + timedelta(seconds=15), NOW, 0)
    assert [len(r.filters["Queues"]) for r in unit.requests] == [100, 100, 50]
    assert all(r.filters["Channels"] == ("VOICE", "CHAT", "TASK") for r in unit.requests)
    assert unit.slice_keys == (SliceKey("q", "i-1", NOW.replace(second=0), NOW.replace(second=15)),)
    for bad, why in [
        (CurrentRequest("i-1", {"Queues": tuple(map(str, range(101)))}, ("QUEUE",), (("AGENTS_ONLINE", "COUNT"),)),
         "Queues: 101"),
        (CurrentRequest("i-1", {"Queues": ("q",), "RoutingProfiles": ("r",)}, (), (("AGENTS_ONLINE", "COUNT"),)),
         "exactly one of Queues"),
        (CurrentRequest("i-1", {"Queues": ("q",)}, ("QUEUE",), (("OLDEST_CONTACT_AGE", "COUNT"),)), "unit COUNT"),
    ]:
        with pytest.raises(PlanError, match=why):
            check_current(bad)


def test_more_than_100_queues_without_a_queue_grouping_cannot_be_combined() -> None:
    api = CurrentApi(CurrentProfileSettings(name="q", groupings=["CHANNEL"]))
    with pytest.raises(PlanError, match="cannot be combined"):
        api.plan(_t(queues=101), NOW, NOW + timedelta(seconds=15), NOW, 0)


def test_agents_all_takes_the_discovered_agents_100_a_request() -> None:
    api = AgentsApi(AgentsProfileSettings(name="a", filters={"agents": "all"}))
    assert api.needs == frozenset({"agents"})
    assert AgentsApi(AgentsProfileSettings(name="b")).needs == {"routing_profiles", "agents"}  # names too
    (unit,) = api.plan(_t(agents=230), P0, P0 + timedelta(seconds=15), NOW, 0)
    assert [len(r.filters["Agents"]) for r in unit.requests] == [100, 100, 30]
    with pytest.raises(PlanError, match="agents discovery failed"):
        api.plan(_t(), NOW, NOW + timedelta(seconds=15), NOW, 0)
    with pytest.raises(PlanError, match="UserHierarchyGroups: 2"):
        check_user_data(UserDataRequest("i-1", {"UserHierarchyGroups": ("g1", "g2")}))


def test_a_live_profile_cannot_collect_a_past_range() -> None:
    api = CurrentApi(CurrentProfileSettings(name="q"))
    with pytest.raises(PlanError, match="real time") as e:
        api.check_range(NOW - timedelta(hours=1), NOW, NOW, 600)
    assert e.value.field == "profile"


async def test_the_scheduler_takes_the_period_under_way_then_the_next_at_its_start() -> None:
    store = InMemoryStore()
    api = CurrentApi(CurrentProfileSettings(name="q"))
    rp = await plan_round(store, [_t()], [api], OPTS, NOW)
    assert [(k.start, k.end) for u in rp.units for k in u.slice_keys] == [
        (NOW.replace(second=0), NOW.replace(second=15))]
    assert rp.wake_at == NOW.replace(second=15)  # the next period's start, not settle later
    await store.write([CompletedSlice(rp.units[0].slice_keys[0], [], NOW)], None)
    again = await plan_round(store, [_t()], [api], OPTS, NOW + timedelta(seconds=3))
    assert again.units == []  # taken once: never revisited
    nxt = await plan_round(store, [_t()], [api], OPTS, NOW.replace(second=15))
    assert [k.start for u in nxt.units for k in u.slice_keys] == [NOW.replace(second=15)]


async def test_a_period_that_passes_without_a_snapshot_is_a_gap_not_a_late_snapshot() -> None:
    store = InMemoryStore()
    api = CurrentApi(CurrentProfileSettings(name="q"))
    await plan_round(store, [_t()], [api], OPTS, NOW)  # the 12:00:00 period is due, never taken
    later = NOW + timedelta(seconds=60)  # 12:01:07: four periods went by
    rp = await plan_round(store, [_t()], [api], OPTS, later)
    assert [k.start for u in rp.units for k in u.slice_keys] == [later.replace(second=0)]
    assert rp.gaps == 4


def test_oldest_contact_age_is_stored_in_seconds_whether_grouped_or_not() -> None:
    metrics = (("OLDEST_CONTACT_AGE", "SECONDS"), ("CONTACTS_IN_QUEUE", "COUNT"))
    res = {"MetricResults": [{"Dimensions": {}, "Collections": [
        {"Metric": {"Name": "OLDEST_CONTACT_AGE", "Unit": "SECONDS"}, "Value": 24113.0},
        {"Metric": {"Name": "CONTACTS_IN_QUEUE", "Unit": "COUNT"}, "Value": 3.0}]}],
        "DataSnapshotTime": NOW}
    assert current_page(res, metrics, grouped=False).rows[0][1] == [24.113, 3.0]
    assert current_page(res, metrics, grouped=True).rows[0][1] == [24113.0, 3.0]
    with pytest.raises(MalformedResponse, match="not asked for"):
        current_page({"MetricResults": [{"Collections": [{"Metric": {"Name": "X"}, "Value": 1}]}]}, metrics, True)


def test_user_data_decodes_status_routing_profile_hierarchy_and_contacts() -> None:
    page = user_page({"UserDataList": [{
        "User": {"Id": "a-1"}, "RoutingProfile": {"Id": "rp-1"},
        "HierarchyPath": {"LevelOne": {"Id": "g-1"}, "LevelTwo": {"Id": "g-2"}},
        "Status": {"StatusName": "Available", "StatusStartTimestamp": NOW},
        "Contacts": [{"ContactId": "c-1", "Channel": "VOICE", "AgentContactState": "CONNECTED",
                      "StateStartTimestamp": NOW, "Queue": {"Id": "q-1"}}],
        "AvailableSlotsByChannel": {"CHAT": 2},
    }], "NextToken": "t"})
    (a,) = page.agents
    assert (a.agent_id, a.status, a.status_since, a.routing_profile_id, a.hierarchy_group_id) == (
        "a-1", "Available", NOW, "rp-1", "g-2")
    assert '"queue_id":"q-1"' in a.contacts and page.next_token == "t"
    with pytest.raises(MalformedResponse, match=r"no User\.Id"):
        user_page({"UserDataList": [{"Status": {}}]})


def test_the_gauges_follow_the_latest_snapshot_under_a_cap_on_series() -> None:
    from prometheus_client import REGISTRY

    from collector.apis.current.gauges import LiveGauges

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    dropped = value("collector_live_series_dropped_total") or 0.0
    g = LiveGauges(cap=3)
    metrics = (("CONTACTS_IN_QUEUE", "COUNT"), ("AGENTS_AVAILABLE", "COUNT"))
    dims = [(f"gq-{i}", "VOICE", None, None, None, None, None) for i in range(3)]
    g.publish("gi-1", "q", metrics, [(d, [float(i), 1.0]) for i, d in enumerate(dims)], NOW)
    labels = {"connect_instance": "gi-1", "profile": "q", "channel": "VOICE"}
    assert value("collector_live_contacts_in_queue", queue="gq-0", **labels) == 0.0
    assert value("collector_live_agents", queue="gq-0", state="available", **labels) == 1.0
    assert value("collector_live_contacts_in_queue", queue="gq-1", **labels) == 1.0
    assert value("collector_live_agents", queue="gq-1", **labels, state="available") is None  # over the cap
    assert (value("collector_live_series_dropped_total") or 0.0) - dropped == 3
    # the next snapshot without gq-0: its series go, and the room is given to the others
    g.publish("gi-1", "q", metrics, [(d, [5.0, 2.0]) for d in dims[1:]], NOW)
    assert value("collector_live_contacts_in_queue", queue="gq-0", **labels) is None
    assert value("collector_live_contacts_in_queue", queue="gq-2", **labels) == 5.0
    assert value("collector_live_snapshot_timestamp_seconds", connect_instance="gi-1", profile="q") == NOW.timestamp()


async def test_a_snapshot_whose_period_passed_before_it_started_is_not_fetched() -> None:
    """A live round is bounded by its period: units still waiting when their period ends
    (a busy account, a slow API) fail without a call; their periods become gaps."""
    from collector.clock import ManualClock
    from collector.pipeline import run_collection
    from collector.ratelimit import Limiters
    from tests.fakes import ScriptedSource

    api = CurrentApi(CurrentProfileSettings(name="q"))
    late, due = (api.plan(_t(), P0 - timedelta(seconds=15), P0, NOW, 0)[0],
                 api.plan(_t(), P0, P0 + timedelta(seconds=15), NOW, 0)[0])
    source, store, clock = ScriptedSource(), InMemoryStore(), ManualClock(NOW)
    summary = await run_collection([late, due], source=source, sink=store, limiters=Limiters(clock=clock),
                                   clock=clock)
    assert [c[0] for c in source.calls] == ["GetCurrentMetricData"]  # only the period under way
    assert (summary.slices_done, summary.slices_failed) == (1, 1)
    assert "period passed" in summary.failures[0][1]
