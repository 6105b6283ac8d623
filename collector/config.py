"""One settings object: a TOML file plus ``COLLECTOR_*`` environment overrides.

Every option has an environment variable: ``COLLECTOR_<SECTION>__<KEY>``
(``COLLECTOR_COLLECTION__GRANULARITY=1h``), plus the short forms
``COLLECTOR_DATABASE_URL`` and ``COLLECTOR_API_TOKEN``.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)

from collector import quotas
from collector.apis import AnyProfileSettings
from collector.apis.current.settings import AgentsProfileSettings, CurrentProfileSettings
from collector.apis.v1 import catalog
from collector.apis.v1.settings import CollectionSettings, ProfileSettings
from collector.apis.v2.settings import V2ProfileSettings
from collector.durations import parse_duration
from collector.errors import ConfigError, unknown_profile
from collector.validation import Section, keyword


class DatabaseSettings(Section):
    dsn: str | None = None
    data_dir: str = ".data/pg"
    pool_size: int = Field(default=4, ge=1, le=64)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^postgres(ql)?://", v):
            raise ValueError("is not a PostgreSQL URL like postgresql://user@host:5432/db")
        return v or None


class InstanceSettings(Section):
    id: str = Field(min_length=1, max_length=100)
    region: str = Field(min_length=1)
    queues: Literal["all"] | list[str] = "all"
    account: str | None = None
    aws_profile: str | None = None
    name: str | None = None

    @field_validator("queues", mode="before")
    @classmethod
    def _all_or_list(cls, v: Any) -> Any:
        return keyword(v, "all", "queue IDs or ARNs")

    @field_validator("queues")
    @classmethod
    def _queues(cls, v: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("an empty queue list collects nothing; use \"all\" or list IDs")
        return v


class AwsSettings(Section):
    fast_path: bool = True  # decode metric pages with msgspec; false: botocore's parser
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_attempts: int = Field(default=8, ge=1, le=50)
    workers_per_account: int = Field(default=3, ge=1, le=64)
    max_inflight_slices: int = Field(default=48, ge=1)  # bounds memory across all accounts
    get_metric_data_rate: float = Field(default=5.0, gt=0)
    get_metric_data_burst: int = Field(default=8, ge=1)
    list_queues_rate: float = Field(default=10.0, gt=0)
    # GetMetricDataV2's own quota per (account, Region); the default is the published one
    # (the published value is not certain: the adaptive limiter finds a lower real one)
    get_metric_data_v2_rate: float = Field(default=quotas.DEFAULT_QUOTAS["GetMetricDataV2"][0], gt=0)
    get_metric_data_v2_burst: int = Field(default=quotas.DEFAULT_QUOTAS["GetMetricDataV2"][1], ge=1)
    # the real-time APIs' quotas per (account, Region)
    get_current_metric_data_rate: float = Field(default=quotas.DEFAULT_QUOTAS["GetCurrentMetricData"][0], gt=0)
    get_current_metric_data_burst: int = Field(default=quotas.DEFAULT_QUOTAS["GetCurrentMetricData"][1], ge=1)
    get_current_user_data_rate: float = Field(default=quotas.DEFAULT_QUOTAS["GetCurrentUserData"][0], gt=0)
    get_current_user_data_burst: int = Field(default=quotas.DEFAULT_QUOTAS["GetCurrentUserData"][1], ge=1)
    rate_headroom: float = Field(default=1.0, gt=0, le=1)  # share of the quota actually used


_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/.+$")


class AccountSettings(Section):
    """An AWS account: how to reach it (a role to assume), where its instances are, and
    its quotas when they are not the defaults."""

    id: str | None = Field(default=None, pattern=r"^\d{12}$")
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str = Field(default="connect-collector", min_length=2, max_length=64)
    aws_profile: str | None = None  # source credentials for the AssumeRole call
    regions: list[str] = Field(default_factory=list)
    instances: Literal["discover"] | list[str] | None = None
    get_metric_data_rate: float | None = Field(default=None, gt=0)
    get_metric_data_burst: int | None = Field(default=None, ge=1)
    list_queues_rate: float | None = Field(default=None, gt=0)
    get_metric_data_v2_rate: float | None = Field(default=None, gt=0)
    get_metric_data_v2_burst: int | None = Field(default=None, ge=1)
    get_current_metric_data_rate: float | None = Field(default=None, gt=0)
    get_current_metric_data_burst: int | None = Field(default=None, ge=1)
    get_current_user_data_rate: float | None = Field(default=None, gt=0)
    get_current_user_data_burst: int | None = Field(default=None, ge=1)

    @field_validator("instances", mode="before")
    @classmethod
    def _discover_or_list(cls, v: Any) -> Any:
        return v if v is None else keyword(v, "discover", "instance IDs")

    @model_validator(mode="after")
    def _consistent(self) -> AccountSettings:
        name = self.id or self.role_arn or "?"
        if self.role_arn is not None:
            m = _ROLE_ARN.match(self.role_arn)
            if not m:
                raise ValueError(f"account {name}: role_arn {self.role_arn!r} is not an IAM role ARN")
            if self.id is None:
                self.id = m.group(1)
            elif self.id != m.group(1):
                raise ValueError(f"account {self.id}: role_arn belongs to account {m.group(1)}")
        if self.id is None:
            raise ValueError("an account needs an id or a role_arn")
        if self.instances is not None and not self.regions:
            raise ValueError(f"account {self.id}: instances are given but no regions")
        if isinstance(self.instances, list) and len(self.regions) != 1:
            raise ValueError(
                f"account {self.id}: list instance IDs with exactly one region, or use instances = \"discover\""
            )
        return self


_BY_API: dict[str, type[V2ProfileSettings | CurrentProfileSettings | AgentsProfileSettings]] = {
    "v2": V2ProfileSettings, "current": CurrentProfileSettings, "agents": AgentsProfileSettings,
}


def _pick_profile(v: Any, _handler: Any) -> AnyProfileSettings:
    """``api = "v2"`` -> a GetMetricDataV2 profile, ``"current"`` GetCurrentMetricData,
    ``"agents"`` GetCurrentUserData; otherwise (``"v1"``, the default) v1. Errors keep the
    plain ``profiles[i].key`` location."""
    if isinstance(v, ProfileSettings | V2ProfileSettings | CurrentProfileSettings | AgentsProfileSettings):
        return v
    if isinstance(v, dict) and v.get("api") in _BY_API:
        return _BY_API[v["api"]].model_validate(v)
    if isinstance(v, dict) and v.get("api", "v1") != "v1":
        raise ValueError(f"api {v.get('api')!r} is not one of v1, v2, current, agents")
    if isinstance(v, dict) and v.get("api", "v1") == "v1":
        v = {k: x for k, x in v.items() if k != "api"}
    return ProfileSettings.model_validate(v)


# ``[[profiles]]``: GetMetricData (v1, the default) or, with ``api = "v2"``, GetMetricDataV2.
AnyProfile = Annotated[AnyProfileSettings, WrapValidator(_pick_profile)]


class WriterSettings(Section):
    channel_size: int = Field(default=16, ge=1)
    batch_rows: int = Field(default=20_000, ge=1)
    batch_seconds: float = Field(default=0.5, gt=0)
    max_attempts: int = Field(default=6, ge=1)


class SchedulerSettings(Section):
    enabled: bool = True  # false: the service only runs collections asked for over HTTP
    settle: str = "15m"  # wait this long after a slice ends before collecting it
    revisits: list[str] = Field(default_factory=lambda: ["1h"])  # collect again this long after the end
    initial_backfill: str = "24h"  # how far back a never-collected instance starts
    catchup_batch: int = Field(default=16, ge=1)  # catch-up slices per instance per round
    lookback_margin: str = "10m"  # a slice this close to aging out is recorded as a gap
    discovery_ttl: str = "15m"  # queues are rediscovered this often
    retry_after: str = "30s"  # pause after a round with failed slices
    grace_period: float = Field(default=20.0, ge=0)  # seconds in-flight work gets on shutdown

    @field_validator("settle", "initial_backfill", "lookback_margin", "discovery_ttl", "retry_after")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("revisits")
    @classmethod
    def _revisits(cls, v: list[str]) -> list[str]:
        for x in v:
            if parse_duration(x) >= catalog.LOOKBACK_SECONDS:
                raise ValueError(f"revisit {x!r} is beyond the API's 24-hour lookback")
        return v

    def seconds(self, name: str) -> int:
        return parse_duration(getattr(self, name))


class StorageSettings(Section):
    # None: keep everything; at most 100 years (a cutoff before year 1 cannot be computed)
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    realtime_retention_days: int = Field(default=7, ge=1, le=36500)  # the real-time history tables
    prune_every: str = "1h"

    @field_validator("prune_every")
    @classmethod
    def _every(cls, v: str) -> str:
        parse_duration(v)
        return v


class RealtimeSettings(Section):
    max_gauge_series: int = Field(default=5000, ge=0, le=1_000_000)  # live Prometheus series, at most


class ClusterSettings(Section):
    enabled: bool = False  # true: share the fleet with other replicas through leases
    lease_ttl: float = Field(default=15.0, ge=1.0, le=3600.0, allow_inf_nan=False)  # seconds
    replica_id: str | None = None  # default: host name and process id


class ApiSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port
    token: str | None = None
    allow_unauthenticated: bool = False  # true: serve a non-loopback host without a token

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty; set a token, or leave it out to turn authentication off")
        return v

    @model_validator(mode="after")
    def _exposed_needs_token(self) -> ApiSettings:
        check_api_exposure(self)
        return self


def check_api_exposure(api: ApiSettings) -> None:
    """A non-loopback address without a token must be asked for (``allow_unauthenticated``).
    Raises :class:`ValueError` (a validator's error); call it again after changing ``host``."""
    import ipaddress

    host = api.host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and api.token is None and not api.allow_unauthenticated:
        raise ValueError(
            f"api.host {api.host!r} is reachable from other machines but no api.token is set; "
            "set one (or COLLECTOR_API_TOKEN), or set api.allow_unauthenticated = true if that is meant"
        )


class Settings(Section):
    """Everything, from the TOML file with ``COLLECTOR_*`` environment overrides laid
    over it by :func:`load_settings` (which also knows where each value came from)."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    collection: CollectionSettings = Field(default_factory=CollectionSettings)
    instances: list[InstanceSettings] = Field(default_factory=list)
    accounts: list[AccountSettings] = Field(default_factory=list)
    profiles: list[AnyProfile] = Field(default_factory=list)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    log_format: Literal["json", "console"] = "json"

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _unique_instances(self) -> Settings:
        seen: set[str] = set()
        for i in self.instances:
            if i.id in seen:
                raise ValueError(f"instance {i.id!r} is listed twice")
            seen.add(i.id)
        ids = [a.id for a in self.accounts]
        for a in ids:
            if ids.count(a) > 1:
                raise ValueError(f"account {a} is listed twice")
        names = [p.name for p in self.profiles]
        for n in names:
            if names.count(n) > 1 or n == "default":
                raise ValueError(f"profile {n!r} is listed twice (\"default\" is [collection])")
        return self

    def account(self, account_id: str | None) -> AccountSettings | None:
        for a in self.accounts:
            if a.id == account_id:
                return a
        return None

    def profile(self, name: str) -> CollectionSettings:
        """The collection settings of a profile; ``default`` is ``[collection]``."""
        if name == "default":
            return self.collection
        for p in self.profiles:
            if p.name == name:
                if not isinstance(p, ProfileSettings):
                    kind = {"v2": "GetMetricDataV2", "current": "GetCurrentMetricData", "agents": "GetCurrentUserData"}
                    raise ConfigError(f"profile {name!r} is a {kind[p.api]} profile (api = \"{p.api}\")")
                return p
        raise unknown_profile(name, ["default", *(p.name for p in self.profiles)])

    def v2_profiles(self) -> list[V2ProfileSettings]:
        return [p for p in self.profiles if isinstance(p, V2ProfileSettings)]


def _env_value(raw: str) -> Any:
    """JSON where it parses (lists, numbers, booleans), else the plain string."""
    try:
        import json

        return json.loads(raw)
    except ValueError:
        return raw


Origins = dict[tuple[str, ...], str]  # settings path -> the environment variable that set it


def _overlay_env(data: dict[str, Any], environ: dict[str, str], origins: Origins) -> dict[str, Any]:
    """``COLLECTOR_SECTION__KEY=value`` over the file's ``[section] key``."""
    for name, raw in sorted(environ.items()):
        if not name.startswith("COLLECTOR_") or "__" not in name:
            continue
        path = name.removeprefix("COLLECTOR_").lower().split("__")
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"environment variable {name}: {part} is not a table")
            node = nxt
        node[path[-1]] = _env_value(raw)
        origins[tuple(path)] = name
    if (level := environ.get("COLLECTOR_LOG_FORMAT")) is not None:
        data["log_format"] = level
        origins[("log_format",)] = "COLLECTOR_LOG_FORMAT"
    return data


