"""``python -m services.api``: one api instance (run two behind nginx)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from services.api.handlers import Api, ApiOptions
from services.api.shipper import Shipper
from services.api.spool import Spool
from services.common import logs, runtime
from services.common.config import ConfigError, env_choice, env_int, env_str, load_or_exit
from services.common.rpc_client import cache_channel, cache_stub


@dataclass(frozen=True, slots=True)
class ApiSettings:
    listen: str
    spool_dir: Path
    cache_address: str
    ack_mode: str
    ack_timeout_ms: int
    rpc_timeout_ms: int
    max_backlog: int
    ship_batch: int
    ship_linger_ms: int

    @classmethod
    def from_env(cls) -> ApiSettings:
        listen = env_str("API_LISTEN", "unix:/run/rinha/api1.sock")
        if not listen.startswith("unix:") and ":" not in listen:
            raise ConfigError(f"API_LISTEN={listen!r} must be unix:/path or host:port")
        return cls(
            listen=listen,
            spool_dir=Path(env_str("API_SPOOL_DIR", "/var/lib/rinha/spool")),
            cache_address=env_str("CACHE_ADDRESS", "unix:/run/rinha/cache.sock"),
            ack_mode=env_choice("API_ACK_MODE", "spool", ("spool", "cache")),
            ack_timeout_ms=env_int("API_ACK_TIMEOUT_MS", 1_000, minimum=1, maximum=60_000),
            rpc_timeout_ms=env_int("API_RPC_TIMEOUT_MS", 3_000, minimum=10, maximum=60_000),
            max_backlog=env_int("API_MAX_BACKLOG", 100_000, minimum=1),
            ship_batch=env_int("API_SHIP_BATCH", 500, minimum=1, maximum=10_000),
            ship_linger_ms=env_int("API_SHIP_LINGER_MS", 2, minimum=0, maximum=1_000),
        )


def _site(runner: web.BaseRunner, listen: str) -> web.BaseSite:
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return web.UnixSite(runner, path)
    host, _, port = listen.rpartition(":")
    return web.TCPSite(runner, host or "0.0.0.0", int(port), reuse_address=True)


async def serve(settings: ApiSettings) -> None:
    log = logs.setup("api")
    spool = Spool(settings.spool_dir, max_pending=settings.max_backlog)
    channel = cache_channel(settings.cache_address)
    stub = cache_stub(channel)
    shipper = Shipper(spool, stub, batch_max=settings.ship_batch,
                      linger_seconds=settings.ship_linger_ms / 1000)
    api = Api(ApiOptions(ack_mode=settings.ack_mode,
                         ack_timeout_seconds=settings.ack_timeout_ms / 1000,
                         rpc_timeout_seconds=settings.rpc_timeout_ms / 1000,
                         instance=settings.listen),
              spool, shipper, stub)
    shipping = asyncio.create_task(shipper.run())
    runner = web.ServerRunner(web.Server(api.handle, access_log=None), handle_signals=False)
    await runner.setup()
    site = _site(runner, settings.listen)
    await site.start()
    if settings.listen.startswith("unix:"):
        os.chmod(settings.listen.removeprefix("unix:"), 0o666)
    runtime.settle_after_startup()
    log.info("listening", extra=logs.fields(listen=settings.listen, replayed=spool.replayed,
                                            ack_mode=settings.ack_mode))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()  # stop taking requests first, then drain the spool
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3):
            while spool.pending and shipper.connected:
                await asyncio.sleep(0.01)
    log.info("stopped", extra=logs.fields(unshipped=spool.pending))
    shipping.cancel()
    spool.close()
    await channel.close()


def main() -> None:
    settings = load_or_exit(ApiSettings.from_env, "api")
    runtime.run(serve(settings), default_loop="uvloop")


if __name__ == "__main__":
    main()
