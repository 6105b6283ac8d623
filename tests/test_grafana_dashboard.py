"""The contact-center Grafana dashboard (ops/grafana/contact-center.json) against real
data: every panel's SQL and every template variable's query, with the dashboard's
variables and Grafana's PostgreSQL macros substituted the way Grafana does, runs on a
migrated database holding the simulator's v1 and V2 data (collected through the real
pipeline), and returns rows with the columns its panel expects."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from tests.conftest import StartSim
from tests.test_examples import _collect_everything

DASHBOARD = Path(__file__).resolve().parent.parent / "ops" / "grafana" / "contact-center.json"
DATASOURCE = "grafana-postgresql-datasource"

# What each panel shows: the columns its query returns, in order.
EXPECTED = {
    "Service level per queue per day (answered within $sl_threshold s)": ["time", "metric", "service_level"],
    "Contacts queued, handled and abandoned": ["time", "metric", "queued", "handled", "abandoned"],
    "Average handle time per queue per day": ["time", "metric", "avg_handle_time"],
    "Abandonment rate per queue per day": ["time", "metric", "abandonment_rate"],
    "Queues over the time range": ["instance", "queue", "profile", "first_day", "last_day", "queued", "handled",
                                   "abandoned", "service_level", "avg_handle_time", "abandonment_rate"],
    "Occupancy per agent per day": ["time", "metric", "occupancy"],
    "Agents per day": ["day", "instance", "agent", "routing_profile", "hierarchy_group", "profile", "handled",
                       "avg_handle_time", "occupancy"],
    "Problem slices in the time range": ["kind", "slices"],
    "Missing and failed slices": ["kind", "instance_id", "profile", "interval_start", "interval_end", "reason",
                                  "run_id", "recorded_at"],
    "Newest collected interval per instance and profile": ["instance_id", "profile", "api", "intervals",
                                                           "first_interval_start", "newest_interval_end"],
}
PERCENT = {"service_level", "abandonment_rate", "occupancy"}


# --- Grafana's substitution -------------------------------------------------------------

def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def interpolate_variables(sql: str, values: dict[str, Any], variables: dict[str, dict[str, Any]]) -> str:
    """The front end's step: ``$var`` / ``${var}`` replaced as the PostgreSQL data source
    formats them (interpolateVariable): a multi-value or include-All variable's values
    quoted and joined with commas, a single-value variable's value raw (quotes doubled),
    an All with a custom ``allValue`` that value raw. Unknown names are left alone (the
    macros are the back end's)."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            return m.group(0)
        value = values[name]
        var = variables.get(name, {})
        if isinstance(value, _Raw):
            return value.text
        if isinstance(value, list):
            return ",".join(_quote(str(v)) for v in value)
        if var.get("multi") or var.get("includeAll"):
            return _quote(str(value))
        return str(value).replace("'", "''")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, sql)


class _Raw:
    def __init__(self, text: str) -> None:
        self.text = text


