"""Amazon Connect through aiobotocore: the standard credential chain, Regions,
endpoint overrides (``AWS_ENDPOINT_URL_CONNECT``) and SigV4.

botocore's own retries are switched off: the collector's retry policy is the
only one, so retries never stack and every one is counted.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from aiobotocore.awsrequest import AioAWSResponse
from aiobotocore.client import AioClientCreator
from aiobotocore.config import AioConfig
from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioDeferredRefreshableCredentials,
)
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.parsers import ResponseParserError

from collector import errors, quotas
from collector.apis.current import decode as decode_current
from collector.apis.current.model import CurrentPage, CurrentRequest, UserDataRequest, UserPage
from collector.apis.v1.decode import decode_page, metric_index, rows_of
from collector.apis.v1.model import Dims, MetricDataRequest, MetricSet
from collector.apis.v2 import decode as decode_v2
from collector.apis.v2.model import MetricSetV2, PageV2, V2Request
from collector.model import AgentInfo, InstanceInfo, QueueInfo, ResourceInfo, Target


def map_client_error(e: ClientError) -> errors.ApiError:
    """botocore's ClientError -> the collector's error classes."""
    err = e.response.get("Error", {}) or {}
    code = str(err.get("Code") or "")
    message = str(err.get("Message") or "")
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return classify(code, message, status)


def classify(code: str, message: str, status: int) -> errors.ApiError:
    detail = f"{code} ({status}): {message}" if message else f"{code} ({status})"
    if code in quotas.THROTTLING_CODES or status == 429:
        return errors.Throttled(detail, code=code, status=status)
    if status >= 500 or code in ("InternalServiceException", "ServiceUnavailableException"):
        return errors.TransientApiError(detail, code=code, status=status)
    if status == 400 and "nexttoken" in message.lower() and "expired" in message.lower():
        return errors.ExpiredToken(detail, code=code, status=status)
    if status == 403 or code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
        return errors.AccessDenied(detail, code=code, status=status)
    if status == 404 or code == "ResourceNotFoundException":
        return errors.NotFound(detail, code=code, status=status)
    return errors.ClientBug(detail, code=code, status=status)


@dataclass
class _FastPage:
    """Where the fast path leaves one decoded page for the call that asked for it."""

    metrics: MetricSet
    index: dict[tuple[str, float | None], int]
    cache: dict[bytes, int]
    rows: list[tuple[Dims, list[float | None]]] | None = None
    next_token: str | None = None


_FAST_PAGE: ContextVar[_FastPage | None] = ContextVar("collector_fast_page", default=None)


class _Body:
    """A response body already consumed: what botocore's parser gets instead of the page."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self) -> bytes:
        return self._data


@dataclass
class _FastPageV2:
    """Where the GetMetricDataV2 fast path leaves one decoded page."""

    metrics: MetricSetV2
    index: decode_v2.MetricIndex
    page: PageV2 | None = None


_FAST_PAGE_V2: ContextVar[_FastPageV2 | None] = ContextVar("collector_fast_page_v2", default=None)


async def _fast_send_v2(client: Any, request: Any, **_kwargs: Any) -> Any:
    """``before-send`` hook for GetMetricDataV2, as :func:`_fast_send` for v1: the body is
    decoded by :func:`collector.apis.v2.decode.decode_page`; botocore parses ``{}`` or the error."""
    page = _FAST_PAGE_V2.get()
    if page is None:
        return None
    response = await client._endpoint.http_session.send(request)
    body = await response.content
    if response.status_code != 200:
        return response
    page.page = decode_v2.decode_page(body, page.metrics, page.index)
    return AioAWSResponse(request.url, 200, response.headers, _Body(b"{}"))


async def _fast_send(client: Any, request: Any, **_kwargs: Any) -> Any:
    """``before-send`` hook for GetMetricData: send the request aiobotocore built and
    signed, over its own HTTP session, and decode a 200 body straight into rows
    (:func:`collector.apis.v1.decode.decode_page`). botocore then parses only ``{}`` (or, for
    errors, the small error body, so errors map exactly as on the plain path)."""
    page = _FAST_PAGE.get()
    if page is None:
        return None  # not ours: let botocore send and parse as usual
    response = await client._endpoint.http_session.send(request)
    body = await response.content
    if response.status_code != 200:
        return response  # errors: botocore parses them as for the plain client
    page.rows, page.next_token = decode_page(body, page.metrics, page.index, page.cache)
    return AioAWSResponse(request.url, 200, response.headers, _Body(b"{}"))


