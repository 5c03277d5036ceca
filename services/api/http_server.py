"""aiohttp's low-level server, answering what its own parser refuses in JSON.

aiohttp answers a request it cannot parse (conflicting Content-Length, a bad
request line, a head past its limits) before any handler of ours runs, with a
text/plain body. Every error this api gives is ``{"error": ...}``, so the
request handler's error page is replaced; the rest of aiohttp is untouched.
nginx is the only client of this socket, and it refuses most of these first:
this is defence in depth, tested straight at the socket
(``tests/integration/test_edge.py``).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("api.http")


class _JsonErrors(RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None) -> web.StreamResponse:
        if status >= 500:  # a fault of ours: aiohttp logs it with its traceback
            super().handle_error(request, status, exc, message)
            text = HTTPStatus(status).phrase
        else:  # the client's: one quiet line, not a traceback per bad request
            log.debug("unparseable request", extra={"fields": {"status": status, "error": repr(exc)}})
            if request.writer.output_size > 0:
                raise ConnectionError("an answer was already under way")
            text = (message or HTTPStatus(status).phrase).splitlines()[0]
        response = web.Response(status=status, body=orjson.dumps({"error": text}),
                                content_type="application/json")
        response.force_close()  # the framing can no longer be trusted
        return response


class JsonErrorServer(web.Server):
    """``web.Server`` whose connections answer parser errors in JSON."""

    def __call__(self) -> RequestHandler:
        return _JsonErrors(self, loop=self._loop, **self._kwargs)
