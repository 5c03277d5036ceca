"""The real stack, started once per session as processes on 127.0.0.1: the
processor stand-ins, the cache, two apis, the consumer and nginx."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tools.stack import Stack, StackConfig

TOKEN = "123"


class Processors:
    """The stand-ins' admin endpoints, as the official test drives them."""

    def __init__(self, default_url: str, fallback_url: str) -> None:
        self.urls = {"default": default_url, "fallback": fallback_url}
        self.http = httpx.Client(timeout=10, headers={"X-Rinha-Token": TOKEN})

    def configure(self, name: str, *, delay: int | None = None, failure: bool | None = None) -> None:
        if delay is not None:
            self.http.put(f"{self.urls[name]}/admin/configurations/delay", json={"delay": delay}).raise_for_status()
        if failure is not None:
            self.http.put(f"{self.urls[name]}/admin/configurations/failure", json={"failure": failure}).raise_for_status()

    def reset(self) -> None:
        for name in self.urls:
            self.configure(name, delay=0, failure=False)
            self.http.post(f"{self.urls[name]}/admin/purge-payments").raise_for_status()

    def summary(self, name: str, params: dict[str, str] | None = None) -> dict:
        response = self.http.get(f"{self.urls[name]}/admin/payments-summary", params=params or {})
        response.raise_for_status()
        return response.json()

    def find(self, name: str, correlation_id: str) -> dict | None:
        response = self.http.get(f"{self.urls[name]}/payments/{correlation_id}")
        return response.json() if response.status_code == 200 else None


class Backend:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def pay(self, amount: float = 19.90, correlation_id: str | None = None) -> tuple[str, httpx.Response]:
        correlation_id = correlation_id or str(uuid.uuid4())
        response = self.http.post("/payments", json={"correlationId": correlation_id, "amount": amount})
        return correlation_id, response

    def summary(self, params: dict[str, str] | None = None) -> dict:
        response = self.http.get("/payments-summary", params=params or {})
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return self.http.get("/stats").raise_for_status().json()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


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