def _rfc3339nano(t: dt.datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time (fraction without trailing zeros, ``Z``)."""
    t = t.astimezone(dt.UTC)
    frac = f".{t.microsecond:06d}".rstrip("0") if t.microsecond else ""
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _interval_seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text.strip("'\""))
    assert m, text
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def _go_number(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def interpolate_macros(sql: str, start: dt.datetime, end: dt.datetime) -> str:
    """The back end's step (pkg/tsdb/grafana-postgresql-datasource/macros.go): each
    ``$__name(args)`` replaced; an unknown macro is an error, as in Grafana."""

    def repl(m: re.Match[str]) -> str:
        name, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339nano(start)}' AND '{_rfc3339nano(end)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339nano(start)}'"
        if name == "__timeTo":
            return f"'{_rfc3339nano(end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            assert len(args) >= 2, m.group(0)
            s = _go_number(_interval_seconds(args[1]))
            group = f"floor(extract(epoch from {args[0]})/{s})*{s}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        raise AssertionError(f"unknown macro {m.group(0)}")

    return re.sub(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)", repl, sql)


def grafana_sql(sql: str, values: dict[str, Any], variables: dict[str, dict[str, Any]],
                start: dt.datetime, end: dt.datetime, interval: str = "30m") -> str:
    out = interpolate_variables(sql, {**values, "__interval": interval,
                                      "__interval_ms": str(int(_interval_seconds(interval) * 1000))}, variables)
    out = interpolate_macros(out, start, end)
    assert "$" not in out, f"left unsubstituted: {out}"
    return out


# --- the test ---------------------------------------------------------------------------

async def _options(conn: asyncpg.Connection, sql: str) -> list[tuple[str, str]]:
    """A variable query's options as Grafana reads them: (__text, __value) where the
    query names them, else the first column as both."""
    rows = await conn.fetch(sql)
    if rows and "__value" in list(rows[0].keys()):
        return [(str(r["__text"]), str(r["__value"])) for r in rows]
    return [(str(r[0]), str(r[0])) for r in rows]


async def _resolve(conn: asyncpg.Connection, variables: dict[str, dict[str, Any]], choose: dict[str, Any],
                   start: dt.datetime, end: dt.datetime) -> tuple[dict[str, Any], dict[str, list[tuple[str, str]]]]:
    """Each query variable in the dashboard's order (a later one may use an earlier one),
    set to ``choose[name](options)`` or, by default, All (or the first option)."""
    values: dict[str, Any] = {}
    options: dict[str, list[tuple[str, str]]] = {}
    for name, var in variables.items():
        if var["type"] != "query":
            continue
        opts = await _options(conn, grafana_sql(var["query"], values, variables, start, end))
        options[name] = opts
        assert opts, f"variable {name} has no options"
        if name in choose:
            values[name] = choose[name](opts)
        elif var.get("includeAll"):
            values[name] = _Raw(var["allValue"]) if var.get("allValue") else [v for _t, v in opts]
        else:
            values[name] = opts[0][1]
    return values, options


def _check_panel(panel: dict[str, Any], rows: list[asyncpg.Record], fmt: str) -> None:
    title = panel["title"]
    assert rows, f"{title!r} returned no rows"
    columns = list(rows[0].keys())
    assert columns == EXPECTED[title], (title, columns)
    for o in panel["fieldConfig"].get("overrides", []):  # the fields the panel styles exist
        if o["matcher"]["id"] == "byName":
            assert o["matcher"]["options"] in columns, (title, o)
    if fmt == "time_series":  # Grafana's rules: a time column, sorted; a string metric; numeric values
        times = [r["time"] for r in rows]
        assert all(isinstance(t, dt.datetime | int | float | Decimal) for t in times), title
        assert times == sorted(times), f"{title!r} is not sorted by time"
        for r in rows:
            assert "metric" not in columns or isinstance(r["metric"], str), (title, dict(r))
        for c in columns:
            if c in ("time", "metric"):
                continue
            vals = [r[c] for r in rows]
            assert all(v is None or isinstance(v, int | float | Decimal) for v in vals), (title, c)
            assert any(v is not None for v in vals), f"{title!r}: {c} is always NULL"
    for c in PERCENT & set(columns):
        assert all(r[c] is None or 0 <= r[c] <= 100 for r in rows), (title, c)


async def test_every_panel_of_the_contact_center_dashboard_answers_over_collected_data(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    ctx = await _collect_everything(start_sim, database_url, tmp_path)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"] == {**variables["datasource"], "type": "datasource", "query": DATASOURCE}
    assert {"instance", "queue", "profile"} <= set(variables)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert {p["title"] for p in panels} == set(EXPECTED)  # every panel is checked below, none is missing
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for p in panels:
        assert p["datasource"]["type"] == DATASOURCE and p["datasource"]["uid"] == "${datasource}", p["title"]
        assert [t["datasource"]["type"] for t in p["targets"]] == [DATASOURCE], p["title"]

    start, end = ctx["y_start"] - dt.timedelta(days=1), dt.datetime.now(dt.UTC)
    conn = await asyncpg.connect(database_url)
    try:
        values, options = await _resolve(conn, variables, {}, start, end)
        assert ("Support NY", ctx["iid"]) in options["instance"]
        assert [v for _t, v in options["sl_threshold"]] == ["20", "60"]
        assert {v for _t, v in options["profile"]} == {"default", "queues_15m", "queues_daily", "agents_15m"}
        assert all(t.endswith("(Support NY)") and t.startswith("queue-") for t, _v in options["queue"])

        for p in panels:
            for target in p["targets"]:
                sql = grafana_sql(target["rawSql"], values, variables, start, end)
                _check_panel(p, await conn.fetch(sql), target["format"])

        # one instance, one queue, two profiles: the values are quoted the way Grafana does,
        # and the queue panels answer for that queue alone
        queue = options["queue"][0]
        narrow, _ = await _resolve(conn, variables, {"instance": lambda o: [o[0][1]], "queue": lambda _o: [queue[1]],
                                                     "profile": lambda _o: ["queues_15m", "agents_15m"],
                                                     "sl_threshold": lambda o: o[-1][1]}, start, end)
        for p in panels:
            sql = grafana_sql(p["targets"][0]["rawSql"], narrow, variables, start, end)
            rows = await conn.fetch(sql)
            if "$queue" in p["targets"][0]["rawSql"]:
                _check_panel(p, rows, p["targets"][0]["format"])
                for r in rows:  # "queue · instance · profile", "profile" or a table's own columns
                    parts = r["metric"].split(" · ") if "metric" in list(r.keys()) else [r["queue"], r["profile"]]
                    assert parts[-1] == "queues_15m", (p["title"], dict(r))
                    assert len(parts) == 1 or parts[0] == queue[0].split(" (")[0], (p["title"], dict(r))
    finally:
        await conn.close()


def test_grafana_substitution_follows_grafana() -> None:
    """The emulation itself, on the examples of Grafana's documentation."""
    start = dt.datetime(2017, 7, 18, 11, 15, 52, tzinfo=dt.UTC)
    variables: dict[str, dict[str, Any]] = {"m": {"multi": True}, "s": {}, "a": {"includeAll": True, "allValue": "'*'"}}
    sql = grafana_sql("SELECT $__timeGroupAlias(t, $__interval), x FROM y WHERE $__timeFilter(t) "
                      "AND a IN ($m) AND b = '$s' AND ('*' IN ($a) OR c IN ($a)) AND d > $__timeFrom()",
                      {"m": ["o'k", "b"], "s": "it's", "a": _Raw("'*'")}, variables, start, start, "5m")
    assert sql == ("SELECT floor(extract(epoch from t)/300)*300 AS \"time\", x FROM y WHERE "
                   "t BETWEEN '2017-07-18T11:15:52Z' AND '2017-07-18T11:15:52Z' AND a IN ('o''k','b') "
                   "AND b = 'it''s' AND ('*' IN ('*') OR c IN ('*')) AND d > '2017-07-18T11:15:52Z'")
