"""The metric APIs, each an implementation of :class:`collector.ports.MetricApi`:
GetMetricData (:mod:`collector.apis.v1`), GetMetricDataV2 (:mod:`collector.apis.v2`) and
the real-time GetCurrentMetricData and GetCurrentUserData (:mod:`collector.apis.current`).
Each package holds only what is API-specific (catalog, settings, planner, decoder,
units); the core looks a profile's API up by name and never branches on which it is."""

from __future__ import annotations

from collections.abc import Sequence

from collector.apis.current.api import AgentsApi, CurrentApi
from collector.apis.current.settings import AgentsProfileSettings, CurrentProfileSettings
from collector.apis.v1.api import V1Api
from collector.apis.v1.settings import CollectionSettings, ProfileSettings
from collector.apis.v2.api import V2Api
from collector.apis.v2.settings import V2ProfileSettings
from collector.ports import MetricApi

DEFAULT_PROFILE = "default"  # [collection]


AnyProfileSettings = ProfileSettings | V2ProfileSettings | CurrentProfileSettings | AgentsProfileSettings


def metric_api(name: str, profile: CollectionSettings | AnyProfileSettings) -> MetricApi:
    """A profile on its metric API (``api``: ``v2`` GetMetricDataV2, ``current``
    GetCurrentMetricData, ``agents`` GetCurrentUserData; else GetMetricData)."""
    if isinstance(profile, V2ProfileSettings):
        return V2Api(profile)
    if isinstance(profile, CurrentProfileSettings):
        return CurrentApi(profile)
    if isinstance(profile, AgentsProfileSettings):
        return AgentsApi(profile)
    return V1Api(name, profile)


def metric_apis(
    collection: CollectionSettings, profiles: Sequence[AnyProfileSettings] = ()
) -> dict[str, MetricApi]:
    """Every profile by name: ``default`` ([collection]) and each [[profiles]] entry."""
    out: dict[str, MetricApi] = {DEFAULT_PROFILE: metric_api(DEFAULT_PROFILE, collection)}
    for p in profiles:
        out[p.name] = metric_api(p.name, p)
    return out
