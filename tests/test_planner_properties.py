"""Property tests: for any valid config and range, every request the planner makes
keeps every API limit, and the slices tile the range exactly."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from collector.apis.v1 import catalog
from collector.apis.v1.api import plan
from collector.apis.v1.planner import check_request
from collector.apis.v1.settings import CollectionSettings
from collector.model import Target

NOW = datetime(2026, 11, 26, 12, 7, 31, tzinfo=UTC)
GROUPINGS = sorted(set(catalog.GROUPINGS) - catalog.V1_UNSUPPORTED_GROUPINGS)


@st.composite
def cases(draw: st.DrawFn) -> tuple[CollectionSettings, Target, datetime, datetime]:
    g = draw(st.sampled_from([300, 600, 900, 1800, 3600, 7200, 21600, 43200, 85800]))
    groupings = draw(st.lists(st.sampled_from(GROUPINGS), max_size=2, unique=True))
    n_queues = draw(st.integers(1, 100)) if "QUEUE" not in groupings else draw(st.integers(1, 350))
    names = draw(st.lists(st.sampled_from(sorted(catalog.METRICS)), min_size=1, unique=True))
    sls = draw(st.lists(st.integers(1, 604_800), max_size=45, unique=True))
    if not sls and "SERVICE_LEVEL" in names:
        names.remove("SERVICE_LEVEL")
        if not names:
            names = ["CONTACTS_HANDLED"]
    coll = CollectionSettings(
        granularity=f"{g}s", groupings=groupings, metrics=names, service_levels=sls,
        channels=draw(st.lists(st.sampled_from(list(catalog.CHANNELS)), min_size=1, unique=True)),
        subtypes=draw(st.lists(st.sampled_from(["connect:SMS", "connect:Chat", "x"]), unique=True)),
        max_results=draw(st.integers(1, 100)),
    )
    n = int(NOW.timestamp())
    latest_end = n - n % g
    earliest_start = n - catalog.LOOKBACK_SECONDS
    first = -(-earliest_start // g) * g
    assume(first < latest_end)  # some granularities have no whole slice inside the lookback
    k_start = draw(st.integers(0, max(0, (latest_end - first) // g - 1)))
    start = first + k_start * g
    k_end = draw(st.integers(1, max(1, (latest_end - start) // g)))
    end = start + k_end * g
    queues = tuple(f"q{i}" if i % 3 else f"arn:aws:connect:us-east-1:1:instance/i/queue/q{i}" for i in range(n_queues))
    target = Target("i-1", "us-east-1", "1", queues)
    return coll, target, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_every_request_keeps_every_limit_and_slices_tile_the_range(
    case: tuple[CollectionSettings, Target, datetime, datetime],
) -> None:
    coll, target, start, end = case
    works = plan([target], coll, start, end, NOW)
    spans = sorted((w.key.start, w.key.end) for w in works)
    assert spans[0][0] == start and spans[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # no gap, no overlap
    for w in works:
        seen_queues: set[str] = set()
        seen_metrics: set[tuple[str, float | None]] = set()
        for r in w.requests:
            check_request(r, NOW)  # the reference's limits, as the simulator enforces them
            s, e = int(r.start.timestamp()), int(r.end.timestamp())
            assert s % 300 == 0 and e % 300 == 0 and 0 < e - s < 86_400
            assert s >= int(NOW.timestamp()) - 86_400
            assert 1 <= len(r.filters["Queues"]) <= 100
            assert sum(m.name == "SERVICE_LEVEL" for m in r.metrics) <= 20
            assert len(r.groupings) <= 2 and "ROUTING_STEP_EXPRESSION" not in r.groupings
            assert "RoutingStepExpressions" not in r.filters
            seen_queues |= set(r.filters["Queues"])
            seen_metrics |= {(m.name, m.threshold) for m in r.metrics}
        assert seen_queues == set(target.queues)
        expect: set[tuple[str, float | None]] = {(n, None) for n in coll.metric_names() if n != "SERVICE_LEVEL"}
        if "SERVICE_LEVEL" in coll.metric_names():
            expect |= {("SERVICE_LEVEL", float(t)) for t in coll.service_levels}
        assert seen_metrics == expect
