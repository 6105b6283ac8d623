"""Fleets: roles assumed through STS (moto), discovery, profiles, failure isolation."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from collector.clock import ManualClock
from collector.config import load_settings
from collector.runs import collect
from collector.simulator import FleetSpec, SimulatorConfig
from collector.simulator.fleet import account_id
from collector.wiring import runtime, serve
from tests.conftest import StartSim, write_config
from tests.helpers import expected_rows, stored_rows, utc_floor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def moto_sts(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def moto_account_of(access_key_id: str) -> str | None:
    """The account whose role issued this key, read from moto's STS backend."""
    from moto.sts.models import sts_backends

    for _acct, by_partition in sts_backends.items():
        for backend in by_partition.values():
            for role in backend.assumed_roles:
                if role.access_key_id == access_key_id:
                    return str(role.account_id)
    return None


def _accounts_toml(accounts: list[str], regions: list[str]) -> str:
    out = []
    for a in accounts:
        out += ["[[accounts]]", f'role_arn = "arn:aws:iam::{a}:role/ConnectCollector"',
                'external_id = "collector-test"', f"regions = {regions!r}".replace("'", '"'),
                'instances = "discover"', ""]
    return "\n".join(out)


def _config(path: Path, database_url: str, body: str) -> Path:
    path.write_text(f'[database]\ndsn = "{database_url}"\n\n[collection]\ngranularity = "15m"\n'
                    'groupings = ["QUEUE", "CHANNEL"]\nmetrics = "all"\nservice_levels = [20]\n\n' + body)
    return path


def _range(hours: float) -> tuple[datetime, datetime]:
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    return end - timedelta(hours=hours), end


async def test_three_accounts_behind_roles_in_two_regions_are_discovered_and_collected(
    start_sim: StartSim, moto_sts: str, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(
        fleet=FleetSpec(accounts=3, regions=("us-east-1", "eu-west-2"), queues_per_instance=8),
        throttle=True,
    ))
    h.sim.key_resolver = moto_account_of
    accounts = [account_id(i) for i in range(3)]
    cfg = _config(tmp_path / "c.toml", database_url, _accounts_toml(accounts, ["us-east-1", "eu-west-2"]))
    settings = load_settings(cfg)
    start, end = _range(1)
    async with runtime(settings) as rt:
        _run_id, summary = await collect(rt, start, end)
    assert summary.slices_failed == 0, summary.failures
    assert summary.slices_done == 6 * 4  # 3 accounts x 2 Regions x 1 instance, 4 slices each
    assert await stored_rows(database_url) == expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))
    assert h.sim.stats.by_status.get(400, 0) == 0
    conn = await asyncpg.connect(database_url)
    try:
        inst = await conn.fetch("SELECT instance_id, region, account, arn, alias FROM instances ORDER BY alias")
        queues = await conn.fetchval("SELECT count(*) FROM queues WHERE name IS NOT NULL")
    finally:
        await conn.close()
    assert {(r["instance_id"], r["region"], r["account"]) for r in inst} == {
        (i.id, i.region, i.account) for i in h.sim.fleet.instances.values()
    }
    assert all(r["arn"] and r["alias"] for r in inst)
    assert queues == 6 * 8  # names and ARNs kept for joins


async def test_a_broken_account_fails_alone_and_the_run_names_it(
    start_sim: StartSim, moto_sts: str, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=5), throttle=False))
    h.sim.key_resolver = moto_account_of
    good = [account_id(0), account_id(1)]
    broken = "999999999999"  # the role is assumed, but the account has no Connect access here
    cfg = _config(tmp_path / "c.toml", database_url, _accounts_toml([*good, broken], ["us-east-1"]))
    settings = load_settings(cfg)
    start, end = _range(0.5)
    async with runtime(settings) as rt:
        run_id, summary = await collect(rt, start, end)
        run = await rt.store.get_run(run_id)
    assert run is not None and run.status == "partial"
    reasons = " ".join(f"{e['slice']} {e['reason']}" for e in run.errors)
    assert f"account {broken}/us-east-1" in reasons and "AccessDenied" in reasons
    assert summary.slices_done == 2 * 2  # the good accounts kept their pace
    assert await stored_rows(database_url) == expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))


