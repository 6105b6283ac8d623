"""GetMetricDataV2: the catalog and ``[[profiles]] api = "v2"`` settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from collector.apis.v1.settings import ProfileSettings
from collector.apis.v2 import catalog
from collector.apis.v2.settings import V2ProfileSettings
from collector.config import Settings, load_settings
from collector.errors import ConfigError

HEAD = '[[instances]]\nid = "i-1"\nregion = "us-east-1"\n'


def _load(tmp_path: Path, body: str) -> Settings:
    p = tmp_path / "c.toml"
    p.write_text(HEAD + body)
    return load_settings(p, {})


def _err(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, body)
    return str(e.value)


V2 = """
[[profiles]]
name = "agents_15m"
api = "v2"
interval = "15m"
time_zone = "America/New_York"
groupings = ["AGENT", "QUEUE"]
metrics = [
  "CONTACTS_HANDLED",
  { name = "CONTACTS_HANDLED", metric_filters = [{ key = "INITIATION_METHOD", values = ["INBOUND"], negate = false }] },
  "AVG_HANDLE_TIME",
]
[profiles.filters]
queues = "all"
channels = ["VOICE", "CHAT"]
"""


def test_catalog_scope_units_and_refusals() -> None:
    m = catalog.METRICS
    assert m["AGENT_OCCUPANCY"].unit == "PERCENT" and "AGENT" in m["AGENT_OCCUPANCY"].groupings
    assert "QUEUE" not in m["AGENT_OCCUPANCY"].groupings
    assert m["SERVICE_LEVEL"].thresholds == ("LT", "LTE") and "AGENT" not in m["SERVICE_LEVEL"].groupings
    assert m["CONTACTS_HANDLED"].metric_filter_keys == ("INITIATION_METHOD", "DISCONNECT_REASON")
    assert "FEATURE" in m["CONTACTS_HANDLED"].filters and "FEATURE" not in m["CONTACTS_HANDLED"].groupings
    assert not m["SUM_CONNECTING_TIME_AGENT"].negate
    # every metric in scope can be grouped or filtered by a resource key
    for spec in m.values():
        assert spec.filters & catalog.RESOURCE_FILTER_KEYS, spec.name
        assert spec.unit in ("COUNT", "SECONDS", "PERCENT")
    for name in ("BOT_INTENTS_COMPLETED", "AI_HANDOFFS", "CASES_CREATED", "CAMPAIGN_SEND_ATTEMPTS",
                 "EVALUATIONS_PERFORMED", "FLOWS_STARTED", "DELIVERY_ATTEMPTS"):
        assert name not in m
        with pytest.raises(ValueError, match="does not collect those yet"):
            catalog.spec(name)
    # the v1 -> V2 map points at metrics in the catalog
    assert catalog.V1_TO_V2["HANDLE_TIME"].name == "AVG_HANDLE_TIME"
    assert catalog.V1_TO_V2["OCCUPANCY"].name == "AGENT_OCCUPANCY"
    assert catalog.V1_TO_V2["CONTACTS_MISSED"].name == "AGENT_NON_RESPONSE"
    for eq in catalog.V1_TO_V2.values():
        assert eq.name is None or eq.name in m
        for key, _vals in eq.metric_filters:
            assert eq.name is not None and key in m[eq.name].metric_filter_keys


def test_v2_profile_loads_beside_v1_profiles(tmp_path: Path) -> None:
    s = _load(tmp_path, '[[profiles]]\nname = "hourly"\ngranularity = "1h"\n' + V2)
    assert [p.name for p in s.profiles if isinstance(p, ProfileSettings)] == ["hourly"]  # v1
    assert isinstance(s.profiles[0], ProfileSettings)
    (p,) = s.v2_profiles()
    assert isinstance(p, V2ProfileSettings)
    assert p.interval_period == "FIFTEEN_MIN" and p.time_zone == "America/New_York"
    assert p.api_filters() == {"QUEUE": "all", "CHANNEL": ["VOICE", "CHAT"]}
    assert [m.name for m in p.metric_settings()] == ["CONTACTS_HANDLED", "CONTACTS_HANDLED", "AVG_HANDLE_TIME"]
    with pytest.raises(ConfigError, match="GetMetricDataV2 profile"):
        s.profile("agents_15m")
    # api = "v1" spelled out is the default
    s = _load(tmp_path, '[[profiles]]\nname = "hourly"\napi = "v1"\ngranularity = "1h"\n')
    assert isinstance(s.profiles[0], ProfileSettings)


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (('interval = "15m"', 'interval = "2h"'), "profiles[0].interval"),
        (('time_zone = "America/New_York"', 'time_zone = "Mars/Olympus"'), "not an IANA time zone"),
        (('groupings = ["AGENT", "QUEUE"]', 'groupings = ["AGENT", "QUEUE", "CHANNEL", "ROUTING_PROFILE", "AGENT_HIERARCHY_LEVEL_ONE"]'),
         "profiles[0].groupings"),
        (('groupings = ["AGENT", "QUEUE"]', 'groupings = ["AGENT", "NOPE"]'), "unknown grouping 'NOPE'"),
        (('"AVG_HANDLE_TIME",', '"HANDLE_TIME",'), "in GetMetricDataV2 use AVG_HANDLE_TIME"),
        (('"AVG_HANDLE_TIME",', '"BOT_INTENTS_COMPLETED",'), "is a bot metric"),
        (('"AVG_HANDLE_TIME",', '"SERVICE_LEVEL",'), "SERVICE_LEVEL needs thresholds"),
        (('"AVG_HANDLE_TIME",', '{ name = "SERVICE_LEVEL", thresholds = [{ comparison = "LT", value = 20 }] },'),
         "SERVICE_LEVEL cannot be grouped by AGENT"),
        (('"AVG_HANDLE_TIME",', '{ name = "AVG_HANDLE_TIME", thresholds = [{ comparison = "LT", value = 20 }] },'),
         "AVG_HANDLE_TIME takes no threshold"),
        (('values = ["INBOUND"]', 'values = ["A","B","C","D","E","F","G","H","I","J","K"]'), "values"),
        (('key = "INITIATION_METHOD"', 'key = "COLOUR"'), "unknown metric filter key 'COLOUR'"),
        (('queues = "all"', 'agents = []'), "filters.agents is empty"),
        (('queues = "all"\n', ''), "needs a queues, routing_profiles, agents or agent_hierarchy_level_* filter"),
        (('channels = ["VOICE", "CHAT"]', 'channels = ["FAX"]'), "unknown channel 'FAX'"),
        (('channels = ["VOICE", "CHAT"]', 'colours = ["red"]'), "unknown filter 'colours'"),
        (('interval = "15m"', 'interval = "15m"\nbogus = 1'), "profiles[0].bogus: unknown key"),
    ],
)
def test_v2_profile_errors_name_the_key(tmp_path: Path, change: tuple[str, str], expect: str) -> None:
    old, new = change
    assert old in V2
    msg = _err(tmp_path, V2.replace(old, new, 1))
    assert expect in msg, msg


def test_thresholds_and_metric_filter_limits(tmp_path: Path) -> None:
    base = V2.replace('groupings = ["AGENT", "QUEUE"]', 'groupings = ["QUEUE"]')
    ok = base.replace(
        '"AVG_HANDLE_TIME",',
        '{ name = "SERVICE_LEVEL", thresholds = [{ comparison = "LT", value = 20 }, { comparison = "LTE", value = 60 }] },',
    )
    (p,) = _load(tmp_path, ok).v2_profiles()
    sl = p.metric_settings()[2]
    assert [(t.comparison, t.value) for t in sl.thresholds] == [("LT", 20), ("LTE", 60)]
    gt = ok.replace('comparison = "LTE"', 'comparison = "GT"')
    assert "takes threshold comparisons LT/LTE, not GT" in _err(tmp_path, gt)
    big = ok.replace("value = 60", "value = 604801")
    assert "profiles[0].metrics" in _err(tmp_path, big)
    three = base.replace(
        "negate = false }]",
        'negate = false }, { key = "DISCONNECT_REASON", values = ["X"] }, { key = "DISCONNECT_REASON", values = ["Y"] }]',
    )
    assert "metric_filters" in _err(tmp_path, three)
    neg = base.replace(
        '"AVG_HANDLE_TIME",',
        '{ name = "SUM_CONNECTING_TIME_AGENT", metric_filters = [{ key = "INITIATION_METHOD", values = ["API"], negate = true }] },',
    )
    assert "negate is not applicable" in _err(tmp_path, neg)


def test_an_unknown_v2_metric_gets_the_closest_names() -> None:
    with pytest.raises(ValidationError) as e:
        V2ProfileSettings.model_validate({"name": "p", "api": "v2", "metrics": ["CONTACTS_HANDLD"]})
    assert "unknown GetMetricDataV2 metric 'CONTACTS_HANDLD'; did you mean CONTACTS_HANDLED" in str(e.value)
