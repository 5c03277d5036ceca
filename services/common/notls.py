"""Keep OpenSSL out of processes that never speak TLS.

Every hop of the stack is plain gRPC over unix sockets or plain HTTP, yet
``import asyncio`` and ``import uvloop`` load ``ssl``, and ``import aiohttp``
loads ``hashlib``: both map OpenSSL's libcrypto (and ``ssl`` libssl too). That
was several MB of peak RSS in every service
(BENCHMARKS.md, "Decisions in force": no OpenSSL).

``keep_tls_out`` must run before anything imports asyncio, so each
``__main__`` calls it first, and only when it runs as the service: it changes
the whole process, which in a test would be the test runner.
"""

from __future__ import annotations

import importlib
import sys
import types

# Modules whose import maps libcrypto. Without them asyncio runs with no TLS
# support, aiohttp disables its TLS client, and hashlib falls back to
# CPython's built-in digests.
_OPENSSL_MODULES = ("ssl", "_ssl", "_hashlib")


class _Unavailable(OSError):
    """Stands for every class uvloop binds from ``ssl``; nothing is ever one."""


def _unavailable(*args: object, **kwargs: object) -> None:
    raise ImportError("TLS is kept out of this process (services/common/notls.py)")


class _InertSsl(types.ModuleType):
    """What uvloop sees as ``ssl`` while it is imported.

    uvloop binds about ten names from ``ssl`` when its module initialises
    (``SSLContext``, ``MemoryBIO``, the ``SSL_ERROR_*`` numbers...) and uses
    them only on a TLS transport. Here classes are an exception type no object
    is an instance of, functions raise, constants are -1: any TLS use fails
    loudly, and plain sockets never touch them."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        if name.isupper():
            return -1
        if name[0].isupper():
            return _Unavailable
        return _unavailable


def keep_tls_out(inert: tuple[str, ...] = ("uvloop",)) -> None:
    """Make ``import ssl`` (and OpenSSL-backed ``hashlib``) fail in this
    process, after letting the modules in ``inert`` (uvloop; redis-py's
    asyncio client, which names ``ssl`` classes in its annotations, for a cache
    on Redis) import against an inert ``ssl``."""
    loaded = [name for name in _OPENSSL_MODULES if sys.modules.get(name) is not None]
    if loaded:
        raise RuntimeError(f"keep_tls_out() must run before {', '.join(loaded)} is imported")
    for name in _OPENSSL_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  # import now raises ImportError
    import asyncio  # noqa: F401  (sees no ssl: TLS support off)

    sys.modules["ssl"] = _InertSsl("ssl")
    try:
        for name in inert:  # each binds its ssl names now, from the inert module
            try:
                importlib.import_module(name)
            except ImportError:
                pass  # uvloop missing: asyncio's loop only
    finally:
        sys.modules["ssl"] = None  # type: ignore[assignment]
