"""Amazon Connect through aiobotocore: the standard credential chain, Regions,
endpoint overrides (``AWS_ENDPOINT_URL_CONNECT``) and SigV4.

botocore's own retries are switched off: the collector's retry policy is the
only one, so retries never stack and every one is counted.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
)
from botocore.parsers import ResponseParserError

from collector import catalog, errors
from collector.decode import rows_of
from collector.model import Dims, MetricDataRequest, Target
from collector.ports import QueueInfo


def map_client_error(e: ClientError) -> errors.ApiError:
    """botocore's ClientError -> the collector's error classes."""
    err = e.response.get("Error", {}) or {}
    code = str(err.get("Code") or "")
    message = str(err.get("Message") or "")
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return classify(code, message, status)


def classify(code: str, message: str, status: int) -> errors.ApiError:
    detail = f"{code} ({status}): {message}" if message else f"{code} ({status})"
    if code in catalog.THROTTLING_CODES or status == 429:
        return errors.Throttled(detail, code=code, status=status)
    if status >= 500 or code in ("InternalServiceException", "ServiceUnavailableException"):
        return errors.TransientApiError(detail, code=code, status=status)
    if status == 400 and "nexttoken" in message.lower() and "expired" in message.lower():
        return errors.ExpiredToken(detail, code=code, status=status)
    if status == 404 or status == 403 or code in ("ResourceNotFoundException", "AccessDeniedException"):
        return errors.NotFound(detail, code=code, status=status)
    return errors.ClientBug(detail, code=code, status=status)


class BotocoreConnect:
    """A :class:`collector.ports.ConnectSource` over aiobotocore clients, one per (profile, Region)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_pool_connections: int = 32,
    ) -> None:
        self._config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
        )
        self._stack = contextlib.AsyncExitStack()
        self._sessions: dict[str | None, AioSession] = {}
        self._clients: dict[tuple[str | None, str], Any] = {}

    async def __aenter__(self) -> BotocoreConnect:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.__aexit__(None, None, None)

    async def client(self, target: Target) -> Any:
        key = (target.aws_profile, target.region)
        c = self._clients.get(key)
        if c is None:
            session = self._sessions.get(target.aws_profile)
            if session is None:
                session = self._sessions[target.aws_profile] = AioSession(profile=target.aws_profile)
            c = await self._stack.enter_async_context(
                session.create_client("connect", region_name=target.region, config=self._config)
            )
            self._clients[key] = c
        return c

    async def _invoke(self, target: Target, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        client = await self.client(target)
        try:
            result: dict[str, Any] = await getattr(client, op)(**kwargs)
            return result
        except ClientError as e:
            raise map_client_error(e) from None
        except ResponseParserError as e:
            raise errors.MalformedResponse(str(e)) from None
        except HTTPClientError as e:
            raise errors.TransientApiError(f"{type(e).__name__}: {e}") from None
        except BotoCoreError as e:
            raise errors.TransientApiError(f"{type(e).__name__}: {e}") from None
        except (OSError, TimeoutError) as e:
            raise errors.TransientApiError(f"{type(e).__name__}: {e}") from None

    async def get_metric_data(
        self, target: Target, request: MetricDataRequest, next_token: str | None
    ) -> tuple[list[tuple[Dims, list[float | None]]], str | None]:
        out = await self._invoke(target, "get_metric_data", request.to_api(next_token))
        return rows_of(out.get("MetricResults"), request.metrics), out.get("NextToken") or None

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
