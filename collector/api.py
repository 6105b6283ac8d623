"""The HTTP API (FastAPI), served by uvicorn in the scheduler's event loop."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from collector import errors
from collector.logs import redact

RunStatus = Literal["queued", "running", "succeeded", "partial", "failed", "interrupted"]


class CollectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: datetime = Field(description="range start, ISO 8601 with an offset, on a slice boundary")
    end: datetime = Field(description="range end (exclusive)")
    instances: list[str] | None = Field(default=None, description="instance IDs; default all configured")
    profile: str = Field(default="default", min_length=1, max_length=100)


class Accepted(BaseModel):
    id: int
    status: RunStatus
    url: str


class Run(BaseModel):
    id: int
    requested_by: str
    profile: str
    range_start: datetime | None
    range_end: datetime | None
    instances: list[str]
    status: RunStatus
    slices_total: int
    slices_done: int
    slices_failed: int
    rows_written: int
    values_written: int
    requests: int
    retries: int
    throttles: int
    errors: list[dict[str, Any]]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    resumed_from: int | None = None


class RunPage(BaseModel):
    items: list[Run]
    next_before: int | None = Field(description="pass as ?before= for the next page")


def _unprocessable(field: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content={"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]},
    )


def create_app(
    *,
    token: str | None,
    validate: Callable[[CollectionRequest], None],
    submit: Callable[[CollectionRequest], Awaitable[int]],
    get_run: Callable[[int], Awaitable[dict[str, Any] | None]],
    list_runs: Callable[[str | None, int | None, int], Awaitable[list[dict[str, Any]]]],
    ready: Callable[[], Awaitable[None]],
    cluster: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="connect-collector",
        description="Amazon Connect historical metrics into PostgreSQL.",
        version="1",
    )

    def require_token(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.post("/collections", status_code=202, response_model=Accepted,
              dependencies=[Depends(require_token)],
              responses={401: {"description": "missing or wrong token"}, 422: {"description": "invalid body"}})
    async def post_collection(body: CollectionRequest) -> Any:
        try:
            validate(body)
        except errors.BadInput as e:
            return _unprocessable(e.field, str(e))
        run_id = await submit(body)
        return Accepted(id=run_id, status="queued", url=f"/collections/{run_id}")

    @app.get("/collections/{run_id}", response_model=Run, responses={404: {"description": "no such run"}})
    async def get_collection(run_id: int) -> Any:
        if not 0 < run_id < 2**63:
            raise HTTPException(status_code=404, detail="no such run")
        row = await get_run(run_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such run")
        return _public(row)

    @app.get("/collections", response_model=RunPage)
    async def list_collections(
        status: RunStatus | None = None,
        before: int | None = Query(default=None, gt=0, lt=2**63),
        limit: int = Query(default=50, ge=1, le=500),
    ) -> Any:
        rows = await list_runs(status, before, limit)
        nxt = rows[-1]["id"] if len(rows) == limit else None
        return RunPage(items=[Run(**_public(r)) for r in rows], next_before=nxt)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "database unreachable or schema not current"}})
    async def readyz() -> Any:
        try:
            await ready()
        except errors.CollectorError as e:  # the store reports any failure as StorageError
            return JSONResponse(status_code=503, content={"status": "unavailable", "reason": redact(str(e))})
        return {"status": "ready"}

    @app.get("/cluster")
    async def get_cluster() -> Any:
        """Replicas, the shards each holds, lease ages; unowned shards."""
        if cluster is None:
            return {"replicas": [], "unowned_shards": []}
        return await cluster()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["errors"] = [{k: redact(v) for k, v in e.items()} for e in (out.get("errors") or [])]
    return out
