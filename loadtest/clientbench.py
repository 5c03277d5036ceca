"""Which HTTP client should the consumer use toward the processors?

    python -m loadtest.clientbench [--rate 2000] [--seconds 5] [--clients own,aiohttp,httpx] [--rounds 3]

Each client, in a process of its own on uvloop, posts payments to a processor
stand-in at a fixed rate (open loop: one request every 1/rate s, whatever the
answers do, up to 100 connections, as the consumer's pool) and reports the CPU
its process spent per request and the latency it saw. The clients take turns,
round after round, so the machine's drift hits them alike; medians are quoted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import orjson

from tools.stack import port_open
from tools.waiting import wait_until

PORT = 8021
CONNECTIONS = 100
Post = Callable[[bytes], Awaitable[int]]


async def own_client(stack: AsyncExitStack, url: str) -> Post:
    from services.consumer.http import ConnectionLimits, Origin

    origin = Origin(url, ConnectionLimits(max_idle=CONNECTIONS, max_connections=CONNECTIONS))
    stack.callback(origin.close)

    async def post(body: bytes) -> int:
        return (await origin.request("POST", "/payments", body, timeout=5)).status
    return post


async def aiohttp_client(stack: AsyncExitStack, url: str) -> Post:
    import aiohttp

    session = await stack.enter_async_context(aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONNECTIONS), skip_auto_headers=("User-Agent",)))
    timeout = aiohttp.ClientTimeout(total=5)

    async def post(body: bytes) -> int:
        async with session.post(f"{url}/payments", data=body, timeout=timeout,
                                headers={"Content-Type": "application/json"}) as response:
            await response.read()
            return response.status
    return post


async def httpx_client(stack: AsyncExitStack, url: str) -> Post:
    import httpx

    client = await stack.enter_async_context(httpx.AsyncClient(
        timeout=5, limits=httpx.Limits(max_connections=CONNECTIONS,
                                       max_keepalive_connections=CONNECTIONS)))

    async def post(body: bytes) -> int:
        response = await client.post(f"{url}/payments", content=body,
                                     headers={"Content-Type": "application/json"})
        return response.status_code
    return post


CLIENTS = {"own": own_client, "aiohttp": aiohttp_client, "httpx": httpx_client}


async def paced(name: str, url: str, rate: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0

    async def one(post: Post) -> None:
        nonlocal errors
        body = orjson.dumps({"correlationId": str(uuid.uuid4()), "amount": 19.9,
                             "requestedAt": "2025-07-10T12:34:56.000Z"})
        started = time.perf_counter()
        try:
            status = await post(body)
        except Exception:
            status = 0
        latencies.append(time.perf_counter() - started)
        errors += status != 200

    async with AsyncExitStack() as stack:
        post = await CLIENTS[name](stack, url)
        for _ in range(50):  # warm the pool up
            await one(post)
        latencies.clear()
        errors = 0
        total = int(rate * seconds)
        tasks = []
        cpu, start = time.process_time(), time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(post)))
        await asyncio.gather(*tasks)
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - start
    latencies.sort()
    return {"client": name, "requests": total, "errors": errors, "achieved_rate": round(total / wall),
            "cpu_us_per_request": round(cpu / total * 1e6, 1),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)}


def worker(args: argparse.Namespace) -> None:
    import uvloop

    print(json.dumps(uvloop.run(paced(args.worker, args.url, args.rate, args.seconds))))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.clientbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", default="own,aiohttp,httpx")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=tuple(CLIENTS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    url = f"http://127.0.0.1:{PORT}"
    standin = subprocess.Popen([sys.executable, "-m", "standin", "--host", "127.0.0.1", "--port", str(PORT)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, list[dict]] = {}
    try:
        wait_until(lambda: port_open(PORT), timeout=15, what="the stand-in to listen")
        for _ in range(args.rounds):
            for name in args.clients.split(","):
                out = subprocess.run([sys.executable, "-m", "loadtest.clientbench", "--worker", name,
                                      "--url", url, "--rate", str(args.rate), "--seconds", str(args.seconds)],
                                     capture_output=True, text=True, check=True, env=os.environ)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault(name, []).append(result)
                print(json.dumps(result), flush=True)
    finally:
        standin.terminate()
        standin.wait()
    print(f"\nmedians at {args.rate} req/s over {args.rounds} round(s):")
    for name, runs in results.items():
        med = {key: statistics.median(r[key] for r in runs)
               for key in ("cpu_us_per_request", "p50_ms", "p99_ms", "achieved_rate", "errors")}
        print(f"  {name:8} cpu {med['cpu_us_per_request']:7.1f} us/request  p50 {med['p50_ms']:.2f} ms  "
              f"p99 {med['p99_ms']:.2f} ms  rate {med['achieved_rate']:.0f}/s  errors {med['errors']:.0f}")


if __name__ == "__main__":
    main()
