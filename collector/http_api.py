"""The HTTP API (FastAPI), served by uvicorn in the scheduler's event loop."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal

import anyio
import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from collector import errors
from collector.logs import redact
from collector.validation import in_utc, instance_id_problem

MAX_BODY = 64 * 1024  # bytes; a collection request is a few hundred
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RunStatus = Literal["queued", "running", "succeeded", "partial", "failed", "interrupted"]


class CollectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: datetime = Field(description="range start, ISO 8601 with an offset, on a slice boundary")
    end: datetime = Field(description="range end (exclusive)")
    instances: list[str] | None = Field(default=None, description="instance IDs; default all configured")
    profile: str = Field(default="default", min_length=1, max_length=100)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime, info: ValidationInfo) -> datetime:
        return in_utc(v, info.field_name or "time")

    @field_validator("instances")
    @classmethod
    def _ids(cls, v: list[str] | None) -> list[str] | None:
        for iid in v or ():
            if (why := instance_id_problem(iid)) is not None:
                raise ValueError(why)
        return v


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
    owner: str | None = None


class RunPage(BaseModel):
    items: list[Run]
    next_before: int | None = Field(description="pass as ?before= for the next page")


def _unprocessable(field: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content={"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]},
    )


class RequestGuard:
    """ASGI middleware in front of the routes: the token of a write is checked from the
    headers before a byte of its body is read, and a body over ``max_body`` is refused
    with 413 as soon as it is announced (Content-Length) or has grown past the limit
    (chunked), never read whole. Refusals close the connection."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if self.token is not None and scope["method"] not in _SAFE_METHODS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _refuse(send, 401, "a valid bearer token is required", {"www-authenticate": "Bearer"})
                return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _refuse(send, 400, "Content-Length is not a number")
                return
            if int(length) > self.max_body:
                await _refuse(send, 413, f"the body is larger than {self.max_body} bytes")
                return
            if int(length) == 0:
                await self.app(scope, receive, send)
                return
        elif "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _refuse(send, 413, f"the body is larger than {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # only a disconnect can come now
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
    payload = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               (b"connection", b"close")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def _answer_validation_errors(app: FastAPI) -> None:
    """Answer a request that fails validation with 422 and, for each error, only its
    location, message and type (not the input it was given)."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail})


# Swagger UI (npm swagger-ui-dist, see static/swagger-ui/VERSION) ships inside the package,
# so /docs works without reaching any other host.
_ASSETS = resources.files("collector") / "static" / "swagger-ui"
_ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                "favicon-32x32.png": "image/png"}


def _serve_docs(app: FastAPI) -> None:
    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - Swagger UI",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js", swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        )

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        media = _ASSET_TYPES.get(name)
        if media is None:
            raise HTTPException(status_code=404, detail="no such asset")
        return Response((_ASSETS / name).read_bytes(), media_type=media,
                        headers={"cache-control": "public, max-age=86400"})


# The live wallboard: one page and its script and style, shipped in the package.
_WALLBOARD = resources.files("collector") / "static" / "wallboard"
_WALLBOARD_TYPES = {"wallboard.js": "text/javascript", "wallboard.css": "text/css"}
LIVE_POLL = 1.0  # seconds between two looks at live_changed_at, shared by every open wallboard
SSE_KEEPALIVE = 15.0  # seconds of silence after which a stream sends a comment line


class LiveFeed:
    """What every wallboard stream and ``/wallboard/data`` read: at most one look at
    ``changed_at`` per ``poll`` seconds whatever the number of open pages, and one
    ``wallboard()`` read per change. ``latest()`` returns (event id, JSON, error)."""

    def __init__(self, wallboard: Callable[[], Awaitable[dict[str, Any]]],
                 changed_at: Callable[[], Awaitable[datetime | None]], poll: float = LIVE_POLL) -> None:
        self.wallboard = wallboard
        self.changed_at = changed_at
        self.poll = poll
        self._lock = anyio.Lock()
        self._looked = -float("inf")
        self._stamp: datetime | None = None
        self._id: str | None = None
        self._payload: bytes | None = None
        self._error: str | None = None

    async def latest(self) -> tuple[str | None, bytes | None, str | None]:
        async with self._lock:
            if time.monotonic() - self._looked >= self.poll:
                await self._refresh()
            return self._id, self._payload, self._error

    async def _refresh(self) -> None:
        try:
            stamp = await self.changed_at()
            if self._payload is None or stamp != self._stamp:
                data = await self.wallboard()
                stamp = data.get("changed_at", stamp)  # read with the data: a later change is seen next
                self._id = stamp.isoformat() if stamp is not None else "none"
                self._payload = orjson.dumps({**data, "id": self._id}, option=orjson.OPT_NAIVE_UTC)
                self._stamp = stamp
            self._error = None
        except errors.CollectorError as e:  # the store reports any failure as StorageError
            self._error = redact(str(e))
        self._looked = time.monotonic()


def _sent_now(payload: bytes) -> bytes:
    """The payload (a cached JSON object) with ``server_time``, the instant it is sent: the
    page sets its clock by it (time in state ticks from the agents' ``status_since``)."""
    return b'{"server_time":' + orjson.dumps(datetime.now(UTC)) + b"," + payload[1:]


def _sse(event: str, data: bytes, event_id: str | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head.encode() + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"


def _serve_wallboard(app: FastAPI, wallboard: Callable[[], Awaitable[dict[str, Any]]] | None,
                     changed_at: Callable[[], Awaitable[datetime | None]] | None, poll: float,
                     stopping: anyio.Event | None) -> None:
    if wallboard is None or changed_at is None:
        return
    feed = LiveFeed(wallboard, changed_at, poll)

    @app.get("/wallboard", include_in_schema=False)
    async def wallboard_page() -> HTMLResponse:
        return HTMLResponse((_WALLBOARD / "index.html").read_text(encoding="utf-8"),
                            headers={"cache-control": "no-cache"})

    @app.get("/wallboard/assets/{name}", include_in_schema=False)
    async def wallboard_asset(name: str) -> Response:
        media = _WALLBOARD_TYPES.get(name)
        if media is None:
            raise HTTPException(status_code=404, detail="no such asset")
        return Response((_WALLBOARD / name).read_bytes(), media_type=media, headers={"cache-control": "no-cache"})

    @app.get("/wallboard/data", responses={503: {"description": "database unreachable"}})
    async def wallboard_data() -> Any:
        """The latest queue and agent snapshots with today's figures per queue (what the
        wallboard shows); ``changed_at`` is also the id of the matching server-sent event."""
        _id, payload, error = await feed.latest()
        if error is not None or payload is None:
            return JSONResponse(status_code=503, content={"detail": error or "no data"})
        return Response(_sent_now(payload), media_type="application/json", headers={"cache-control": "no-store"})

    @app.get("/wallboard/events", include_in_schema=False)
    async def wallboard_events(request: Request, since: str | None = None) -> StreamingResponse:
        """Server-sent events: ``snapshot`` (the ``/wallboard/data`` JSON, id = its
        ``changed_at``) whenever new snapshots landed, ``unavailable`` while the database is
        away. A reconnecting browser sends Last-Event-ID; ``?since=`` does the same for the
        first connection (the id of the data the page already shows)."""
        last = request.headers.get("last-event-id") or since

        async def stream() -> AsyncIterator[bytes]:
            sent_id, sent_error = last, None
            yield b"retry: 2000\n\n"
            quiet = time.monotonic()
            while stopping is None or not stopping.is_set():  # stopping: end (the browser reconnects)
                event_id, payload, error = await feed.latest()
                if error is not None:
                    if error != sent_error:
                        yield _sse("unavailable", orjson.dumps({"reason": error}))
                        quiet, sent_error = time.monotonic(), error
                elif payload is not None and (event_id != sent_id or sent_error is not None):
                    yield _sse("snapshot", _sent_now(payload), event_id)
                    quiet, sent_id, sent_error = time.monotonic(), event_id, None
                if time.monotonic() - quiet >= SSE_KEEPALIVE:
                    yield b": keep-alive\n\n"
                    quiet = time.monotonic()
                with anyio.move_on_after(feed.poll):  # woken at once by the service's stop
                    await (stopping.wait() if stopping is not None else anyio.sleep_forever())

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def create_app(
    *,
    token: str | None,
    validate: Callable[[CollectionRequest], None],
    submit: Callable[[CollectionRequest], Awaitable[int]],
    get_run: Callable[[int], Awaitable[dict[str, Any] | None]],
    list_runs: Callable[[str | None, int | None, int], Awaitable[list[dict[str, Any]]]],
    ready: Callable[[], Awaitable[None]],
    cluster: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    max_body: int = MAX_BODY,
    wallboard: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    live_changed_at: Callable[[], Awaitable[datetime | None]] | None = None,
    live_poll: float = LIVE_POLL,
    stopping: anyio.Event | None = None,
) -> FastAPI:
    """The API. ``submit`` queues a one-off run and returns its id, or raises
    :class:`errors.QueueFull` (answered 429 with Retry-After) when the queue is full.
    With ``wallboard`` and ``live_changed_at``: the live wallboard (``/wallboard``, its
    data and its server-sent events), read-only like every GET; an event stream ends
    as soon as ``stopping`` is set (before the server stops, so no response is cut)."""
    if token is not None and not token.strip():
        raise errors.ConfigError("api.token is empty; set a token, or leave it out to turn authentication off")
    app = FastAPI(
        title="connect-collector",
        description="Amazon Connect historical metrics into PostgreSQL.",
        version="1",
        docs_url=None,
    )
    _serve_docs(app)
    _serve_wallboard(app, wallboard, live_changed_at, live_poll, stopping)

    _answer_validation_errors(app)

    @app.post("/collections", status_code=202, response_model=Accepted,
              responses={401: {"description": "missing or wrong token"}, 413: {"description": "body too large"},
                         422: {"description": "invalid body"},
                         429: {"description": "too many queued runs; retry after Retry-After seconds"}})
    async def post_collection(body: CollectionRequest) -> Any:
        try:
            validate(body)
        except errors.BadInput as e:
            return _unprocessable(e.field, str(e))
        try:
            run_id = await submit(body)
        except errors.QueueFull as e:
            return JSONResponse(status_code=429, content={"detail": str(e)},
                                headers={"Retry-After": str(e.retry_after)})
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

    @app.get("/readyz", responses={503: {"description": "database unreachable, schema not current, nothing "
                                                       "to collect, or a shard no live replica can serve"}})
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
            return {"replicas": [], "unowned_shards": [], "unserved_shards": []}
        return await cluster()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestGuard, token=token, max_body=max_body)
    return app


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["errors"] = [{k: redact(v) for k, v in e.items()} for e in (out.get("errors") or [])]
    return out
