"""``python -m services.api``: one api instance (run two behind nginx)."""

from __future__ import annotations

from services.common.notls import keep_tls_out

if __name__ == "__main__":  # run as the service, not imported (tests)
    keep_tls_out()  # before anything imports asyncio or aiohttp

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from services.api.handlers import Api, ApiOptions
from services.api.http_server import JsonErrorServer
from services.api.lane import PaymentsLane
from services.api.shipper import Shipper
from services.api.spool import Spool
from services.common import logs, runtime, supervision
from services.common.config import env_choice, env_int, env_str, load_or_exit
from services.common.listen import check_listen, http_site, open_to_all, split_listen, start_server
from services.common.rpc_client import cache_channel, cache_stub


@dataclass(frozen=True, slots=True)
class ApiSettings:
    listen: str
    payments_listen: str
    instance: str
    spool_dir: Path
    cache_address: str
    ack_mode: str
    ack_timeout_ms: int
    rpc_timeout_ms: int
    max_backlog: int
    ship_batch: int
    ship_linger_ms: int
    supervisor_status: str

    @classmethod
    def from_env(cls) -> ApiSettings:
        listen = check_listen("API_LISTEN", env_str("API_LISTEN", "unix:/run/rinha/api1.sock"))
        payments_listen = check_listen("API_PAYMENTS_LISTEN",
                                       env_str("API_PAYMENTS_LISTEN", default_payments_listen(listen)))
        return cls(
            listen=listen,
            payments_listen=payments_listen,
            # Its name in /stats and /metrics: unique in the system (two nodes
            # both have an "api1": compose and tools/stack.py name them).
            instance=env_str("API_INSTANCE", default_instance(listen)),
            spool_dir=Path(env_str("API_SPOOL_DIR", "/var/lib/rinha/spool")),
            cache_address=env_str("CACHE_ADDRESS", "unix:/run/rinha/cache.sock"),
            ack_mode=env_choice("API_ACK_MODE", "spool", ("spool", "cache")),
            # Below nginx's 1.5 s read timeout for POST /payments (nginx.conf):
            # a longer wait would be cut off there and the POST retried elsewhere.
            ack_timeout_ms=env_int("API_ACK_TIMEOUT_MS", 1_000, minimum=1, maximum=1_200),
            rpc_timeout_ms=env_int("API_RPC_TIMEOUT_MS", 3_000, minimum=10, maximum=60_000),
            max_backlog=env_int("API_MAX_BACKLOG", 100_000, minimum=1),
            ship_batch=env_int("API_SHIP_BATCH", 500, minimum=1, maximum=10_000),
            ship_linger_ms=env_int("API_SHIP_LINGER_MS", 300, minimum=0, maximum=1_000),
            supervisor_status=env_str(supervision.ENV, ""),
        )


def default_payments_listen(listen: str) -> str:
    """The payments lane's default address: api1.sock -> api1-payments.sock, port -> port + 1."""
    address = split_listen(listen)
    if isinstance(address, str):
        return f"unix:{address.removesuffix('.sock')}-payments.sock"
    host, port = address
    return f"{host}:{port + 1}"


def default_instance(listen: str) -> str:
    """api1.sock -> "api1"; a TCP address stays as it is."""
    address = split_listen(listen)
    return Path(address).stem if isinstance(address, str) else listen


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
                         instance=settings.instance, backlog_limit=settings.max_backlog,
                         supervisor_status=settings.supervisor_status),
              spool, shipper, stub)
    shipping = asyncio.create_task(shipper.run())
    reporting = asyncio.create_task(api.reporter.run())
    # The lane is up before the main socket appears.
    lane = await start_server(settings.payments_listen, lambda: PaymentsLane(api.admission))
    open_to_all(settings.payments_listen)
    runner = web.ServerRunner(JsonErrorServer(api.handle, access_log=None), handle_signals=False)
    await runner.setup()
    await http_site(runner, settings.listen).start()
    open_to_all(settings.listen)
    runtime.settle_after_startup()
    log.info("listening", extra=logs.fields(listen=settings.listen,
                                            payments_listen=settings.payments_listen, replayed=spool.replayed,
                                            ack_mode=settings.ack_mode))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    lane.close()
    await runner.cleanup()  # stop taking requests first, then drain the spool
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3):
            while spool.pending and shipper.connected:
                await asyncio.sleep(0.01)
    log.info("stopped", extra=logs.fields(unshipped=spool.pending))
    shipping.cancel()
    reporting.cancel()
    spool.close()
    await channel.close()


def main() -> None:
    settings = load_or_exit(ApiSettings.from_env, "api")
    runtime.run(lambda: serve(settings), "api", default_loop="uvloop", default_slice_us=100)


if __name__ == "__main__":
    main()
