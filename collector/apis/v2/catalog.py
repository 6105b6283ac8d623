"""What GetMetricDataV2 accepts: the contact-center metrics, their units, valid
groupings and filters, metric-level filter keys and thresholds, and the limits.

Taken from the SDK reference (``get_metric_data_v2.txt``). Scope: the metrics
whose valid groupings include queue, routing profile, agent or agent hierarchy.
Bot, AI-agent, case, campaign, evaluation and flow metrics are refused by name
(:func:`refusal`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Final

QUEUE: Final = "QUEUE"
CHANNEL: Final = "CHANNEL"
ROUTING_PROFILE: Final = "ROUTING_PROFILE"
AGENT: Final = "AGENT"
SUBTYPE: Final = "contact/segmentAttributes/connect:Subtype"
VALIDATION_TEST_TYPE: Final = "contact/segmentAttributes/connect:ValidationTestType"
ROUTING_STEP_EXPRESSION: Final = "ROUTING_STEP_EXPRESSION"
Q_CONNECT_ENABLED: Final = "Q_CONNECT_ENABLED"
FEATURE: Final = "FEATURE"
DISCONNECT_REASON: Final = "DISCONNECT_REASON"
INITIATION_METHOD: Final = "INITIATION_METHOD"
AI_USE_CASE: Final = "AI_USE_CASE"
HIERARCHY_LEVELS: Final = (
    "AGENT_HIERARCHY_LEVEL_ONE",
    "AGENT_HIERARCHY_LEVEL_TWO",
    "AGENT_HIERARCHY_LEVEL_THREE",
    "AGENT_HIERARCHY_LEVEL_FOUR",
    "AGENT_HIERARCHY_LEVEL_FIVE",
)

# The reference's human grouping names, coded one letter each in the table below.
_CODES: Final[dict[str, tuple[str, ...]]] = {
    "Q": (QUEUE,),
    "C": (CHANNEL,),
    "R": (ROUTING_PROFILE,),
    "A": (AGENT,),
    "H": HIERARCHY_LEVELS,
    "F": (FEATURE,),  # FEATURE is a valid filter, never a grouping
    "S": (SUBTYPE,),
    "K": (Q_CONNECT_ENABLED,),
    "E": (ROUTING_STEP_EXPRESSION,),
    "D": (DISCONNECT_REASON,),
    "I": (INITIATION_METHOD,),
    "U": (AI_USE_CASE,),
}
# Filter keys that authorize a request: at least one must be present (CAMPAIGN,
# EVALUATION_FORM and EVALUATOR_ID also authorize, but their metrics are out of scope).
RESOURCE_FILTER_KEYS: Final = frozenset({QUEUE, ROUTING_PROFILE, AGENT, *HIERARCHY_LEVELS})
# Filter values that do not count towards the 100-value limit.
UNCOUNTED_FILTER_KEYS: Final = frozenset({CHANNEL})
CHANNELS: Final = ("VOICE", "CHAT", "TASK", "EMAIL")
NOT_GROUPINGS: Final = frozenset({FEATURE})

INTERVALS: Final[dict[str, str]] = {
    "15m": "FIFTEEN_MIN",
    "30m": "THIRTY_MIN",
    "1h": "HOUR",
    "1d": "DAY",
    "1w": "WEEK",
}
INTERVAL_SECONDS: Final[dict[str, int]] = {"FIFTEEN_MIN": 900, "THIRTY_MIN": 1800, "HOUR": 3600}
# The range of one request must be strictly less than this.
MAX_RANGE_SECONDS: Final[dict[str, int]] = {
    "FIFTEEN_MIN": 3 * 86400,
    "THIRTY_MIN": 3 * 86400,
    "HOUR": 3 * 86400,
    "DAY": 35 * 86400,
    "WEEK": 35 * 86400,
    "TOTAL": 35 * 86400,
}
LOOKBACK_SECONDS: Final = 90 * 86400  # "3 months": take 90 days
MAX_FILTER_KEYS: Final = 5
MAX_FILTER_VALUES: Final = 100
MAX_GROUPINGS: Final = 4
MAX_THRESHOLDS: Final = 1
MAX_METRIC_FILTERS: Final = 2
MAX_METRIC_FILTER_VALUES: Final = 10
MAX_SERVICE_LEVELS_PER_REQUEST: Final = 20
MAX_RESULTS_MAX: Final = 100
NEXT_TOKEN_MAX: Final = 2500
THRESHOLD_MIN: Final = 1
THRESHOLD_MAX: Final = 604_800
METRIC_FILTER_KEYS: Final = frozenset(
    {
        "ANSWERING_MACHINE_DETECTION_STATUS", "CASE_STATUS", "DISCONNECT_REASON",
        "FLOWS_ACTION_IDENTIFIER", "FLOWS_NEXT_ACTION_IDENTIFIER", "FLOWS_OUTCOME_TYPE",
        "FLOWS_RESOURCE_TYPE", "INITIATION_METHOD",
    }
)
SERVICE_LEVEL: Final = "SERVICE_LEVEL"


@dataclass(frozen=True, slots=True)
class MetricSpecV2:
    name: str
    unit: str  # COUNT | SECONDS | PERCENT
    groupings: frozenset[str]  # valid Groupings
    filters: frozenset[str]  # valid Filters keys
    metric_filter_keys: tuple[str, ...] = ()
    thresholds: tuple[str, ...] = ()  # comparisons it takes; empty: takes no threshold
    negate: bool = True  # whether metric filters may set Negate

    @property
    def takes_threshold(self) -> bool:
        return bool(self.thresholds)


def _m(
    name: str, unit: str, codes: str, mf: tuple[str, ...] = (), thr: tuple[str, ...] = (),
    negate: bool = True,
) -> MetricSpecV2:
    keys = {k for c in codes for k in _CODES[c]}
    return MetricSpecV2(
        name, unit, frozenset(keys - NOT_GROUPINGS), frozenset(keys), mf, thr, negate
    )


# Generated from the reference, one line per metric: name, unit, codes of the valid
# groupings and filters (see _CODES), metric-filter keys, threshold comparisons.
_TABLE: Final = (
    _m('ABANDONMENT_RATE', 'PERCENT', 'ACFHKQRS'),
    _m('AGENT_ADHERENT_TIME', 'SECONDS', 'ACHQR'),
    _m('AGENT_ANSWER_RATE', 'PERCENT', 'ACHQR'),
    _m('AGENT_NON_ADHERENT_TIME', 'SECONDS', 'ACHQR'),
    _m('AGENT_NON_RESPONSE', 'COUNT', 'ACHQR'),
    _m('AGENT_NON_RESPONSE_WITHOUT_CUSTOMER_ABANDONS', 'COUNT', 'ACHQR'),
    _m('AGENT_OCCUPANCY', 'PERCENT', 'AHR'),
    _m('AGENT_SCHEDULED_TIME', 'SECONDS', 'ACHQR'),
    _m('AGENT_SCHEDULE_ADHERENCE', 'PERCENT', 'ACHQR'),
    _m('AVG_ABANDON_TIME', 'SECONDS', 'ACFHKQRS', mf=('INITIATION_METHOD',)),
    _m('AVG_ACTIVE_TIME', 'SECONDS', 'ACHKQR'),
    _m('AVG_AFTER_CONTACT_WORK_TIME', 'SECONDS', 'ACFHKQRS', mf=('INITIATION_METHOD',)),
    _m('AVG_AGENT_CONCURRENCY', 'COUNT', 'ACHKQR'),
    _m('AVG_AGENT_CONNECTING_TIME', 'SECONDS', 'ACHQR', mf=('INITIATION_METHOD',), negate=False),
    _m('AVG_AGENT_PAUSE_TIME', 'SECONDS', 'ACHKQR'),
    _m('AVG_CONTACT_DURATION', 'SECONDS', 'ACFHKQRS'),
    _m('AVG_CONTACT_FIRST_RESPONSE_TIME_AGENT', 'SECONDS', 'ACDEFHIKQRS'),
    _m('AVG_CONVERSATION_CLOSE_TIME', 'SECONDS', 'ACDEFHIKQRS'),
    _m('AVG_CONVERSATION_DURATION', 'SECONDS', 'ACFHKQRS'),
    _m('AVG_FIRST_RESPONSE_TIME_AGENT', 'SECONDS', 'ACDEFHIKQRS'),
    _m('AVG_GREETING_TIME_AGENT', 'SECONDS', 'ACHKQRS'),
    _m('AVG_HANDLE_TIME', 'SECONDS', 'ACEFHQRSU'),
    _m('AVG_HOLDS', 'COUNT', 'ACFHKQRS'),
    _m('AVG_HOLD_TIME', 'SECONDS', 'ACFHKQRS'),
    _m('AVG_HOLD_TIME_ALL_CONTACTS', 'SECONDS', 'ACHKQRS'),
    _m('AVG_INTERACTION_AND_HOLD_TIME', 'SECONDS', 'ACHKQRS'),
    _m('AVG_INTERACTION_TIME', 'SECONDS', 'CFKQRS', mf=('INITIATION_METHOD',)),
    _m('AVG_INTERRUPTIONS_AGENT', 'COUNT', 'ACHKQRS'),
    _m('AVG_INTERRUPTION_TIME_AGENT', 'SECONDS', 'ACHKQRS'),
    _m('AVG_MESSAGES', 'COUNT', 'ACDEFHIKQRS'),
    _m('AVG_MESSAGES_AGENT', 'COUNT', 'ACDEFHIKQRS'),
    _m('AVG_MESSAGES_BOT', 'COUNT', 'ACDEFHIKQRS'),
    _m('AVG_MESSAGES_CUSTOMER', 'COUNT', 'ACDEFHIKQRS'),
    _m('AVG_MESSAGE_LENGTH_AGENT', 'COUNT', 'ACDEFHIKQRS'),
    _m('AVG_MESSAGE_LENGTH_CUSTOMER', 'COUNT', 'ACDEFHIKQRS'),
    _m('AVG_NON_TALK_TIME', 'SECONDS', 'ACHKQRS'),
    _m('AVG_QUEUE_ANSWER_TIME', 'SECONDS', 'CFKQRS', mf=('INITIATION_METHOD', 'FEATURE', 'DISCONNECT_REASON')),
    _m('AVG_QUEUE_ANSWER_TIME_CUSTOMER_FIRST_CALLBACK', 'SECONDS', 'ACFHKQRS'),
    _m('AVG_RESOLUTION_TIME', 'SECONDS', 'CKQRS'),
    _m('AVG_RESPONSE_TIME_AGENT', 'SECONDS', 'ACDEFHIKQRS'),
    _m('AVG_RESPONSE_TIME_CUSTOMER', 'SECONDS', 'ACDEFHIKQRS'),
    _m('AVG_TALK_TIME', 'SECONDS', 'ACHKQRS'),
    _m('AVG_TALK_TIME_AGENT', 'SECONDS', 'ACHKQRS'),
    _m('AVG_TALK_TIME_CUSTOMER', 'SECONDS', 'ACHKQRS'),
    _m('AVG_WAIT_TIME_AFTER_CUSTOMER_FIRST_CALLBACK_CONNECTION', 'SECONDS', 'ACFHKQRS'),
    _m('CONTACTS_CREATED', 'COUNT', 'CFKQRS', mf=('INITIATION_METHOD',)),
    _m('CONTACTS_HANDLED', 'COUNT', 'ACEFHKQRS', mf=('INITIATION_METHOD', 'DISCONNECT_REASON')),
    _m('CONTACTS_HANDLED_BY_CONNECTED_TO_AGENT', 'COUNT', 'ACHKQS', mf=('INITIATION_METHOD',)),
    _m('CONTACTS_HOLD_ABANDONS', 'COUNT', 'ACHKQRS'),
    _m('CONTACTS_ON_HOLD_AGENT_DISCONNECT', 'COUNT', 'ACHKQR'),
    _m('CONTACTS_ON_HOLD_CUSTOMER_DISCONNECT', 'COUNT', 'ACHKQR'),
    _m('CONTACTS_PUT_ON_HOLD', 'COUNT', 'ACHKQR'),
    _m('CONTACTS_QUEUED', 'COUNT', 'ACHKQRS'),
    _m('CONTACTS_QUEUED_BY_ENQUEUE', 'COUNT', 'ACHQS'),
    _m('CONTACTS_REMOVED_FROM_QUEUE_IN_X', 'COUNT', 'CKQR', thr=('LT', 'LTE')),
    _m('CONTACTS_RESOLVED_IN_X', 'COUNT', 'CKQRS', thr=('LT', 'LTE')),
    _m('CONTACTS_TRANSFERRED_OUT', 'COUNT', 'ACFHKQRS'),
    _m('CONTACTS_TRANSFERRED_OUT_BY_AGENT', 'COUNT', 'ACHKQRS'),
    _m('CONTACTS_TRANSFERRED_OUT_EXTERNAL', 'COUNT', 'ACHKQR'),
    _m('CONTACTS_TRANSFERRED_OUT_FROM_QUEUE', 'COUNT', 'ACHKQRS'),
    _m('CONTACTS_TRANSFERRED_OUT_INTERNAL', 'PERCENT', 'ACHKQR'),
    _m('CONVERSATIONS_ABANDONED', 'COUNT', 'ACDEFHIKQRS'),
    _m('MAX_QUEUED_TIME', 'SECONDS', 'ACHKQRS'),
    _m('PERCENT_CONTACTS_STEP_EXPIRED', 'PERCENT', 'EQ'),
    _m('PERCENT_CONTACTS_STEP_JOINED', 'PERCENT', 'EQ'),
    _m('PERCENT_NON_TALK_TIME', 'PERCENT', 'ACHKQRS'),
    _m('PERCENT_TALK_TIME', 'PERCENT', 'ACHKQRS'),
    _m('PERCENT_TALK_TIME_AGENT', 'PERCENT', 'ACHKQRS'),
    _m('PERCENT_TALK_TIME_CUSTOMER', 'PERCENT', 'ACHKQRS'),
    _m('SERVICE_LEVEL', 'PERCENT', 'CKQR', thr=('LT', 'LTE')),
    _m('STEP_CONTACTS_QUEUED', 'COUNT', 'EQ'),
    _m('SUM_AFTER_CONTACT_WORK_TIME', 'SECONDS', 'ACHKQR'),
    _m('SUM_CONNECTING_TIME_AGENT', 'SECONDS', 'ACHQR', mf=('INITIATION_METHOD',), negate=False),
    _m('SUM_CONTACTS_ABANDONED_IN_X', 'COUNT', 'CKQRS', thr=('LT', 'LTE')),
    _m('SUM_CONTACTS_ANSWERED_IN_X', 'COUNT', 'CKQRS', thr=('LT', 'LTE')),
    _m('SUM_CONTACTS_DISCONNECTED', 'COUNT', 'ACHKQRS', mf=('DISCONNECT_REASON',)),
    _m('SUM_CONTACT_FLOW_TIME', 'SECONDS', 'ACHKQR'),
    _m('SUM_CONTACT_TIME_AGENT', 'SECONDS', 'AHR'),
    _m('SUM_ERROR_STATUS_TIME_AGENT', 'SECONDS', 'AHR'),
    _m('SUM_HANDLE_TIME', 'SECONDS', 'ACHKQR'),
    _m('SUM_HOLD_TIME', 'COUNT', 'ACHKQR'),
    _m('SUM_IDLE_TIME_AGENT', 'SECONDS', 'AHR'),
    _m('SUM_INTERACTION_AND_HOLD_TIME', 'SECONDS', 'ACHKQR'),
    _m('SUM_INTERACTION_TIME', 'SECONDS', 'ACHQR'),
    _m('SUM_NON_PRODUCTIVE_TIME_AGENT', 'SECONDS', 'AHR'),
    _m('SUM_ONLINE_TIME_AGENT', 'SECONDS', 'AHR'),
    _m('SUM_RETRY_CALLBACK_ATTEMPTS', 'COUNT', 'CKQRS'),
    # CONTACTS_ABANDONED: "Metric filter: valid values API | INCOMING | OUTBOUND | TRANSFER |
    # CALLBACK | QUEUE_TRANSFER | Disconnect | CALLBACK_CUSTOMER_FIRST_DIALED" (initiation methods)
    _m('CONTACTS_ABANDONED', 'COUNT', 'ACHKQRSE', mf=('INITIATION_METHOD',)),
)
METRICS: Final[dict[str, MetricSpecV2]] = {m.name: m for m in sorted(_TABLE, key=lambda m: m.name)}

# Families out of scope for now, by name.
_REFUSED: Final[dict[str, tuple[str, ...]]] = {
    "a bot metric": ("AVG_BOT_", "BOT_", "PERCENT_BOT_"),
    "a flow metric": ("AVG_FLOW_TIME", "FLOWS_", "MAX_FLOW_TIME", "MIN_FLOW_TIME", "PERCENT_FLOWS_"),
    "a case metric": (
        "AVG_CASE_", "CASES_", "CURRENT_CASES", "PERCENT_CASES_", "REOPENED_CASE_", "RESOLVED_CASE_",
    ),
    "a campaign metric": (
        "CAMPAIGN_", "RECIPIENTS_", "AVG_WAIT_TIME_AFTER_CUSTOMER_CONNECTION", "AVG_DIALS_PER_MINUTE",
        "DELIVERY_ATTEMPT", "HUMAN_ANSWERED_CALLS",
    ),
    "an evaluation metric": (
        "AVG_EVALUATION_SCORE", "AVG_WEIGHTED_EVALUATION_SCORE", "EVALUATIONS_PERFORMED",
        "PERCENT_AUTOMATIC_FAILS",
    ),
    "an AI-agent metric": (
        "ACTIVE_AI_AGENTS", "AI_", "AVG_AI_", "COMPLETENESS_SCORE", "CONTEXT_FIDELITY_SCORE",
        "FAITHFULNESS_SCORE", "GOAL_SUCCESS_RATE", "KNOWLEDGE_CONTENT_REFERENCES", "PROACTIVE_INTENT",
    ),
}


def refusal(name: str) -> str:
    """Why ``name`` cannot be collected (the message for a config error)."""
    for family, prefixes in _REFUSED.items():
        if any(name.startswith(p) for p in prefixes):
            return (
                f"{name} is {family}; the collector does not collect those yet "
                "(only contact-center metrics grouped by queue, routing profile, agent or hierarchy)"
            )
    if name in V1_TO_V2:
        hint = V1_TO_V2[name]
        if hint.name is None:
            return f"{name} is a GetMetricData (v1) metric with no V2 equivalent: {hint.note}"
        extra = f" with metric_filters {list(hint.metric_filters)}" if hint.metric_filters else ""
        return f"{name} is a GetMetricData (v1) name; in GetMetricDataV2 use {hint.name}{extra}"
    close = difflib.get_close_matches(name.upper(), list(METRICS), n=3, cutoff=0.75)
    return f"unknown GetMetricDataV2 metric {name!r}" + (f"; did you mean {' or '.join(close)}?" if close else "")


def spec(name: str) -> MetricSpecV2:
    """The metric's spec, or ``ValueError`` with :func:`refusal`'s message."""
    s = METRICS.get(name)
    if s is None:
        raise ValueError(refusal(name))
    return s


@dataclass(frozen=True, slots=True)
class V2Equivalent:
    name: str | None
    metric_filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    threshold: str | None = None  # comparison, for SERVICE_LEVEL
    note: str = ""


def _eq(name: str | None, *filters: tuple[str, tuple[str, ...]], threshold: str | None = None,
        note: str = "") -> V2Equivalent:
    return V2Equivalent(name, tuple(filters), threshold, note)


# v1 (GetMetricData) name -> its GetMetricDataV2 equivalent, for people moving reports.
V1_TO_V2: Final[dict[str, V2Equivalent]] = {
    "ABANDON_TIME": _eq("AVG_ABANDON_TIME"),
    "AFTER_CONTACT_WORK_TIME": _eq("AVG_AFTER_CONTACT_WORK_TIME"),
    "API_CONTACTS_HANDLED": _eq("CONTACTS_HANDLED", (INITIATION_METHOD, ("API",))),
    "CALLBACK_CONTACTS_HANDLED": _eq("CONTACTS_HANDLED", (INITIATION_METHOD, ("CALLBACK",))),
    "CONTACTS_ABANDONED": _eq("CONTACTS_ABANDONED"),
    "CONTACTS_AGENT_HUNG_UP_FIRST": _eq("CONTACTS_HANDLED", (DISCONNECT_REASON, ("AGENT_DISCONNECT",))),
    "CONTACTS_CONSULTED": _eq(None, note="the reference lists no V2 metric or metric filter for consults"),
    "CONTACTS_HANDLED": _eq("CONTACTS_HANDLED"),
    "CONTACTS_HANDLED_INCOMING": _eq("CONTACTS_HANDLED", (INITIATION_METHOD, ("INBOUND",))),
    "CONTACTS_HANDLED_OUTBOUND": _eq("CONTACTS_HANDLED", (INITIATION_METHOD, ("OUTBOUND",))),
    "CONTACTS_HOLD_ABANDONS": _eq("CONTACTS_HOLD_ABANDONS"),
    "CONTACTS_MISSED": _eq("AGENT_NON_RESPONSE"),
    "CONTACTS_QUEUED": _eq("CONTACTS_QUEUED"),
    "CONTACTS_TRANSFERRED_IN": _eq("CONTACTS_HANDLED", (INITIATION_METHOD, ("TRANSFER",))),
    "CONTACTS_TRANSFERRED_IN_FROM_QUEUE": _eq("CONTACTS_HANDLED", (INITIATION_METHOD, ("QUEUE_TRANSFER",))),
    "CONTACTS_TRANSFERRED_OUT": _eq("CONTACTS_TRANSFERRED_OUT"),
    "CONTACTS_TRANSFERRED_OUT_FROM_QUEUE": _eq("CONTACTS_TRANSFERRED_OUT_FROM_QUEUE"),
    "HANDLE_TIME": _eq("AVG_HANDLE_TIME"),
    "HOLD_TIME": _eq("AVG_HOLD_TIME"),
    "INTERACTION_AND_HOLD_TIME": _eq("AVG_INTERACTION_AND_HOLD_TIME"),
    "INTERACTION_TIME": _eq("AVG_INTERACTION_TIME"),
    "OCCUPANCY": _eq("AGENT_OCCUPANCY"),
    "QUEUE_ANSWER_TIME": _eq("AVG_QUEUE_ANSWER_TIME"),
    "QUEUED_TIME": _eq("MAX_QUEUED_TIME"),
    "SERVICE_LEVEL": _eq("SERVICE_LEVEL", threshold="LT"),
}

# Dimensions map key (as grouped) -> shared column of historical_metrics.
DIMENSION_COLUMNS: Final[dict[str, str]] = {
    QUEUE: "queue_id",
    CHANNEL: "channel",
    ROUTING_PROFILE: "routing_profile_id",
    ROUTING_STEP_EXPRESSION: "routing_step_expression",
    SUBTYPE: "subtype",
    VALIDATION_TEST_TYPE: "validation_test_type",
    AGENT: "agent_id",
}
