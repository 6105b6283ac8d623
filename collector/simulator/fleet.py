"""A deterministic simulated fleet: accounts, Regions, instances, queues and the data they hold."""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.apis.v1 import catalog

SUBTYPES = ("connect:Chat", "connect:SMS", "connect:Telephony", "connect:WebRTC")
VALIDATION_TEST_TYPES = ("TEST_CALL", "SIMULATION")
AGENT_STATUS_NAMES = ("Available", "Offline", "Lunch", "Training")


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


_METRIC_SALT = {name: _h("metric", name) for name in catalog.METRICS}
_UNIT = {name: spec.unit for name, spec in catalog.METRICS.items()}


@dataclass
class Instance:
    id: str
    account: str
    region: str
    alias: str
    queues: dict[str, str] = field(default_factory=dict)  # id -> name (STANDARD)
    agent_queues: dict[str, str] = field(default_factory=dict)  # id -> name (AGENT)
    routing_profiles: list[str] = field(default_factory=list)
    agent_statuses: list[str] = field(default_factory=list)
    subtypes: tuple[str, ...] = SUBTYPES
    validation_test_types: tuple[str, ...] = VALIDATION_TEST_TYPES

    @property
    def arn(self) -> str:
        return f"arn:aws:connect:{self.region}:{self.account}:instance/{self.id}"

    def queue_arn(self, qid: str) -> str:
        return f"{self.arn}/queue/{qid}"

    def routing_profile_arn(self, rid: str) -> str:
        return f"{self.arn}/routing-profile/{rid}"

    def agent_status_arn(self, sid: str) -> str:
        return f"{self.arn}/agent-state/{sid}"


@dataclass(frozen=True)
class FleetSpec:
    accounts: int = 1
    regions: tuple[str, ...] = ("us-east-1",)
    instances_per_account: int = 1
    queues_per_instance: int = 10
    seed: int = 7
    inactive_share: float = 0.25  # share of (queue, channel) groups with no contacts at all
    idle_share: float = 0.1  # share of active groups whose averages have no Value
    agents_per_instance: int = 12  # GetMetricDataV2: agents (and their cells) per instance


def account_id(n: int) -> str:
    return f"{100000000000 + n:012d}"


