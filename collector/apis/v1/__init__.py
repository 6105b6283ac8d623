"""GetMetricData (v1): 24 hours of history at a granularity of 5-minute multiples, queue
and routing-profile grain: an implementation of the metric API port
(:class:`collector.apis.v1.api.V1Api`).

- ``catalog``: the metrics, units, statistics, filters, groupings and limits;
- ``settings``: ``[collection]`` and v1 ``[[profiles]]`` (:class:`CollectionSettings`);
- ``planner``: slices, metric lists, every limit of a request;
- ``unit``: a slice as a fetch unit (:class:`SliceWork`) and its storage codec;
- ``decode``: response bodies -> rows (botocore's shape, and the msgspec fast path).
"""
