"""Schema-driven run over the OpenAPI spec: no input makes the API answer 5xx.

The app runs with in-memory fakes of its store (the same callables the service
wires to Postgres) and the real request validation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from collector.config import Settings
from collector.http_api import CollectionRequest, create_app
from collector.runs import check_collection
from collector.wiring import metric_apis

SETTINGS = Settings.model_validate({"instances": [{"id": "i-1", "region": "us-east-1"}]})
RUNS: dict[int, dict[str, Any]] = {}


def _validate(body: CollectionRequest) -> None:
    check_collection(SETTINGS, metric_apis(SETTINGS), body.start, body.end, body.instances or (), datetime.now(UTC), body.profile)


async def _submit(body: CollectionRequest) -> int:
    run_id = len(RUNS) + 1
    now = datetime.now(UTC)
    RUNS[run_id] = {
        "id": run_id, "requested_by": "api", "profile": body.profile, "range_start": body.start,
        "range_end": body.end, "instances": body.instances or [], "status": "queued", "slices_total": 0,
        "slices_done": 0, "slices_failed": 0, "rows_written": 0, "values_written": 0, "requests": 0,
        "retries": 0, "throttles": 0, "errors": [], "created_at": now, "started_at": None,
        "finished_at": None, "resumed_from": None,
    }
    return run_id


async def _get_run(run_id: int) -> dict[str, Any] | None:
    return RUNS.get(run_id)


async def _list_runs(status: str | None, before: int | None, limit: int) -> list[dict[str, Any]]:
    rows = [r for i, r in sorted(RUNS.items(), reverse=True) if (status is None or r["status"] == status)
            and (before is None or i < before)]
    return rows[:limit]


async def _ready() -> None:
    return None


app = create_app(token="fuzz-token", validate=_validate, submit=_submit, get_run=_get_run,
                 list_runs=_list_runs, ready=_ready)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail(case: Any) -> None:
    headers = {"Authorization": "Bearer fuzz-token"} if case.method == "POST" else None
    case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])
