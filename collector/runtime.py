"""The ports plugged together for one process (built by :func:`collector.wiring.runtime`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from collector import errors
from collector.config import Settings
from collector.pipeline import PipelineOptions
from collector.ports import Clock, ConnectSource, MetricApi, Store
from collector.ratelimit import Limiters


@dataclass
class Runtime:
    settings: Settings
    store: Store
    source: ConnectSource
    limiters: Limiters
    clock: Clock
    pipeline: PipelineOptions  # the pipeline's options, resolved from ``settings`` once
    apis: Mapping[str, MetricApi]  # every profile by name, on its metric API

    def api(self, profile: str) -> MetricApi:
        """The profile called ``profile`` (a config error naming ``profile`` if there is none)."""
        found = self.apis.get(profile)
        if found is None:
            raise errors.unknown_profile(profile, self.apis)
        return found

    @property
    def outlasts(self) -> bool:
        """Under the service, database outages are waited out instead of failing the work."""
        return self.pipeline.writer.write_attempts is None
