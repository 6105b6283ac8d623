from __future__ import annotations

from pathlib import Path

import pytest

from collector.apis.v1 import catalog
from collector.cli import main
from collector.config import load_settings
from collector.errors import ConfigError


def test_catalog_has_the_25_metrics_with_their_unit_and_statistic() -> None:
    assert len(catalog.METRICS) == 25
    assert catalog.METRICS["HOLD_TIME"].unit == "SECONDS"
    assert "AVG_HOLD_TIME" not in catalog.METRICS and "CONTACTS_INCOMING" not in catalog.METRICS
    assert catalog.METRICS["QUEUED_TIME"].statistic == "MAX"
    assert (catalog.METRICS["SERVICE_LEVEL"].unit, catalog.METRICS["SERVICE_LEVEL"].statistic) == ("PERCENT", "AVG")
    assert (catalog.METRICS["OCCUPANCY"].unit, catalog.METRICS["OCCUPANCY"].statistic) == ("PERCENT", "AVG")
    counts = [m for m in catalog.METRICS.values() if m.unit == "COUNT"]
    assert len(counts) == 15 and all(m.statistic == "SUM" for m in counts)


def test_catalog_matches_the_botocore_model() -> None:
    import botocore.session

    model = botocore.session.get_session().get_service_model("connect")
    enum = model.shape_for("HistoricalMetricName").enum
    assert set(enum) == set(catalog.METRICS)
    assert set(model.shape_for("Grouping").enum) == set(catalog.GROUPINGS)
    assert set(model.shape_for("Filters").members) == {k for _d, k in catalog.GROUPINGS.values()}


def _cfg(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(body)
    return p


GOOD_INSTANCE = '[[instances]]\nid = "i-1"\nregion = "us-east-1"\n'


@pytest.mark.parametrize(
    "collection, needle",
    [
        ('metrics = ["CONTACTS_HANDLED", "NOT_A_METRIC"]', "collection.metrics: unknown metric 'NOT_A_METRIC'"),
        ('groupings = ["QUEUE", "CHANNEL", "SUBTYPE"]', "collection.groupings: 3 groupings"),
        ('granularity = "7m"', "collection.granularity: '7m' is not a multiple of 5 minutes"),
        ('granularity = "24h"', "not under 24 hours"),
        ('groupings = ["ROUTING_STEP_EXPRESSION"]', "not valid for GetMetricData"),
        ('routing_step_expressions = ["x"]', "RoutingStepExpressions is not a valid filter"),
        ("service_levels = [0]", "outside 1..604800"),
        ("service_levels = [604801]", "outside 1..604800"),
        ('channels = ["EMAIL"]', "unsupported channel 'EMAIL'"),
        ("max_results = 101", "collection.max_results"),
        ("colour = 1", "collection.colour: unknown key"),
        ('subtypes = ["a","b","c","d","e","f","g","h","i","j","k"]', "Subtypes filter takes at most 10"),
    ],
)
def test_bad_collection_config_is_refused_naming_the_key(tmp_path: Path, collection: str, needle: str) -> None:
    p = _cfg(tmp_path, f"[collection]\n{collection}\n\n{GOOD_INSTANCE}")
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    assert needle in str(e.value)
    assert f"{p}:2:" in str(e.value) or "unknown key" in needle


def test_missing_instance_id_is_named(tmp_path: Path) -> None:
    p = _cfg(tmp_path, '[[instances]]\nregion = "us-east-1"\n')
    with pytest.raises(ConfigError, match=r"instances\[0\]\.id: Field required"):
        load_settings(p, environ={})


def test_env_overrides_the_file(tmp_path: Path) -> None:
    p = _cfg(tmp_path, f'[database]\ndsn = "postgresql://a/b"\n[collection]\ngranularity = "15m"\n{GOOD_INSTANCE}')
    s = load_settings(p, environ={"COLLECTOR_DATABASE_URL": "postgresql://c/d"})
    assert s.database.dsn == "postgresql://c/d"
    s = load_settings(p, environ={"COLLECTOR_COLLECTION__GRANULARITY": "1h"})
    assert s.collection.granularity_seconds == 3600
    s = load_settings(p, environ={"COLLECTOR_CONFIG": str(p)})
    assert s.instances[0].id == "i-1"


@pytest.mark.parametrize(
    "collection, extra_args, needle",
    [
        ('metrics = ["NOPE"]', [], "unknown metric 'NOPE'"),
        ('groupings = ["QUEUE", "CHANNEL", "SUBTYPE"]', [], "3 groupings"),
        ('granularity = "7m"', [], "granularity"),
        ("", ["--start", "2020-01-01T00:00:00Z", "--end", "2020-01-01T01:00:00Z"], "more than 24 hours ago"),
        ("", ["--start", "yesterday", "--end", "2020-01-01T01:00:00Z"], "--start 'yesterday' is not an ISO 8601"),
        ("", ["--instance", "i-unknown"], "instance 'i-unknown' is not in the config"),
    ],
)
def test_cli_bad_input_exits_2_with_the_problem_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], collection: str, extra_args: list[str], needle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLLECTOR_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    p = _cfg(tmp_path, f"[collection]\n{collection}\n\n{GOOD_INSTANCE}")
    from datetime import UTC, datetime, timedelta

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    args = ["collect", "--config", str(p), "--start", (end - timedelta(hours=1)).isoformat(), "--end", end.isoformat()]
    if "--start" in extra_args:
        args = ["collect", "--config", str(p), *extra_args]
    else:
        args += extra_args
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["collect", "--config", "x.toml"])
    assert e.value.code == 2
    assert "--start" in capsys.readouterr().err
