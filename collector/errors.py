"""One exception hierarchy for the whole product.

Every class carries a docstring that is its message; ``str(exc)`` adds the
detail given at the raise site.
"""

from __future__ import annotations

from collections.abc import Iterable


class CollectorError(Exception):
    """connect-collector failed."""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(detail)

    def __str__(self) -> str:
        head = (self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else ""
        return f"{head} {self.detail}".strip() if self.detail else head


class BadInput(CollectorError):
    """Bad input:"""

    def __init__(self, detail: str = "", *, field: str = "body") -> None:
        super().__init__(detail)
        self.field = field  # what the input was wrong about (the HTTP API's 422 ``loc``)


class ConfigError(BadInput):
    """Invalid configuration:"""


def unknown_profile(name: str, configured: Iterable[str]) -> ConfigError:
    """The error for a ``--profile`` / ``"profile"`` that no profile of the config is
    called: it says which profiles are (and the closest name, where one is close)."""
    import difflib

    names = list(dict.fromkeys(configured))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(repr(n) for n in names) or "none"
    return ConfigError(f"profile {name!r} is not configured (configured profiles: {listed}){hint}", field="profile")


class PlanError(BadInput):
    """This collection cannot be served by GetMetricData:"""


class PlanErrorV2(PlanError):
    """This collection cannot be served by GetMetricDataV2:"""


class PlanErrorLive(PlanError):
    """This collection cannot be served by the real-time APIs:"""


class ApiError(CollectorError):
    """The Connect API refused the request:"""

    def __init__(self, detail: str = "", *, code: str = "", status: int = 0) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status


class Throttled(ApiError):
    """The Connect API throttled the request (429):"""


class TransientApiError(ApiError):
    """The Connect API failed transiently (5xx, timeout or dropped connection):"""


class ClientBug(ApiError):
    """The Connect API rejected a request as invalid; this is a bug in the planner:"""


class NotFound(ApiError):
    """The Connect resource does not exist or cannot be reached:"""


class AccessDenied(ApiError):
    """AWS denied access (the role cannot be assumed, or the IAM policy lacks a permission):"""


class ExpiredToken(ApiError):
    """The pagination token expired; the request's paging restarts:"""


class MalformedResponse(CollectorError):
    """The Connect API answered with a body the collector cannot read:"""


class QueueFull(CollectorError):
    """Too many one-off collections are queued; try again later:"""

    def __init__(self, detail: str = "", *, retry_after: int = 30) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class StorageError(CollectorError):
    """PostgreSQL failed:"""


class MigrationError(StorageError):
    """The database schema is not what this version of connect-collector expects:"""


class NothingToCollect(CollectorError):
    """No configured instance can be collected:"""


class ShardsUnserved(CollectorError):
    """Shards no live replica can serve (their accounts are in no live replica's config):"""


class LeaseLost(CollectorError):
    """This replica no longer holds the lease; the batch was not written (fencing):"""


class EnvironmentProblem(CollectorError):
    """The environment is not ready:"""


class PortInUse(EnvironmentProblem):
    """The port is already in use:"""


class NoCredentials(EnvironmentProblem, ApiError):
    """No AWS credentials found:"""
