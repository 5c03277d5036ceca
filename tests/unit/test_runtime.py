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


def test_keep_ssl_out_only_without_uvloop() -> None:
    code = """
        from services.common.notls import keep_ssl_out
        keep_ssl_out("asyncio")
        import asyncio
        try:
            import ssl
        except ImportError:
            print("no ssl")
        else:
            print("ssl")
    """
    assert run_python(code) == "no ssl"
    assert run_python(code, EVENT_LOOP="uvloop") == "ssl"


def test_skip_ca_bundle_leaves_tls_contexts_empty() -> None:
    out = run_python("""
        from services.common.notls import skip_ca_bundle
        skip_ca_bundle()
        import ssl
        print(ssl.create_default_context().cert_store_stats()["x509_ca"])
    """)
    assert out == "0"
