"""The ``collector`` command line.

Exit codes: 0 done, 1 finished with failed slices, 2 bad input or config, 3 the
environment (database unreachable, port busy, no AWS credentials, schema mismatch).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NoReturn

import anyio

from collector import __version__, errors
from collector.config import load_settings
from collector.logs import configure
from collector.progress import Progress

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ENVIRONMENT = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # bad usage is bad input: exit 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


class _DefaultsFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default (an option without one says so itself)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS) and action.option_strings and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="collector",
        description=(
            "Collect Amazon Connect historical metrics (GetMetricData) into PostgreSQL, "
            "exactly once per slice."
        ),
        epilog="Exit codes: 0 done, 1 finished with failed slices (listed), 2 bad input or config, "
        "3 the environment (database unreachable, port busy, no AWS credentials).",
    )
    p.add_argument("--version", action="version", version=f"connect-collector {__version__}")
    p.add_argument("--log-level", default=os.environ.get("COLLECTOR_LOG_LEVEL", "warning"),
                   help="debug, info, warning or error (env COLLECTOR_LOG_LEVEL; default warning)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("collect", help="collect a time range once, then exit",
                       description="Collect every slice of [--start, --end) for the configured "
                       "instances. Both times are ISO 8601 with an offset, on slice boundaries, "
                       "within the last 24 hours (a GetMetricDataV2 profile, --profile with api = \"v2\": "
                       "on its interval's boundaries in its time zone, within the last 90 days).")
    c.add_argument("--config", default=os.environ.get("COLLECTOR_CONFIG"),
                   help="TOML config file (env COLLECTOR_CONFIG)")
    c.add_argument("--start", required=True, help="range start, e.g. 2026-01-01T10:00:00Z")
    c.add_argument("--end", required=True, help="range end (exclusive)")
    c.add_argument("--instance", action="append", default=[], metavar="ID",
                   help="collect only this instance (repeatable)")
    c.add_argument("--profile", default="default",
                   help="collection profile name (a V2 profile collects GetMetricDataV2)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    sv = sub.add_parser("serve", help="run the long-lived service (scheduler + HTTP API)",
                        description="Keep every configured instance collected, slice after slice, "
                        "catch up after downtime, and serve the HTTP API (default 127.0.0.1:8080). "
                        "SIGTERM/SIGINT stop it gracefully.")
    sv.add_argument("--config", default=os.environ.get("COLLECTOR_CONFIG"),
                    help="TOML config file (env COLLECTOR_CONFIG)")
    sv.add_argument("--sandbox", action="store_true",
                    help="also run the built-in simulator and collect from it (embedded Postgres "
                    "unless a DSN is configured); what `make run` starts")
    sv.add_argument("--host", help="API bind address (default 127.0.0.1; env COLLECTOR_API__HOST)")
    sv.add_argument("--port", type=int, help="API port (default 8080; env COLLECTOR_API__PORT)")

    m = sub.add_parser("migrate", help="create or upgrade the database schema",
                       description="Apply pending migrations (idempotent; safe when run concurrently).")
    m.add_argument("--config", default=os.environ.get("COLLECTOR_CONFIG"),
                   help="TOML config file (env COLLECTOR_CONFIG)")

    s = sub.add_parser("simulate", help="run the built-in Connect simulator",
                       description="Serve a simulated Amazon Connect fleet on 127.0.0.1 and print "
                       "the environment that points the collector at it (AWS_ENDPOINT_URL_CONNECT, "
                       "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).",
                       formatter_class=_DefaultsFormatter)
    s.add_argument("--port", type=int, default=8700, help="port; 0 picks a free one")
    s.add_argument("--host", default="127.0.0.1", help="bind address")
    s.add_argument("--accounts", type=int, default=1, help="simulated AWS accounts")
    s.add_argument("--regions", default="us-east-1", help="comma-separated Regions")
    s.add_argument("--instances", type=int, default=1, help="instances per account and Region")
    s.add_argument("--queues", type=int, default=10, help="STANDARD queues per instance")
    s.add_argument("--rate", type=float, default=5.0, help="GetMetricData req/s per account+Region")
    s.add_argument("--burst", type=int, default=8, help="token-bucket burst per account+Region")
    s.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    s.add_argument("--latency", type=float, default=0.0, help="seconds added to each response")
    s.add_argument("--seed", type=int, default=7, help="fleet and data seed")
    s.add_argument("--write-config", metavar="FILE",
                   help="write a collector config listing the simulated instances (default: none written)")

    sb = sub.add_parser("sandbox", help="simulator + embedded Postgres + a collection of the last hours",
                        description="Start the built-in simulator, collect the last --hours into the "
                        "configured (or embedded) Postgres, and print how to query the result.")
    sb.add_argument("--hours", type=int, default=3, help="hours to collect, ending 15 min ago")
    sb.add_argument("--data-dir", default=".data/pg",
                    help="embedded Postgres data directory (unless COLLECTOR_DATABASE_URL is set)")
    return p


def _fail(message: str, code: int) -> int:
    print(f"collector: {message}", file=sys.stderr)
    return code


_API_PORT_FIX = ("--port N or COLLECTOR_API__PORT=N", "--host/--port or COLLECTOR_API__HOST/COLLECTOR_API__PORT")


def check_port(host: str, port: int, what: str = "API", fix: tuple[str, str] = _API_PORT_FIX) -> None:
    """Refuse a busy port before anything starts (the database is not touched)."""
    import errno
    import socket

    if not port:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        raise errors.ConfigError(f"{what} host {host!r} does not resolve: {e.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise errors.PortInUse(
                    f"{what} {host}:{port} (is another collector running?); "
                    f"pick another port with {fix[0]}"
                ) from None
            raise errors.PortInUse(
                f"cannot bind the {what} to {host}:{port}: {e.strerror}; pick another with {fix[1]}"
            ) from None


_CREDENTIALS_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for `collector simulate`, the values "
    "it prints), or AWS_PROFILE, or run where an instance/container role provides them"
)


async def check_credentials(settings: object) -> None:
    """AWS credentials for every profile the config uses, looked up once before any slice
    is planned: missing credentials are the environment's problem, not a transient failure
    of every request."""
    from aiobotocore.session import AioSession
    from botocore.exceptions import BotoCoreError

    from collector.config import Settings

    assert isinstance(settings, Settings)
    # the credentials each request starts from (as collector.wiring picks them): the
    # instance's profile, else its account's (the AssumeRole source), else the default chain
    profiles: set[str | None] = {a.aws_profile for a in settings.accounts}
    for i in settings.instances:
        acct = settings.account(i.account) if i.account else None
        profiles.add(i.aws_profile or (acct.aws_profile if acct else None))
    for profile in sorted(profiles, key=lambda p: p or ""):
        try:
            creds = await AioSession(profile=profile).get_credentials()
        except BotoCoreError as e:  # e.g. a profile that is not in ~/.aws/config
            raise errors.NoCredentials(f"{e}; {_CREDENTIALS_FIX}") from None
        if creds is None:
            which = f"AWS profile {profile!r}" if profile else "the default credential chain"
            raise errors.NoCredentials(f"{which} found none; {_CREDENTIALS_FIX}")


def _tune_gc() -> None:
    """Decoded pages are many small acyclic objects; the default generation-0 threshold
    (700 allocations) would run the cyclic collector thousands of times a second."""
    import gc

    gc.freeze()  # everything imported so far is permanent
    gc.set_threshold(100_000, 20, 20)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _tune_gc()
    configure("console", args.log_level)
    try:
        if args.command == "collect":
            return anyio.run(_collect, args)
        if args.command == "serve":
            return anyio.run(_serve, args)
        if args.command == "migrate":
            return anyio.run(_migrate, args)
        if args.command == "simulate":
            return anyio.run(_simulate, args)
        if args.command == "sandbox":
            return anyio.run(_sandbox, args)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_FAILED)
    except BaseException as e:
        err = _collector_error(e)
        if err is None:
            raise
        return _fail(_one_line(err), exit_code(err))
    return EXIT_BAD_INPUT


def exit_code(e: errors.CollectorError) -> int:
    """2 for bad input or config; 3 for the environment (database, port, credentials,
    schema); 1 for anything else that stopped the run."""
    if isinstance(e, errors.BadInput):
        return EXIT_BAD_INPUT
    if isinstance(e, errors.EnvironmentProblem | errors.StorageError):
        return EXIT_ENVIRONMENT
    return EXIT_FAILED


def _collector_error(e: BaseException) -> errors.CollectorError | None:
    """The CollectorError behind ``e``, also when a task group wrapped it in a group."""
    if isinstance(e, errors.CollectorError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            if (found := _collector_error(inner)) is not None:
                return found
    return None


def _one_line(e: errors.CollectorError) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, errors.StorageError) and not isinstance(e, errors.MigrationError):
        text += "; check [database] dsn in the config or COLLECTOR_DATABASE_URL"
    return text


async def _migrate(args: argparse.Namespace) -> int:
    from collector.adapters.postgres import connect_pool, migrate
    from collector.sqlfiles import check_versions, migrations
    from collector.wiring import database_dsn

    settings = load_settings(args.config)
    known = [m.version for m in migrations()]
    check_versions(known, known)  # no migrations at all: a broken install; nothing touched
    pool = await connect_pool(await anyio.to_thread.run_sync(database_dsn, settings), 1)
    try:
        async with pool.acquire() as conn:
            applied = await migrate(conn)  # refuses a database newer than this code
    finally:
        await pool.close()
    print(f"migrations applied: {applied or 'none (schema is current)'}")
    return EXIT_OK


async def _collect(args: argparse.Namespace) -> int:
    from collector.apis.v1.planner import parse_time
    from collector.clock import SystemClock
    from collector.runs import check_collection, collect
    from collector.wiring import metric_apis, runtime

    settings = load_settings(args.config)
    start = parse_time(args.start, "--start")
    end = parse_time(args.end, "--end")
    check_collection(settings, metric_apis(settings), start, end, args.instance, SystemClock().now(), args.profile)
    await check_credentials(settings)
    show = not args.no_progress and sys.stderr.isatty()
    progress: Any
    if show:
        from collector.terminal import RichProgress  # rich only when there is a terminal

        progress = RichProgress()
    else:
        progress = _Quiet()
    async with runtime(settings) as rt:
        with progress:
            run_id, summary = await collect(
                rt, start, end, instances=args.instance, requested_by="cli",
                profile=args.profile, progress=progress, on_planned=progress.set_total,
            )
    print(
        f"run {run_id}: {summary.slices_done}/{summary.slices_total} slices, "
        f"{summary.rows_written} rows ({summary.values_written} values), "
        f"{summary.requests} requests, {summary.retries} retries, {summary.throttles} throttled"
    )
    if summary.failures:
        print(f"{len(summary.failures)} slice(s) failed:", file=sys.stderr)
        for key, reason in summary.failures:
            print(f"  {key}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


class _Quiet(Progress):
    """No progress display (not a terminal, or --no-progress)."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_total(self, total: int) -> None:
        pass