def _check_body(response_dict: dict[str, Any], **_kwargs: Any) -> None:
    """``before-parse`` hook for the plain path: botocore turns a truncated or non-object
    JSON body into an empty result, which would store a slice as empty. Refuse it."""
    if response_dict.get("status_code") != 200:
        return
    try:
        data = orjson.loads(response_dict.get("body") or b"")
    except orjson.JSONDecodeError as e:
        raise errors.MalformedResponse(f"GetMetricData body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise errors.MalformedResponse("GetMetricData body is not a JSON object")
    for res in data.get("MetricResults") or []:
        for c in (res.get("Collections") or []) if isinstance(res, dict) else []:
            v = c.get("Value") if isinstance(c, dict) else None
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                name = (c.get("Metric") or {}).get("Name")
                raise errors.MalformedResponse(f"Value of {name} is {v!r}, not a number")


def _check_listing(operation: str) -> Callable[..., None]:
    """``before-parse`` hook for ListQueues/ListInstances: botocore turns a truncated body
    into an empty listing ("no queues"), which would hide the failure. Refuse it."""

    def check(response_dict: dict[str, Any], **_kwargs: Any) -> None:
        if response_dict.get("status_code") != 200:
            return
        try:
            data = orjson.loads(response_dict.get("body") or b"")
        except orjson.JSONDecodeError as e:
            raise errors.MalformedResponse(f"{operation} body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise errors.MalformedResponse(f"{operation} body is not a JSON object")

    return check


class _RoleFetcher(AioAssumeRoleCredentialFetcher):  # type: ignore[misc]  # aiobotocore has no type hints
    """AssumeRole through one STS client shared by every role of a profile (aiobotocore's
    own fetcher creates, and closes, a new STS client for every refresh)."""

    def __init__(self, sts: Callable[[], Awaitable[Any]], **kwargs: Any) -> None:
        self._sts = sts
        super().__init__(**kwargs)

    async def _get_credentials(self) -> Any:
        sts = await self._sts()
        response = await sts.assume_role(**self._assume_role_kwargs())
        self._add_account_id_to_response(response)
        return response


def _fixed_user_agent(client: Any) -> None:
    """botocore builds the User-Agent header twice for every request (sanitizing each
    component again, to add the feature IDs of that call); a client's is the same for
    every request but for those telemetry IDs, so build it once (about 5% of a fleet
    collection's CPU: python -m bench.fleet)."""
    creator = getattr(client, "_user_agent_creator", None)
    if creator is None:
        return
    fixed = creator.to_string()
    creator.to_string = lambda: fixed


# The client classes BotocoreConnect's sessions built, by (service, API version, operations).
# botocore builds a new class for every client, each with a method and a docstring object
# per operation of the service (about 0.45 MB for Connect's); the classes of one service
# are alike (their methods only name the operation), so one is enough however many
# credentials. Only clients created while this is set (by BotocoreConnect) share them.
_CLIENT_CLASSES: ContextVar[dict[tuple[str, str, tuple[str, ...]], type] | None] = ContextVar(
    "collector_client_classes", default=None
)
_create_client_class = AioClientCreator._create_client_class


async def _shared_client_class(self: Any, service_name: str, service_model: Any) -> type:
    classes = _CLIENT_CLASSES.get()
    if classes is None:
        cls: type = await _create_client_class(self, service_name, service_model)
        return cls
    key = (service_name, service_model.api_version, tuple(service_model.operation_names))
    known = classes.get(key)
    if known is None:
        known = classes[key] = await _create_client_class(self, service_name, service_model)
    return known


AioClientCreator._create_client_class = _shared_client_class


_CLIENT_CREDENTIALS: ContextVar[Any] = ContextVar("collector_client_credentials", default=None)


class _Session(AioSession):  # type: ignore[misc]  # aiobotocore has no type hints
    """An AioSession whose clients may each have credentials of their own: a client created
    while ``_CLIENT_CREDENTIALS`` is set signs with those (an assumed role's), any other with
    the session's own (its profile's chain)."""

    async def get_credentials(self) -> Any:
        creds = _CLIENT_CREDENTIALS.get()
        return creds if creds is not None else await super().get_credentials()


class BotocoreConnect:
    """A :class:`collector.ports.ConnectSource` over aiobotocore clients, one per (profile, Region).

    ``fast_path``: GetMetricData bodies are decoded straight into rows instead of by
    botocore's parser (about 15x less CPU per page); credentials, endpoint resolution,
    serialization and SigV4 signing stay aiobotocore's."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_pool_connections: int = 32,
        role_pool_connections: int | None = None,
        fast_path: bool = True,
    ) -> None:
        """``max_pool_connections``: the connection pool of a client of the default chain or
        a profile, which every account reached with those credentials shares.
        ``role_pool_connections``: that of an assumed role's client, which serves one
        account (sized to its work: the fetchers of each metric API and a listing)."""
        self.fast_path = fast_path
        # metric set -> (index by (name, threshold), cache of raw metric JSON -> position)
        self._indexes: dict[MetricSet, tuple[dict[tuple[str, float | None], int], dict[bytes, int]]] = {}
        self._v2_indexes: dict[MetricSetV2, decode_v2.MetricIndex] = {}
        self._config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            # every request is checked against the API's limits before it is built
            # (collector.apis.v1.planner.check_request), more strictly than botocore's minimums
            parameter_validation=False,
        )
        self._role_config = (
            self._config if role_pool_connections is None
            else self._config.merge(AioConfig(max_pool_connections=role_pool_connections))
        )
        self._stack = contextlib.AsyncExitStack()
        # One session per AWS profile (None: the default chain), whatever the number of
        # credentials: a session is botocore's loader, handlers and resolvers, and each new
        # one parses the Connect service model again and registers every built-in handler
        # (~15 MB and ~0.14 CPU-s an account; python -m bench.sessions). A role's clients are
        # created on its profile's session with the role's own refreshable credentials, and
        # the sessions of all profiles share one data loader and endpoint resolver.
        self._sessions: dict[str | None, _Session] = {}
        self._credentials: dict[tuple[str | None, str | None, str | None, str], Any] = {}
        self._sts_clients: dict[str | None, Any] = {}
        self._sts_lock = anyio.Lock()
        self._loader: Any = None
        self._resolver: Any = None
        self._clients: dict[tuple[tuple[str | None, str | None, str | None, str], str], Any] = {}
        self._classes: dict[tuple[str, str, tuple[str, ...]], type] = {}

    async def __aenter__(self) -> BotocoreConnect:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.__aexit__(None, None, None)

    def _session(self, profile: str | None) -> _Session:
        """The session of an AWS profile, on the shared loader and endpoint resolver."""
        session = self._sessions.get(profile)
        if session is None:
            session = _Session(profile=profile)
            if self._loader is None:
                self._loader = session.get_component("data_loader")
                self._resolver = session._get_internal_component("endpoint_resolver")
            else:
                session.register_component("data_loader", self._loader)
                session._register_internal_component("endpoint_resolver", self._resolver)
            self._sessions[profile] = session
        return session

    async def _sts(self, profile: str | None, session: _Session) -> Any:
        """The STS client of a profile (its own credential chain), shared by every role
        assumed from it, for the life of this source."""
        sts = self._sts_clients.get(profile)
        if sts is None:
            async with self._sts_lock:
                sts = self._sts_clients.get(profile)
                if sts is None:
                    reset = _CLIENT_CREDENTIALS.set(None)
                    try:
                        sts = await self._stack.enter_async_context(session.create_client("sts"))
                    finally:
                        _CLIENT_CREDENTIALS.reset(reset)
                    self._sts_clients[profile] = sts
        return sts

    async def _role_credentials(self, target: Target, session: _Session) -> Any:
        """An assumed role's credentials, which aiobotocore refreshes before they expire;
        the AssumeRole calls are made from the profile's session (the source), so every
        role of a profile shares its source credentials and its STS client model."""
        key = target.credentials_key
        creds = self._credentials.get(key)
        if creds is None:
            assert target.role_arn
            extra: dict[str, Any] = {"RoleSessionName": target.session_name}
            if target.external_id:
                extra["ExternalId"] = target.external_id
            fetcher = _RoleFetcher(
                functools.partial(self._sts, target.aws_profile, session),
                client_creator=session.create_client,
                source_credentials=await session.get_credentials(),
                role_arn=target.role_arn,
                extra_args=extra,
            )
            creds = self._credentials[key] = AioDeferredRefreshableCredentials(
                refresh_using=fetcher.fetch_credentials, method="assume-role"
            )
        return creds

    async def client(self, target: Target) -> Any:
        key = (target.credentials_key, target.region)
        c: Any = self._clients.get(key)
        if c is None:
            session = self._session(target.aws_profile)
            creds = await self._role_credentials(target, session) if target.role_arn else None
            reset = _CLIENT_CREDENTIALS.set(creds)
            shared = _CLIENT_CLASSES.set(self._classes)
            try:
                c = await self._stack.enter_async_context(
                    session.create_client(
                        "connect", region_name=target.region,
                        config=self._role_config if target.role_arn else self._config,
                    )
                )
            finally:
                _CLIENT_CLASSES.reset(shared)
                _CLIENT_CREDENTIALS.reset(reset)
            if self.fast_path:
                c.meta.events.register(
                    "before-send.connect.GetMetricData", functools.partial(_fast_send, c)
                )
                c.meta.events.register(
                    "before-send.connect.GetMetricDataV2", functools.partial(_fast_send_v2, c)
                )
            else:
                c.meta.events.register("before-parse.connect.GetMetricData", _check_body)
                c.meta.events.register("before-parse.connect.GetMetricDataV2", _check_body)
            for op in ("ListQueues", "ListInstances"):
                c.meta.events.register(f"before-parse.connect.{op}", _check_listing(op))
            _fixed_user_agent(c)
            self._clients[key] = c
        return c

    async def _invoke(self, target: Target, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            client = await self.client(target)
            result: dict[str, Any] = await getattr(client, op)(**kwargs)
            return result
        except ClientError as e:
            raise map_client_error(e) from None
        except ResponseParserError as e:
            raise errors.MalformedResponse(str(e)) from None
        except errors.CollectorError:
            raise
        except HTTPClientError as e:
            raise errors.TransientApiError(f"{type(e).__name__}: {e}") from None
        except (NoCredentialsError, PartialCredentialsError, ProfileNotFound) as e:
            # not transient: retrying cannot find credentials that are not there
            raise errors.NoCredentials(f"{e} (target {target.account}/{target.region})") from None
        except BotoCoreError as e:
            raise errors.TransientApiError(f"{type(e).__name__}: {e}") from None
        except (OSError, TimeoutError) as e:
            raise errors.TransientApiError(f"{type(e).__name__}: {e}") from None

    async def get_metric_data(
        self, target: Target, request: MetricDataRequest, next_token: str | None
    ) -> tuple[list[tuple[Dims, list[float | None]]], str | None]:
        if not self.fast_path:
            out = await self._invoke(target, "get_metric_data", request.to_api(next_token))
            return rows_of(out.get("MetricResults"), request.metrics), out.get("NextToken") or None
        known = self._indexes.get(request.metrics)
        if known is None:
            known = self._indexes[request.metrics] = (metric_index(request.metrics), {})
        page = _FastPage(request.metrics, known[0], known[1])
        reset = _FAST_PAGE.set(page)
        try:
            await self._invoke(target, "get_metric_data", request.to_api(next_token))
        finally:
            _FAST_PAGE.reset(reset)
        if page.rows is None:
            raise errors.MalformedResponse("the fast path saw no response")
        return page.rows, page.next_token

    # -- GetMetricDataV2 ---------------------------------------------------------------
    def _v2_index(self, metrics: MetricSetV2) -> decode_v2.MetricIndex:
        idx = self._v2_indexes.get(metrics)
        if idx is None:
            idx = self._v2_indexes[metrics] = decode_v2.MetricIndex(metrics)
        return idx

    async def get_metric_data_v2(self, target: Target, request: V2Request, next_token: str | None) -> PageV2:
        """One page of GetMetricDataV2, decoded into rows per MetricInterval."""
        index = self._v2_index(request.metrics)
        if not self.fast_path:
            out = await self._invoke(target, "get_metric_data_v2", request.to_api(next_token))
            rows = decode_v2.rows_of(out.get("MetricResults"), index)
            return PageV2(request.metrics, rows, decode_v2.next_token(out.get("NextToken")))
        fast = _FastPageV2(request.metrics, index)
        reset = _FAST_PAGE_V2.set(fast)
        try:
            await self._invoke(target, "get_metric_data_v2", request.to_api(next_token))
        finally:
            _FAST_PAGE_V2.reset(reset)
        if fast.page is None:
            raise errors.MalformedResponse("the fast path saw no response")
        return fast.page

    # -- the real-time APIs -------------------------------------------------------------
    async def get_current_metric_data(
        self, target: Target, request: CurrentRequest, next_token: str | None
    ) -> CurrentPage:
        """One page of GetCurrentMetricData: rows per dimension group, the snapshot's time."""
        out = await self._invoke(target, "get_current_metric_data", request.to_api(next_token))
        return decode_current.current_page(out, request.metrics, bool(request.groupings))

    async def get_current_user_data(
        self, target: Target, request: UserDataRequest, next_token: str | None
    ) -> UserPage:
        """One page of GetCurrentUserData: each agent's state."""
        out = await self._invoke(target, "get_current_user_data", request.to_api(next_token))
        return decode_current.user_page(out)

    async def _list(self, target: Target, op: str, key: str, next_token: str | None) -> tuple[list[Any], str | None]:
        kwargs: dict[str, Any] = {"InstanceId": target.instance_id, "MaxResults": 1000}
        if next_token:
            kwargs["NextToken"] = next_token
        out = await self._invoke(target, op, kwargs)
        return list(out.get(key) or []), out.get("NextToken") or None

    async def list_users(self, target: Target, next_token: str | None) -> tuple[list[AgentInfo], str | None]:
        items, token = await self._list(target, "list_users", "UserSummaryList", next_token)
        return [AgentInfo(u["Id"], u.get("Arn", ""), u.get("Username", "")) for u in items], token

    async def search_users(self, target: Target, next_token: str | None) -> tuple[list[AgentInfo], str | None]:
        """Like :meth:`list_users`, with first and last names, routing profile and hierarchy group."""
        kwargs: dict[str, Any] = {"InstanceId": target.instance_id, "MaxResults": 500}
        if next_token:
            kwargs["NextToken"] = next_token
        out = await self._invoke(target, "search_users", kwargs)
        users = [
            AgentInfo(
                u["Id"], u.get("Arn", ""), u.get("Username", ""),
                (u.get("IdentityInfo") or {}).get("FirstName"), (u.get("IdentityInfo") or {}).get("LastName"),
                u.get("RoutingProfileId"), u.get("HierarchyGroupId"),
            )
            for u in out.get("Users") or []
        ]
        return users, out.get("NextToken") or None

    async def list_routing_profiles(
        self, target: Target, next_token: str | None
    ) -> tuple[list[ResourceInfo], str | None]:
        items, token = await self._list(target, "list_routing_profiles", "RoutingProfileSummaryList", next_token)
        return [ResourceInfo(r["Id"], r.get("Arn", ""), r.get("Name", "")) for r in items], token

    async def list_user_hierarchy_groups(
        self, target: Target, next_token: str | None
    ) -> tuple[list[ResourceInfo], str | None]:
        items, token = await self._list(
            target, "list_user_hierarchy_groups", "UserHierarchyGroupSummaryList", next_token
        )
        return [ResourceInfo(g["Id"], g.get("Arn", ""), g.get("Name", "")) for g in items], token

    async def list_instances(self, target: Target, next_token: str | None) -> tuple[list[InstanceInfo], str | None]:
        kwargs: dict[str, Any] = {"MaxResults": 10}
        if next_token:
            kwargs["NextToken"] = next_token
        out = await self._invoke(target, "list_instances", kwargs)
        items = [
            InstanceInfo(i["Id"], i.get("Arn", ""), i.get("InstanceAlias", ""), i.get("InstanceStatus", ""))
            for i in out.get("InstanceSummaryList", [])
        ]
        return items, out.get("NextToken") or None

    async def list_queues(self, target: Target, next_token: str | None) -> tuple[list[QueueInfo], str | None]:
        kwargs: dict[str, Any] = {
            "InstanceId": target.instance_id,
            "QueueTypes": ["STANDARD"],
            "MaxResults": 1000,
        }
        if next_token:
            kwargs["NextToken"] = next_token
        out = await self._invoke(target, "list_queues", kwargs)
        items = [
            QueueInfo(q["Id"], q.get("Arn", ""), q.get("Name", ""), q.get("QueueType", "STANDARD"))
            for q in out.get("QueueSummaryList", [])
        ]
        return items, out.get("NextToken") or None