async def test_two_profiles_land_side_by_side(start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(small_fleet)
    cfg = write_config(
        tmp_path / "c.toml", database_url, h.sim,
        extra='\n[[profiles]]\nname = "rp_hourly"\ngranularity = "1h"\ngroupings = ["ROUTING_PROFILE", "QUEUE"]\n'
              'metrics = ["CONTACTS_HANDLED", "HANDLE_TIME"]\nservice_levels = []\n',
    )
    settings = load_settings(cfg)
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 3600)
    start = end - timedelta(hours=1)
    async with runtime(settings) as rt:
        await collect(rt, start, end, profile="default")
        await collect(rt, start, end, profile="rp_hourly")
    got = await stored_rows(database_url)
    want = expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))
    want += expected_rows(h.sim, settings.profile("rp_hourly"), start, end, datetime.now(UTC), profile="rp_hourly")
    assert got == want
    assert {r[13] for r in got} == {"default", "rp_hourly"}
    assert max(want.values()) == 1


async def test_queues_added_and_removed_are_picked_up_after_the_ttl(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    n = int(datetime.now(UTC).timestamp())
    b = datetime.fromtimestamp(n - n % 900, UTC) - timedelta(hours=3)
    clock = ManualClock(b + timedelta(minutes=15, seconds=1))
    change_at = (clock.now() + timedelta(minutes=40)).timestamp()
    changed: dict[str, str] = {}

    def sim_now() -> float:  # the fleet changes while the service runs
        t = clock.now().timestamp()
        if t >= change_at and not changed:
            inst = next(iter(h.sim.fleet.instances.values()))
            changed["gone"] = next(iter(inst.queues))
            h.sim.fleet.remove_queue(inst.id, changed["gone"])
            changed["added"] = h.sim.fleet.add_queue(inst.id)
        return t

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=4), throttle=False), now=sim_now)
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       extra='\n[scheduler]\ninitial_backfill = "15m"\nrevisits = []\ndiscovery_ttl = "30m"')
    settings = load_settings(cfg)
    await serve(settings, clock=clock, until=clock.now() + timedelta(hours=3), with_api=False, handle_signals=False)
    assert changed
    ttl = 30 * 60
    before = [q for t, q in h.sim.queues_asked if t < change_at]
    after_ttl = [q for t, q in h.sim.queues_asked if t >= change_at + ttl]
    assert before and all(changed["gone"] in q and changed["added"] not in q for q in before)
    assert len(after_ttl) >= 4
    assert all(changed["added"] in q and changed["gone"] not in q for q in after_ttl)


async def test_role_clients_share_one_parsed_model_and_size_their_pools_to_one_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per-account cost: every role's Connect client reads the one service model botocore
    parsed (one session per profile, one shared loader), and its connection pool is the
    role's own (one account's work), not the shared default chain's."""
    from collector.adapters.connect import BotocoreConnect
    from collector.model import Target

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "SIM100000000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "simulator")
    roles = [Target(f"i-{n}", "us-east-1", account_id(n), (), role_arn=f"arn:aws:iam::{account_id(n)}:role/C")
             for n in range(3)]
    plain = Target("i-x", "eu-west-2", "default", ())
    async with BotocoreConnect(max_pool_connections=32, role_pool_connections=7) as connect:
        clients = [await connect.client(t) for t in roles]  # no STS call: credentials are deferred
        default = await connect.client(plain)
    models = {id(c.meta.service_model._service_description) for c in [*clients, default]}
    assert len(models) == 1
    assert [c.meta.config.max_pool_connections for c in clients] == [7, 7, 7]
    assert default.meta.config.max_pool_connections == 32


async def test_an_unknown_instance_with_a_discovering_account_fails_visibly(
    start_sim: StartSim, moto_sts: str, database_url: str, tmp_path: Path
) -> None:
    """Issue 18 item 8: an id no account has is not dropped from the run (before: the run
    "succeeded" with 0 of 0 slices); its slices fail with the reason, and it is named."""
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=2), throttle=False))
    h.sim.key_resolver = moto_account_of
    cfg = _config(tmp_path / "c.toml", database_url, _accounts_toml([account_id(0)], ["us-east-1"]))
    settings = load_settings(cfg)
    start, end = _range(1)
    async with runtime(settings) as rt:
        run_id, summary = await collect(rt, start, end, instances=["no-such-instance"])
        run = await rt.store.get_run(run_id)
    assert summary.slices_total == 4 and summary.slices_failed == 4 and summary.slices_done == 0
    assert all("not found" in reason for _k, reason in summary.failures)
    assert run is not None and run.status == "failed" and run.instances == ["no-such-instance"]