def _short_env(data: dict[str, Any], environ: dict[str, str], origins: Origins) -> dict[str, Any]:
    data = _overlay_env(data, environ, origins)
    if url := environ.get("COLLECTOR_DATABASE_URL"):
        data.setdefault("database", {})["dsn"] = url
        origins[("database", "dsn")] = "COLLECTOR_DATABASE_URL"
    if (token := environ.get("COLLECTOR_API_TOKEN")) is not None:  # "" is an error, not "auth off"
        data.setdefault("api", {})["token"] = token
        origins[("api", "token")] = "COLLECTOR_API_TOKEN"
    return data


def _origin(loc: tuple[Any, ...], origins: Origins) -> str | None:
    """The environment variable that set the value at ``loc`` (or a table above it)."""
    keys = tuple(str(k).lower() for k in loc if isinstance(k, str))
    for n in range(len(keys), 0, -1):
        if keys[:n] in origins:
            return origins[keys[:n]]
    return None


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best effort: the line in the TOML text where the failing key is set: under the
    table of its path (``[profiles.filters]``), in the array table of its index (the
    second ``[[profiles]]``), else under the first table of its first key."""
    keys = [str(k) for k in loc if isinstance(k, str)]
    if not keys:
        return None
    pattern = re.compile(rf"^\s*{re.escape(keys[-1])}\s*=")
    header = ".".join(keys)  # the value may be a table of its own: [profiles.filters]
    want = ".".join(keys[:-1]) or None
    index = next((k for k in loc if isinstance(k, int)), None)
    seen: dict[str, int] = {}  # array table -> its occurrences so far
    table: str | None = None
    nth: int | None = None
    loose: int | None = None
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            table = stripped.strip("[]").strip()
            if stripped.startswith("[["):
                seen[table] = seen.get(table, -1) + 1
            nth = seen.get(table.split(".")[0])
            if table == header and (index is None or nth == index):
                return n
            continue
        if not pattern.match(line):
            continue
        if table == want and (index is None or nth == index):
            return n
        if loose is None and ((want is None and table is None) or (table is not None and table.split(".")[0] == keys[0])):
            loose = n
    return loose if len(keys) > 1 or want is None else None


def _section_keys(loc: tuple[Any, ...]) -> set[str]:
    """The keys valid where ``loc`` ends: the top level, or a section or list entry of it."""
    if len(loc) == 1:
        return set(Settings.model_fields)
    field = Settings.model_fields.get(str(loc[0]))
    if field is None or (len(loc) != 2 and not (len(loc) == 3 and isinstance(loc[1], int))):
        return set()
    if loc[0] == "profiles":
        return (set(ProfileSettings.model_fields) | set(V2ProfileSettings.model_fields)
                | set(CurrentProfileSettings.model_fields) | set(AgentsProfileSettings.model_fields))
    kind = field.annotation
    args = getattr(kind, "__args__", None)
    kind = args[0] if args else kind
    return set(getattr(kind, "model_fields", {}))


def _closest_key(loc: tuple[Any, ...]) -> str:
    """" (did you mean X?)" for an unknown key, where a known one is close to it."""
    close = difflib.get_close_matches(str(loc[-1]), sorted(_section_keys(loc)), n=2, cutoff=0.7)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _format_errors(exc: ValidationError, source: str, text: str, origins: Origins | None = None) -> str:
    parts: list[str] = []
    for err in exc.errors():
        # without the tags of a union's members (``literal['all']``, ``list[str]``)
        loc = tuple(p for p in err.get("loc", ()) if not (isinstance(p, str) and "[" in p))
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key" + _closest_key(loc)
        var = _origin(loc, origins or {})
        line = _line_of(text, loc) if text and var is None else None
        where = f"environment variable {var}" if var else f"{source}:{line}" if line else source
        head = f"{where}: {key or '(root)'}: "
        same = next((i for i, x in enumerate(parts) if x.startswith(head)), None)
        if same is None:
            parts.append(head + msg)
        else:  # one line per key: a union's members each say what they expected
            parts[same] += f" or {msg[0].lower()}{msg[1:]}"
    return "; ".join(parts)


def load_settings(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the TOML file (``--config`` or ``COLLECTOR_CONFIG``) and apply env overrides."""
    env = dict(os.environ if environ is None else environ)
    path = path or env.get("COLLECTOR_CONFIG")
    text = ""
    data: dict[str, Any] = {}
    source = "environment"
    if path:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
    origins: Origins = {}
    data = _short_env(data, env, origins)
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source, text, origins)) from None
