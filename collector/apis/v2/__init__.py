"""GetMetricDataV2: catalog, profile settings, planner, decoder and slice splitting.

Pure core modules (no I/O); the adapters meet them in ``collector.adapters``
(``connect.BotocoreConnect`` V2 methods, ``postgres_v2.PgStoreV2``).

How a V2 collection runs (``work.WindowUnit`` as a pipeline fetch unit, ``runs``,
``schedule`` and ``fleet`` drive these steps in the service, the CLI and the API):

1. ``Settings.v2_profiles()`` -> :class:`collector.apis.v2.settings.V2ProfileSettings`.
2. per instance, ``collect.discover(source, target, keys)`` for the ``"all"`` filters
   (ListQueues, SearchUsers, ListRoutingProfiles, ListUserHierarchyGroups), stored with
   ``PgStoreV2.save_agents / save_routing_profiles / save_hierarchy_groups``.
3. ``planner.plan(targets, profile, start, end, now, {instance: discovered.filter_values()},
   lookback_margin)`` -> windows; bounds from ``planner.oldest_start`` / ``newest_end``.
4. per window: ``planner.check_request`` then ``source.get_metric_data_v2`` page by page
   (one limiter per (account, Region) for ``GetMetricDataV2``), then
   ``assemble.split_window`` -> one ``CompletedSliceV2`` per slice
   (``collect.collect_window`` is the sequential reference of step 4).
5. ``PgStoreV2.write(slices, run_id)``: all slices of a window in one transaction.
"""
