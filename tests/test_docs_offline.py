"""/docs works offline: the Swagger UI page references only this service, and its
assets are served from the installed package."""

from __future__ import annotations

import re
from typing import Any

from collector.http_api import create_app


async def _get(app: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1),
             "server": ("testserver", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body


async def _nothing(*_a: Any) -> Any:
    return None


async def test_docs_reference_no_other_host_and_the_assets_are_served() -> None:
    app = create_app(token=None, validate=lambda _b: None, submit=_nothing, get_run=_nothing,
                     list_runs=_nothing, ready=_nothing)
    status, headers, body = await _get(app, "/docs")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert not re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page), page
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(refs)
    assert '"validatorUrl": null' in page
    for ref, media, size in (("/docs/assets/swagger-ui-bundle.js", "text/javascript", 1_000_000),
                             ("/docs/assets/swagger-ui.css", "text/css", 100_000),
                             ("/docs/assets/favicon-32x32.png", "image/png", 100)):
        assert ref in refs or ref.endswith(".png")
        status, headers, body = await _get(app, ref)
        assert status == 200 and headers["content-type"].startswith(media) and len(body) > size, ref
    assert (await _get(app, "/docs/assets/../cli.py"))[0] == 404
    assert (await _get(app, "/docs/assets/other.js"))[0] == 404
    status, _h, body = await _get(app, "/openapi.json")
    assert status == 200 and b"/docs/assets" not in body  # the asset route stays out of the schema
