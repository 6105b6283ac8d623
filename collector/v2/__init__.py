"""GetMetricDataV2: catalog, profile settings, planner, decoder and slice splitting.

Pure core modules (no I/O); the adapters meet them in ``collector.adapters``.
"""
