"""The consumer's liveness and readiness over HTTP, on a socket of its own
(CONSUMER_HEALTH_LISTEN): the consumer serves nothing else, so this is the one
way in for a compose healthcheck or a Kubernetes probe
(``python -m services.common.probe http <listen> /health/ready``).

- ``GET /health/live``: 200 while the event loop answers.
- ``GET /health/ready``: 200 once the cache has accepted a heartbeat (the
  consumer's leases are safe) and every processor's health is known (from its
  own poll or the system's, by heartbeat); 503 with why, until then.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from services.common.listen import http_site, open_to_all
from services.consumer.routing import Router


def _json(data: dict[str, object], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class Probes:
    def __init__(self, router: Router, heartbeat_accepted: Callable[[], bool]) -> None:
        self._router = router
        self._accepted = heartbeat_accepted
        self._runner: web.ServerRunner | None = None

    def not_ready(self) -> str:
        """Why the consumer is not ready, or "" if it is."""
        if not self._accepted():
            return "no heartbeat accepted by the cache yet"
        unknown = sorted(name for name, state in self._router.states.items() if not state.health_checked_at_ms)
        if unknown:
            return f"no health known yet for {', '.join(unknown)}"
        return ""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "GET":
            return _json({"error": f"{request.method} is not allowed here"}, 405)
        if request.path == "/health/live":
            return _json({"status": "live"})
        if request.path == "/health/ready":
            why = self.not_ready()
            return _json({"status": "not ready", "why": why}, 503) if why else _json({"status": "ready"})
        return _json({"error": f"no such endpoint: {request.path}"}, 404)

    async def start(self, listen: str) -> None:
        self._runner = web.ServerRunner(web.Server(self.handle, access_log=None), handle_signals=False)
        await self._runner.setup()
        await http_site(self._runner, listen).start()
        open_to_all(listen)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
