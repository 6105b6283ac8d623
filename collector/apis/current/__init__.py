"""The real-time APIs: GetCurrentMetricData (queue gauges) and GetCurrentUserData (each
agent's state), as the third implementation of the metric API port."""
