"""The real stack, started once per session as processes on 127.0.0.1: the
processor stand-ins, the cache, two apis, the consumer and nginx."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.clients import Backend, Processors
from tools.stack import Stack, StackConfig

__all__ = ["Backend", "Processors"]

@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    run_dir = Path(tempfile.mkdtemp(prefix="rinha-it-", dir="/tmp"))
    config = StackConfig(
        run_dir=run_dir,
        port=int(os.environ.get("TEST_PORT", "9999")),
        default_port=int(os.environ.get("TEST_DEFAULT_PORT", "8001")),
        fallback_port=int(os.environ.get("TEST_FALLBACK_PORT", "8002")),
        # Short leases and timeouts so that crash tests settle in seconds.
        env={"LOG_LEVEL": "INFO", "CACHE_LEASE_MS": "5000", "CONSUMER_PAYMENT_TIMEOUT_MS": "2000",
             "CONSUMER_LOOKUP_TIMEOUT_MS": "1000", "CONSUMER_JOB_TIMEOUT_MS": "4000"},
    )
    with Stack(config) as running:
        yield running
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def processors(stack: Stack) -> Processors:
    return Processors(*stack.config.processor_urls)


@pytest.fixture(scope="session")
def backend(stack: Stack) -> Backend:
    return Backend(stack.config.base_url)


@pytest.fixture()
def clean(stack: Stack, processors: Processors, backend: Backend) -> Iterator[None]:
    """Each test starts with healthy, empty processors and an empty backend."""
    processors.reset()
    backend.http.post("/purge-payments").raise_for_status()
    yield
    processors.reset()