class Fleet:
    """Accounts x Regions x instances; the data is a pure function of the seed."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.instances: dict[str, Instance] = {}
        self.accounts = [account_id(a) for a in range(spec.accounts)]
        for a in range(len(self.accounts)):
            for r in range(len(spec.regions)):
                for i in range(spec.instances_per_account):
                    self._add_instance(a, r, i)

    def _add_instance(self, a: int, r: int, i: int) -> str:
        spec, acct, region = self.spec, self.accounts[a], self.spec.regions[r]
        iid = str(uuid.UUID(int=_h(spec.seed, "instance", a, r, i) << 64 | _h(a, r, i)))
        inst = Instance(id=iid, account=acct, region=region, alias=f"sim-{a}-{region}-{i}")
        for q in range(spec.queues_per_instance):
            self._add_queue(inst, q)
        for q in range(2):
            qid = str(uuid.UUID(int=_h(spec.seed, "agentq", iid, q) << 64 | q))
            inst.agent_queues[qid] = f"agent-queue-{q}"
        inst.routing_profiles = [
            str(uuid.UUID(int=_h(spec.seed, "rp", iid, k) << 64 | k)) for k in range(3)
        ]
        inst.agent_statuses = [
            str(uuid.UUID(int=_h(spec.seed, "as", iid, k) << 64 | k))
            for k in range(len(AGENT_STATUS_NAMES))
        ]
        self.instances[iid] = inst
        return iid

    def _add_queue(self, inst: Instance, q: int) -> str:
        qid = str(uuid.UUID(int=_h(self.spec.seed, "queue", inst.id, q) << 64 | q))
        inst.queues[qid] = f"queue-{q:04d}"
        return qid

    # -- mutation (tests: queues appear and vanish) ----------------------------
    def add_queue(self, instance_id: str) -> str:
        inst = self.instances[instance_id]
        return self._add_queue(inst, len(inst.queues) + 10_000)

    def remove_queue(self, instance_id: str, queue_id: str) -> None:
        self.instances[instance_id].queues.pop(queue_id, None)

    # -- mutation (tests: instances appear and vanish) -------------------------
    def add_instance(self, account: str, region: str) -> str:
        """A new instance in (account, Region); its id."""
        a, r = self.accounts.index(account), self.spec.regions.index(region)
        return self._add_instance(a, r, len(self.instances_of(account, region)) + 1000)

    def remove_instance(self, instance_id: str) -> None:
        self.instances.pop(instance_id, None)

    def instances_of(self, account: str, region: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.account == account and i.region == region]

    # -- data ------------------------------------------------------------------
    def _dimension_values(
        self, inst: Instance, grouping: str, filters: dict[str, list[str]]
    ) -> list[tuple[str, Any]]:
        """(key, wire value) for every value of one grouping, after filters."""
        if grouping == "QUEUE":
            out = []
            for q in filters.get("Queues", []):
                qid = q.rsplit("/", 1)[-1]
                if qid in inst.queues or qid in inst.agent_queues:
                    out.append((qid, {"Id": qid, "Arn": inst.queue_arn(qid)}))
            return out
        if grouping == "CHANNEL":
            return [(c, c) for c in (filters.get("Channels") or list(catalog.CHANNELS))]
        if grouping == "ROUTING_PROFILE":
            allowed = {x.rsplit("/", 1)[-1] for x in filters.get("RoutingProfiles", [])}
            return [
                (r, {"Id": r, "Arn": inst.routing_profile_arn(r)})
                for r in inst.routing_profiles
                if not allowed or r in allowed
            ]
        if grouping == "AGENT_STATUS":
            allowed = {x.rsplit("/", 1)[-1] for x in filters.get("AgentStatuses", [])}
            return [
                (s, {"Id": s, "Arn": inst.agent_status_arn(s)})
                for s in inst.agent_statuses
                if not allowed or s in allowed
            ]
        if grouping == "SUBTYPE":
            allowed = set(filters.get("Subtypes", []))
            return [(s, s) for s in inst.subtypes if not allowed or s in allowed]
        if grouping == "VALIDATION_TEST_TYPE":
            allowed = set(filters.get("ValidationTestTypes", []))
            return [(s, s) for s in inst.validation_test_types if not allowed or s in allowed]
        raise ValueError(grouping)

    def groups(
        self, inst: Instance, groupings: Sequence[str], filters: dict[str, list[str]]
    ) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        """Every dimension group of the request, as (key, Dimensions) pairs, in a stable order."""
        combos: list[tuple[tuple[str, ...], dict[str, Any]]] = [((), {})]
        for g in groupings:
            dim_key = catalog.GROUPINGS[g][0]
            nxt = []
            for key, dims in combos:
                for vkey, wire in self._dimension_values(inst, g, filters):
                    nxt.append(((*key, f"{g}={vkey}"), {**dims, dim_key: wire}))
            combos = nxt
        return combos

    def group_state(
        self, inst: Instance, start: int, end: int, key: tuple[str, ...]
    ) -> tuple[int, random.Random] | None:
        """The group's random state, or None when it had no contacts at all (left out)."""
        h = _h(self.spec.seed, inst.id, start, end, key)
        rng = random.Random(h)
        if key and rng.random() < self.spec.inactive_share:
            return None
        return h, rng

    def values_of(
        self,
        state: tuple[int, random.Random],
        metrics: Iterable[tuple[str, float | None]],
        provisional: bool = False,
    ) -> list[float | None]:
        """A group's values, all derived from one summary of its contacts (so they agree
        the way Connect's do): ``queued`` contacts, of which ``abandoned`` left the queue
        and the rest were answered and handled after an exponential queue wait of mean
        ``wait`` seconds (service level X = handled / queued x (1 - e^(-X / wait))), each
        with talk, hold and after-contact work (handle >= interaction + hold >= interaction)."""
        h, rng = state
        idle = rng.random() < self.spec.idle_share
        queued = 0 if idle else rng.randint(1, 60)
        wait = 5 + rng.randrange(120)
        abandoned_pct = rng.randrange(26)
        talk, hold, acw = 30_000 + rng.randrange(570_000), rng.randrange(90_000), rng.randrange(120_000)
        if provisional:
            queued //= 2
        abandoned = queued * abandoned_pct // 100
        handled = queued - abandoned
        times = {  # milliseconds, so that sums compare exactly
            "HANDLE_TIME": talk + hold + acw, "INTERACTION_AND_HOLD_TIME": talk + hold,
            "INTERACTION_TIME": talk, "HOLD_TIME": hold, "AFTER_CONTACT_WORK_TIME": acw,
            "QUEUE_ANSWER_TIME": wait * 1000, "QUEUED_TIME": wait * 3000,
        }
        counts = {"CONTACTS_QUEUED": queued, "CONTACTS_HANDLED": handled, "CONTACTS_ABANDONED": abandoned}
        out: list[float | None] = []
        append = out.append
        for name, thr in metrics:
            # one stream per metric, so a metric's value does not depend on which others were asked
            hv = (h ^ _METRIC_SALT[name]) * 0x9E3779B97F4A7C15 % (1 << 61)
            unit = _UNIT[name]
            if unit == "COUNT":
                append(float(counts[name] if name in counts else hv % (handled + 1)))
            elif name == catalog.SERVICE_LEVEL:
                append(None if queued == 0 else
                       round(100.0 * handled / queued * (1.0 - math.exp(-float(thr or 0) / wait)), 2))
            elif name == "ABANDON_TIME":
                append(None if abandoned == 0 else round(wait * 1.5, 3))
            elif handled == 0:
                append(None)
            elif name in times:
                append(times[name] / 1000.0)
            elif unit == "PERCENT":
                append(round((hv % 10_001) / 100.0, 2))
            else:
                append(round((hv % 600_000) / 1000.0, 3))
        return out

    def group_values(
        self,
        inst: Instance,
        start: int,
        end: int,
        key: tuple[str, ...],
        metrics: Iterable[tuple[str, float | None]],
        provisional: bool = False,
    ) -> list[tuple[str, float | None, float | None]] | None:
        """(name, threshold, value) per metric, or None when the group had no contacts.

        ``provisional``: asked soon after the slice ended, before late contacts landed
        (counts are lower than they will be)."""
        state = self.group_state(inst, start, end, key)
        if state is None:
            return None
        metrics = list(metrics)
        vals = self.values_of(state, metrics, provisional)
        return [(n, t, v) for (n, t), v in zip(metrics, vals, strict=True)]
