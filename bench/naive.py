"""The naive peer the bench compares against: what teams glue together today.

Sequential boto3 paginators (one account after another, the SDK's own retries)
and psycopg ``executemany`` of one row per value into a plain table.
"""

from __future__ import annotations

import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import boto3
import psycopg
from botocore.config import Config

from collector.apis.v1.planner import metric_chunks
from collector.config import Settings

TABLE = """
CREATE TABLE IF NOT EXISTS naive_metrics (
    instance_id text, interval_start timestamptz, interval_end timestamptz,
    queue_id text, channel text, metric_name text, statistic text, unit text,
    threshold_value double precision, value double precision, collected_at timestamptz DEFAULT now()
)"""


def main(config: str, dsn: str, start: str, end: str) -> int:
    settings = Settings(**tomllib.loads(Path(config).read_text()))
    t0, t1 = datetime.fromisoformat(start), datetime.fromisoformat(end)
    g = settings.collection.granularity_seconds
    metrics = [m.to_api() for chunk in metric_chunks(settings.collection.metric_names(), settings.collection.service_levels) for m in chunk]
    values = 0
    with psycopg.connect(dsn, autocommit=False) as db:
        db.execute(TABLE)
        for inst in settings.instances:  # one account after another
            client = boto3.client("connect", region_name=inst.region,
                                  config=Config(retries={"mode": "standard", "max_attempts": 10}))
            queues = [q["Id"] for p in client.get_paginator("list_queues").paginate(
                InstanceId=inst.id, QueueTypes=["STANDARD"]) for q in p["QueueSummaryList"]]
            t = int(t0.timestamp())
            while t < int(t1.timestamp()):
                s, e = datetime.fromtimestamp(t, UTC), datetime.fromtimestamp(t + g, UTC)
                rows = []
                for page in client.get_paginator("get_metric_data").paginate(
                    InstanceId=inst.id, StartTime=s, EndTime=e,
                    Filters={"Queues": queues, "Channels": settings.collection.channels},
                    Groupings=settings.collection.groupings, HistoricalMetrics=metrics,
                ):
                    for r in page["MetricResults"]:
                        d = r.get("Dimensions", {})
                        for c in r["Collections"]:
                            m = c["Metric"]
                            rows.append((inst.id, s, e, d.get("Queue", {}).get("Id"), d.get("Channel"),
                                         m["Name"], m["Statistic"], m["Unit"],
                                         m.get("Threshold", {}).get("ThresholdValue"), c.get("Value")))
                with db.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO naive_metrics (instance_id, interval_start, interval_end, queue_id,"
                        " channel, metric_name, statistic, unit, threshold_value, value)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
                db.commit()
                values += len(rows)
                t += g
    print(f"values={values}", flush=True)
    return 0


if __name__ == "__main__":
    time.sleep(0)
    raise SystemExit(main(*sys.argv[1:5]))
