"""GetMetricDataV2: per-agent and per-hierarchy metrics, intervals from 15 minutes to a
week in a time zone, 90 days of history: an implementation of the metric API port
(:class:`collector.apis.v2.api.V2Api`).

- ``catalog``: the metrics, their groupings, filters, thresholds, and the limits;
- ``settings``: ``[[profiles]] api = "v2"`` (:class:`V2ProfileSettings`);
- ``planner``: the calendar in the profile's time zone, request building, every limit;
- ``unit``: a window of consecutive slices fetched by the same requests (a fetch unit);
- ``decode`` and ``assemble``: a page's results, split by ``MetricInterval`` into slices;
- ``codec``: how its metric sets and dimension groups are keyed in the store.
"""
