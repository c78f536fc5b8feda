"""How the sandbox answers on the wire: the request's parameters as BILLmanager reads them, its
XML/JSON/HTML document forms, nginx's error pages and the bodies of the ``hostile`` fault."""

from __future__ import annotations

import contextlib
import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from zomro_backup_operator.sandbox.api import ApiResult

_ERROR_PAGE = (
    "<html>\r\n<head><title>{0} {1}</title></head>\r\n<body>\r\n"
    "<center><h1>{0} {1}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_REASONS = {403: "Forbidden", 429: "Too Many Requests", 460: "Blocked", 503: "Service Unavailable"}


async def read_params(request: web.Request) -> dict[str, str]:
    """The query string and the form body (urlencoded or multipart) merged; the body wins."""
    params: dict[str, str] = {}
    for key, value in request.query.items():
        params.setdefault(key, value)
    if request.method == "POST" and request.can_read_body:
        body: dict[str, str] = {}
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            form = await request.post()
            for key, part in form.items():
                if isinstance(part, str):
                    body.setdefault(key, part)
                elif isinstance(part, bytes | bytearray):
                    body.setdefault(key, bytes(part).decode("utf-8", "replace"))
                else:  # a multipart part sent as a file: BILLmanager reads its content
                    body.setdefault(key, part.file.read().decode("utf-8", "replace"))
        params.update(body)
    return params


def render(result: ApiResult, params: dict[str, str]) -> web.Response:
    """JSON only for ``out=json``; otherwise XML (BILLmanager's default) or an HTML page."""
    out = params.get("out")
    if out == "json":
        return web.json_response(result.doc, dumps=lambda d: json.dumps(d, ensure_ascii=False))
    if out in (None, "", "xml"):
        return web.Response(text=to_xml(result.doc), content_type="text/xml", charset="utf-8")
    page = "<!DOCTYPE html><html><head><title>BILLmanager</title></head><body></body></html>"
    return web.Response(text=page, content_type="text/html", charset="utf-8")


def to_xml(doc: dict[str, Any]) -> str:
    """BILLmanager's XML form of a document: ``$x`` keys are attributes, ``$`` is text."""

    def element(tag: str, value: Any) -> str:
        if isinstance(value, list):
            return "".join(element(tag, item) for item in value)
        if not isinstance(value, dict):
            return f"<{tag}>{escape(str(value))}</{tag}>"
        attrs = "".join(
            f" {k[1:]}={quoteattr(str(v))}"
            for k, v in value.items()
            if k.startswith("$") and k != "$"
        )
        text = escape(str(value.get("$", "")))
        children = "".join(element(k, v) for k, v in value.items() if not k.startswith("$"))
        return f"<{tag}{attrs}>{text}{children}</{tag}>"

    body = "".join(element(k, v) for k, v in doc.items())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def error_page(status: int) -> web.Response:
    reason = _REASONS.get(status, "Internal Server Error" if status == 500 else "Bad Gateway")
    return web.Response(
        status=status,
        reason=reason,
        text=_ERROR_PAGE.format(status, reason),
        content_type="text/html",
    )


_HOSTILE_BODIES = {
    "truncated": ("application/json", '{"doc": {"elem": [{"id": {"$": "1'),
    "wrong_types": ("application/json", '{"doc": {"elem": [{"id": [1, 2], "name": 7}]}}'),
    "html": ("text/html", "<html><head><title>Maintenance</title></head><body></body></html>"),
}


def hostile_answer(mode: str) -> web.Response:
    """HTTP 200 with a body that is not the document Zomro promises (the ``hostile`` fault)."""
    content_type, text = _HOSTILE_BODIES[mode]
    return web.Response(text=text, content_type=content_type)
