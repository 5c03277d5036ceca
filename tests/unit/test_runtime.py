"""Process-level settings, each checked in a fresh interpreter (they change the
process they run in)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def run_python(code: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_batch_policy_reaches_every_thread() -> None:
    out = run_python("""
        import os, threading
        from services.common import runtime
        started = threading.Event()
        thread = threading.Thread(target=lambda: (started.set(), threading.Event().wait(1)), daemon=True)
        thread.start(); started.wait()
        runtime.set_cpu_policy("batch")
        print(sorted({os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")}))
    """)
    assert out == str([os.SCHED_BATCH])


@pytest.mark.skipif(sys.platform != "linux", reason="Linux scheduler")
def test_a_short_slice_is_granted_or_declined_cleanly() -> None:
    out = run_python("""
        import ctypes, struct
        from services.common import runtime
        granted = runtime.set_cpu_slice(100)
        buf = ctypes.create_string_buffer(56)
        ctypes.CDLL(None).syscall(315, 0, buf, 56, 0)  # sched_getattr
        print(granted, struct.unpack("IIQiIQQQII", buf.raw)[5])
    """)
    granted, slice_ns = out.split()
    assert granted == "False" or int(slice_ns) == 100_000
    assert run_python("from services.common import runtime; print(runtime.set_cpu_slice(0))") == "False"


def test_keep_tls_out_maps_no_openssl_and_uvloop_still_serves() -> None:
    out = run_python("""
        from services.common.notls import keep_tls_out
        keep_tls_out()
        import asyncio, hashlib, os, tempfile
        import grpc.aio, uvloop
        from aiohttp import web
        try:
            import ssl
        except ImportError:
            print("no ssl")
        print(hashlib.sha256(b"x").hexdigest()[:8])

        async def echo() -> bytes:
            path = os.path.join(tempfile.mkdtemp(), "s.sock")
            class Echo(asyncio.Protocol):
                def connection_made(self, transport): self.transport = transport
                def data_received(self, data): self.transport.write(data)
            server = await asyncio.get_running_loop().create_unix_server(Echo, path)
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"ping")
            answer = await reader.readexactly(4)
            writer.close()
            server.close()
            return answer
        print(uvloop.run(echo()))
        print([line for line in open("/proc/self/maps") if "libcrypto" in line or "libssl" in line])
    """)
    assert out.splitlines() == ["no ssl", "2d711642", "b'ping'", "[]"]


def test_tls_fails_loudly_where_it_is_kept_out() -> None:
    out = run_python("""
        from services.common.notls import keep_tls_out
        keep_tls_out()
        import uvloop
        async def dial():
            try:
                await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", 9, ssl=True)
            except Exception as exc:
                print(type(exc).__name__)
        import asyncio
        uvloop.run(dial())
    """)
    assert out == "ImportError"


def test_keep_tls_out_refuses_to_run_too_late() -> None:
    out = run_python("""
        import ssl
        from services.common.notls import keep_tls_out
        try:
            keep_tls_out()
        except RuntimeError as exc:
            print(exc)
    """)
    assert "before ssl" in out
