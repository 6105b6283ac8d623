"""Config errors point to the fix: the env variable or file line, the closest valid name."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import load_settings
from collector.errors import ConfigError

INSTANCE = '[[instances]]\nid = "i-1"\nregion = "us-east-1"\n'


def _cfg(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(body)
    return p


def test_an_env_override_error_names_the_variable_not_a_file_line(tmp_path: Path) -> None:
    p = _cfg(tmp_path, f'[collection]\ngranularity = "15m"\n\n{INSTANCE}')
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={"COLLECTOR_COLLECTION__GRANULARITY": "1x"})
    msg = str(e.value)
    assert msg.startswith("Invalid configuration: environment variable COLLECTOR_COLLECTION__GRANULARITY:")
    assert "'1x' is not a duration" in msg
    assert f"{p}:" not in msg


def test_a_bad_database_url_names_the_variable(tmp_path: Path) -> None:
    p = _cfg(tmp_path, INSTANCE)
    with pytest.raises(ConfigError, match=r"environment variable COLLECTOR_DATABASE_URL: database\.dsn: "
                                          r"is not a PostgreSQL URL"):
        load_settings(p, environ={"COLLECTOR_DATABASE_URL": "mysql://db"})


def test_an_unknown_env_key_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment variable COLLECTOR_API__PROT: api\.prot: unknown key"):
        load_settings(_cfg(tmp_path, INSTANCE), environ={"COLLECTOR_API__PROT": "9000"})


def test_an_unknown_metric_suggests_the_closest(tmp_path: Path) -> None:
    p = _cfg(tmp_path, f'[collection]\nmetrics = ["HANDLE_TIMES"]\n\n{INSTANCE}')
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    assert f"{p}:2: collection.metrics: unknown metric 'HANDLE_TIMES'; did you mean HANDLE_TIME" in str(e.value)


def test_an_unknown_grouping_suggests_the_closest(tmp_path: Path) -> None:
    p = _cfg(tmp_path, f'[collection]\ngroupings = ["QUEUES"]\n\n{INSTANCE}')
    with pytest.raises(ConfigError, match=r"unknown grouping 'QUEUES'; did you mean QUEUE\?"):
        load_settings(p, environ={})


def test_enum_values_are_case_insensitive(tmp_path: Path) -> None:
    p = _cfg(tmp_path, '[collection]\nmetrics = "ALL"\ngroupings = ["queue", "Channel"]\n'
                       'channels = ["voice"]\ngranularity = "15M"\n\n'
                       '[[instances]]\nid = "i-1"\nregion = "us-east-1"\nqueues = "All"\n')
    s = load_settings(p, environ={"COLLECTOR_LOG_FORMAT": "CONSOLE"})
    assert s.collection.metrics == "all"
    assert s.collection.groupings == ["QUEUE", "CHANNEL"]
    assert s.collection.channels == ["VOICE"]
    assert s.collection.granularity_seconds == 900
    assert s.instances[0].queues == "all"
    assert s.log_format == "console"
    p.write_text('[collection]\nmetrics = ["handle_time", "avg_hold_time"]\n\n' + INSTANCE)
    assert load_settings(p, environ={}).collection.metrics == ["HANDLE_TIME", "HOLD_TIME"]


@pytest.mark.parametrize("value, needle", [
    ('"HANDLE_TIME"', 'collection.metrics: must be "all" or a list of metric names, e.g. ["HANDLE_TIME"]'),
    ("5", 'collection.metrics: must be "all" or a list of metric names'),
])
def test_metrics_neither_all_nor_a_list_is_refused_in_plain_words(tmp_path: Path, value: str, needle: str) -> None:
    p = _cfg(tmp_path, f"[collection]\nmetrics = {value}\n\n{INSTANCE}")
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    assert needle in str(e.value)
    assert "literal" not in str(e.value).lower() and "input should" not in str(e.value).lower()


def test_discover_is_case_insensitive_and_anything_else_is_refused(tmp_path: Path) -> None:
    body = '[[accounts]]\nid = "123456789012"\nregions = ["us-east-1"]\ninstances = "{}"\n'
    s = load_settings(_cfg(tmp_path, body.format("Discover")), environ={})
    assert s.accounts[0].instances == "discover"
    with pytest.raises(ConfigError, match=r'accounts\[0\]\.instances: must be "discover" or a list of instance IDs'):
        load_settings(_cfg(tmp_path, body.format("everything")), environ={})


@pytest.mark.parametrize("key, value, field", [
    ("api", "port = 99999", "api.port"),  # before: listened on 99999 % 65536
    ("api", "port = -1", "api.port"),  # before: reported as a host that does not resolve
    ("cluster", "lease_ttl = inf", "cluster.lease_ttl"),  # before: blamed the DSN
    ("cluster", "lease_ttl = nan", "cluster.lease_ttl"),
    ("storage", "retention_days = 100000000", "storage.retention_days"),  # before: serve crashed after start
])
def test_values_that_would_misbehave_later_are_refused_with_their_line(
    tmp_path: Path, key: str, value: str, field: str
) -> None:
    """Issue 18 item 9."""
    p = _cfg(tmp_path, f"[{key}]\n{value}\n\n{INSTANCE}")
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    assert str(e.value).startswith(f"Invalid configuration: {p}:2: {field}: "), str(e.value)


def test_a_key_misplaced_under_profiles_filters_names_its_line(tmp_path: Path) -> None:
    """Issue 18 item 9: TOML puts a key written after [profiles.filters] into the filters;
    the message names that line (before: no line number), also in the second profile."""
    profile = ('[[profiles]]\nname = "{name}"\napi = "v2"\ninterval = "1h"\ngroupings = ["QUEUE"]\n'
               'metrics = ["CONTACTS_HANDLED"]\n[profiles.filters]\nqueues = "all"\n')
    body = (INSTANCE + "\n" + profile.format(name="a") + "\n" + profile.format(name="b")
            + 'time_zone = "Europe/Paris"\n')
    p = _cfg(tmp_path, body)
    line = body.splitlines().index('time_zone = "Europe/Paris"') + 1
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    assert str(e.value).startswith(f"Invalid configuration: {p}:{line}: profiles[1].filters.time_zone: "), str(e.value)
    p = _cfg(tmp_path, body.replace('time_zone = "Europe/Paris"', 'colour = ["x"]'))
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    head = body.splitlines().index("[profiles.filters]", body.splitlines().index('name = "b"')) + 1
    assert f"{p}:{head}: profiles[1].filters: unknown filter 'colour'" in str(e.value), str(e.value)


@pytest.mark.parametrize("body, line, line_no", [
    ('[collection]\ngranularty = "15m"\n', "collection.granularty: unknown key (did you mean granularity?)", 2),
    ('[scheduler]\nsetle = "15m"\n', "scheduler.setle: unknown key (did you mean settle?)", 2),
    (f'{INSTANCE}queus = "all"\n', "instances[0].queus: unknown key (did you mean queues?)", 4),
    ('[[profiles]]\nname = "p"\napi = "v2"\nintervall = "1h"\nmetrics = ["CONTACTS_HANDLED"]\n',
     "profiles[0].intervall: unknown key (did you mean interval?)", 4),
    ('log_formt = "json"\n', "log_formt: unknown key (did you mean log_format?)", 1),
])
def test_an_unknown_key_names_its_line_and_the_closest_valid_key(
    tmp_path: Path, body: str, line: str, line_no: int
) -> None:
    p = _cfg(tmp_path, body if "instances" in body else body + INSTANCE)
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    assert f"{p}:{line_no}: {line}" in str(e.value)


def test_an_unknown_key_far_from_any_valid_one_gets_no_guess(tmp_path: Path) -> None:
    p = _cfg(tmp_path, f'[collection]\nbanana = 1\n\n{INSTANCE}')
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    assert str(e.value).endswith("collection.banana: unknown key")
