"""Where a service listens: ``unix:/path`` or ``host:port``. One parser and one
set of socket rules for every server of the project (the api's two sockets, the cache's,
the consumer's health socket) and for the probe that checks them."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.common.config import ConfigError

if TYPE_CHECKING:  # the probe imports this module, and should start fast
    from aiohttp import web


def split_listen(listen: str) -> str | tuple[str, int]:
    """``unix:/path`` -> the socket's path; ``host:port`` -> (host, port)."""
    if listen.startswith("unix:"):
        return listen.removeprefix("unix:")
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{listen!r} must be unix:/path or host:port, port 1-65535")
    return host, int(port)


def check_listen(name: str, listen: str) -> str:
    """``listen``, or a ConfigError naming the variable it came from."""
    try:
        split_listen(listen)
    except ValueError as exc:
        raise ConfigError(f"{name}={exc}") from None
    return listen


def replace_stale(path: str) -> str:
    """A socket file left by a process that died is in the way of a new bind."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return path


async def start_server(listen: str, protocol: Callable[[], asyncio.BaseProtocol]) -> asyncio.AbstractServer:
    """A bare asyncio server on ``listen`` (the payments lane, the consumer's probes)."""
    loop = asyncio.get_running_loop()
    address = split_listen(listen)
    if isinstance(address, str):
        return await loop.create_unix_server(protocol, replace_stale(address))
    host, port = address
    return await loop.create_server(protocol, host or "0.0.0.0", port, reuse_address=True)


def http_site(runner: web.BaseRunner, listen: str) -> web.BaseSite:
    from aiohttp import web

    address = split_listen(listen)
    if isinstance(address, str):
        return web.UnixSite(runner, replace_stale(address))
    host, port = address
    return web.TCPSite(runner, host or "0.0.0.0", port, reuse_address=True)


def open_to_all(listen: str) -> None:
    """nginx (and a probe in another container) runs as another user: a unix
    socket must be writable by all."""
    address = split_listen(listen)
    if isinstance(address, str):
        os.chmod(address, 0o666)