def simulator_env(url: str, sim: object) -> dict[str, str]:
    """The environment that points botocore at the simulator. It reads the account from
    the access key id (``SIM`` + the 12-digit account id); any secret signs."""
    from collector.simulator import Simulator

    assert isinstance(sim, Simulator)
    return {
        "AWS_ENDPOINT_URL_CONNECT": url,
        "AWS_ACCESS_KEY_ID": f"SIM{sim.fleet.accounts[0]}",
        "AWS_SECRET_ACCESS_KEY": "simulator",
    }


def _sandbox_simulator() -> Any:
    """The small simulated fleet of `make run`, and credentials that reach it."""
    from collector.simulator import FleetSpec, Simulator, SimulatorConfig

    sim = Simulator(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=20)))
    for name, value in simulator_env("", sim).items():
        if name.startswith("AWS_") and value:
            os.environ.setdefault(name, value)
    return sim


def _sim_settings(sim: object, extra: str) -> Any:
    """Settings for the simulated fleet, read from a temporary TOML that is removed at once."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="collector-sandbox-", suffix=".toml")
    os.close(fd)
    try:
        _write_sim_config(path, sim, extra)
        return load_settings(path)
    finally:
        os.unlink(path)


def _write_sim_config(path: str, sim: object, extra: str = "") -> None:
    from collector.simulator import Simulator

    assert isinstance(sim, Simulator)
    lines = [extra] if extra else []
    lines += ["[collection]", 'granularity = "15m"', 'groupings = ["QUEUE", "CHANNEL"]',
              'metrics = "all"', "service_levels = [20, 60]", ""]
    for inst in sim.fleet.instances.values():
        lines += ["[[instances]]", f'id = "{inst.id}"', f'region = "{inst.region}"',
                  f'account = "{inst.account}"', 'queues = "all"', ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


async def _simulate(args: argparse.Namespace) -> int:
    from collector.simulator import FleetSpec, Simulator, SimulatorConfig, running_simulator

    cfg = SimulatorConfig(
        fleet=FleetSpec(accounts=args.accounts, regions=tuple(args.regions.split(",")),
                        instances_per_account=args.instances, queues_per_instance=args.queues,
                        seed=args.seed),
        rate=args.rate, burst=args.burst, error_rate=args.error_rate, latency=args.latency,
    )
    sim = Simulator(cfg)
    if args.write_config:
        _write_sim_config(args.write_config, sim)
    check_port(args.host, args.port, "simulator", ("--port N", "--host/--port"))
    async with running_simulator(sim, args.host, args.port) as url:
        print(f"simulator listening on {url} ({len(sim.fleet.instances)} instances)", flush=True)
        print("Point the collector at it with this environment:", flush=True)
        for name, value in simulator_env(url, sim).items():
            print(f"  export {name}={value}", flush=True)
        if args.write_config:
            print(f"then: collector collect --config {args.write_config} --start ... --end ...",
                  flush=True)
        await anyio.sleep_forever()
    return EXIT_OK


async def _sandbox(args: argparse.Namespace) -> int:
    from collector.apis.v1.planner import floor_to
    from collector.clock import SystemClock
    from collector.runs import collect
    from collector.simulator import running_simulator
    from collector.wiring import database_dsn, runtime

    sim = _sandbox_simulator()
    async with running_simulator(sim) as url:
        os.environ["AWS_ENDPOINT_URL_CONNECT"] = url
        settings = _sim_settings(sim, f'[database]\ndata_dir = "{args.data_dir}"\n')
        end = floor_to(SystemClock().now() - timedelta(minutes=15), 900)
        start = end - timedelta(hours=args.hours)
        print(f"simulator at {url}: {len(sim.fleet.instances)} instances; collecting {start:%H:%M}-{end:%H:%M} UTC")
        from collector.terminal import RichProgress

        progress = RichProgress(enabled=sys.stderr.isatty())
        async with runtime(settings) as rt:
            with progress:
                run_id, summary = await collect(rt, start, end, requested_by="sandbox",
                                                progress=progress, on_planned=progress.set_total)
        dsn = database_dsn(settings)
    print(f"run {run_id}: {summary.slices_done} slices, {summary.values_written} values stored")
    if settings.database.dsn:
        print("\nQuery it:")
        print(f'  psql "{dsn}" -c "SELECT instance_id, interval_start, queue_name, channel, contacts_handled, '
              'service_level FROM kpi_queue_interval ORDER BY interval_start DESC LIMIT 10"')
    else:
        # The embedded Postgres stops with this process: a psql line for it would not connect.
        print(f"\nThe embedded Postgres in {args.data_dir} stopped with this command; the data stays there.")
        print("To query it, start the service on the same data directory and use the psql line it prints:")
        print(f'  COLLECTOR_DATABASE__DATA_DIR="{args.data_dir}" collector serve --sandbox')
        print("or run the sandbox against a Postgres of your own:")
        print("  COLLECTOR_DATABASE_URL=postgresql://user@host/db collector sandbox")
    return EXIT_OK if not summary.failures else EXIT_FAILED


async def _serve(args: argparse.Namespace) -> int:
    from collector.wiring import serve

    if not args.sandbox:
        settings = load_settings(args.config)
        _apply_api_args(settings, args)
        check_port(settings.api.host, settings.api.port)
        await check_credentials(settings)
        configure(settings.log_format, args.log_level if args.log_level != "warning" else "info")
        await serve(settings)
        return EXIT_OK

    from collector.simulator import running_simulator

    base = load_settings(args.config)  # the file (if any) and COLLECTOR_* overrides
    extra = f'[database]\ndata_dir = "{base.database.data_dir}"\n\n[scheduler]\ninitial_backfill = "6h"\n'
    if base.database.dsn:
        extra = f'[database]\ndsn = "{base.database.dsn}"\n\n[scheduler]\ninitial_backfill = "6h"\n'
    # real time too: queue gauges and agent states every 15 s (the wallboard shows them)
    extra += ('\n[[profiles]]\nname = "queues_now"\napi = "current"\n'
              '\n[[profiles]]\nname = "agents_now"\napi = "agents"\n')
    _apply_api_args(base, args)
    check_port(base.api.host, base.api.port)  # before the simulator or the database start
    sim = _sandbox_simulator()
    configure("console", args.log_level if args.log_level != "warning" else "info")
    async with running_simulator(sim) as url:
        os.environ["AWS_ENDPOINT_URL_CONNECT"] = url
        settings = _sim_settings(sim, extra)
        _apply_api_args(settings, args)

        def ready(api_url: str | None) -> None:
            from collector.wiring import database_dsn

            dsn = database_dsn(settings)
            print(f"""
connect-collector is running in sandbox mode
  simulator : {url}  ({len(sim.fleet.instances)} simulated instances)
  API       : {api_url}   (OpenAPI at {api_url}/docs)
  wallboard : {api_url}/wallboard   (queues and agents now, every 15 s)
  database  : {dsn}

Try:
  curl -s {api_url}/collections | python3 -m json.tool
  psql "{dsn}" -c "SELECT interval_start, queue_id, channel, contacts_handled, service_level FROM historical_metrics_wide ORDER BY interval_start DESC LIMIT 10"
  psql "{dsn}" -c "SELECT instance_name, queue_name, channel, contacts_in_queue, oldest_contact_age, agents_available FROM current_queue_now ORDER BY 1, 2, 3"
Stop with Ctrl-C.
""", flush=True)

        await serve(settings, on_ready=ready)
    return EXIT_OK


def _apply_api_args(settings: object, args: argparse.Namespace) -> None:
    from collector.config import Settings, check_api_exposure

    assert isinstance(settings, Settings)
    if args.host:
        settings.api.host = args.host
    if args.port:
        settings.api.port = args.port
    try:
        check_api_exposure(settings.api)
    except ValueError as e:
        raise errors.ConfigError(f"--host: {e}") from None
