"""Keep TLS machinery out of processes that never speak TLS.

Every hop of the stack is plain gRPC over unix sockets or plain HTTP, yet
``import asyncio`` loads ``ssl`` (OpenSSL's libssl and libcrypto), and
``import aiohttp`` builds two TLS client contexts loaded with the system's CA
bundle. Together that is 5.5 MB of RSS in the cache and the consumer and 1.8 MB
in each api (BENCHMARKS.md, "Where the RSS goes"). Both calls must run before
the imports they affect, so each ``__main__`` makes them first, and only when
it runs as the service: they change the whole process, which in a test would
be the test runner.
"""

from __future__ import annotations

import os
import sys


def keep_ssl_out(default_loop: str) -> None:
    """Make ``import ssl`` fail in this process (asyncio then runs without TLS
    support; anything that later needs TLS fails loudly with ImportError).
    uvloop cannot run without ssl, so this stands down when the loop is uvloop."""
    if (os.environ.get("EVENT_LOOP", "").strip() or default_loop) == "asyncio":
        sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]


def skip_ca_bundle() -> None:
    """TLS contexts created from now on load no CA certificates (OpenSSL reads
    ``SSL_CERT_FILE`` when a context loads its defaults)."""
    os.environ["SSL_CERT_FILE"] = os.devnull  # this process makes no TLS calls
