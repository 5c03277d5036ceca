"""Process-level settings, each checked in a fresh interpreter (they change the
process they run in): what the kernel reports afterwards, read back with
sched_getscheduler/sched_getattr, both where it grants a request and, under a
seccomp filter such as a strict sandbox installs, where it refuses one."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

LINUX_X86_64 = sys.platform == "linux" and platform.machine() == "x86_64"
needs_linux_x86_64 = pytest.mark.skipif(not LINUX_X86_64, reason="Linux scheduler, x86_64 system call numbers")

# Helpers the child processes below start with.
PROBES = """
import ctypes, os, struct

def sched_attr():
    # (policy, nice, slice in ns) of the calling thread, from sched_getattr(2).
    buf = ctypes.create_string_buffer(56)
    assert ctypes.CDLL(None, use_errno=True).syscall(315, 0, buf, 56, 0) == 0, ctypes.get_errno()
    _, policy, _, nice, _, runtime, *_ = struct.unpack("IIQiIQQQII", buf.raw)
    return policy, nice, runtime

def policies():
    # The scheduling policy of every thread of this process.
    return sorted(os.sched_getscheduler(int(task)) for task in os.listdir("/proc/self/task"))

def sandbox(*denied):
    # A seccomp filter as a strict sandbox installs one: these x86_64 system
    # calls fail with EPERM, in this thread and every thread it starts later.
    n = len(denied)
    program = [(0x20, 0, 0, 4), (0x15, 0, n + 1, 0xC000003E)]  # not x86_64: allow
    program += [(0x20, 0, 0, 0)]  # the system call's number
    program += [(0x15, n - i, 0, number) for i, number in enumerate(denied)]  # one of them: EPERM
    program += [(0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, 0x00050001)]  # SECCOMP_RET_ALLOW, _ERRNO | EPERM
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Program(len(program), ctypes.addressof(code))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP, filter
"""
SCHED_SETSCHEDULER, SCHED_SETATTR = 144, 314


def run_python(code: str, **env: str) -> str:
    source = textwrap.dedent(PROBES) + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def eevdf_slices() -> bool:
    """Whether this kernel takes a fair task's slice from sched_attr.sched_runtime (Linux 6.12)."""
    major, minor = (int(part) for part in platform.release().split(".")[:2])
    return (major, minor) >= (6, 12)


@needs_linux_x86_64
def test_batch_policy_reaches_every_thread() -> None:
    """Lowering the policy needs no privilege: the kernel always grants it."""
    out = run_python("""
        import threading
        from services.common import runtime
        started, stop = threading.Event(), threading.Event()
        thread = threading.Thread(target=lambda: (started.set(), stop.wait()), daemon=True)
        thread.start(); started.wait()
        print(policies())
        runtime.set_cpu_policy("batch")
        print(policies())
        stop.set()
    """)
    assert out.splitlines() == [str([os.SCHED_OTHER] * 2), str([os.SCHED_BATCH] * 2)]


@needs_linux_x86_64
def test_a_policy_the_sandbox_forbids_leaves_the_service_running_under_the_default() -> None:
    """Documented fallback: where sched_setscheduler is refused, set_cpu_policy
    neither raises nor changes anything, and the service goes on under the
    default policy."""
    out = run_python(f"""
        import threading
        sandbox({SCHED_SETSCHEDULER})
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except PermissionError:
            print("refused")  # the sandbox is in place
        from services.common import runtime
        started, stop = threading.Event(), threading.Event()
        thread = threading.Thread(target=lambda: (started.set(), stop.wait()), daemon=True)
        thread.start(); started.wait()
        runtime.set_cpu_policy("batch")
        print(policies(), sched_attr()[1])
        stop.set()
    """)
    assert out.splitlines() == ["refused", f"{[os.SCHED_OTHER] * 2} 0"]


@needs_linux_x86_64
@pytest.mark.skipif(LINUX_X86_64 and not eevdf_slices(), reason="a fair task's slice is settable from Linux 6.12")
def test_a_short_slice_is_granted_and_takes_effect() -> None:
    out = run_python("""
        from services.common import runtime
        before = sched_attr()
        granted = runtime.set_cpu_slice(250)
        print(granted, before[:2] == sched_attr()[:2], sched_attr()[2])
    """)
    # Granted, policy and nice untouched, the slice 250 µs (not the kernel's 100 µs floor or 3 ms default).
    assert out == "True True 250000"


@needs_linux_x86_64
def test_a_slice_the_kernel_refuses_is_reported_and_changes_nothing() -> None:
    """Documented fallback: False, and the thread keeps the default slice."""
    out = run_python(f"""
        before = sched_attr()
        sandbox({SCHED_SETATTR})
        from services.common import runtime
        print(runtime.set_cpu_slice(100), sched_attr() == before)
    """)
    assert out == "False True"


@needs_linux_x86_64
def test_no_slice_asked_is_no_change() -> None:
    """0 (CPU_SLICE_US's default) asks for nothing: the kernel's default slice stays."""
    out = run_python("""
        from services.common import runtime
        before = sched_attr()
        print(runtime.set_cpu_slice(0), sched_attr() == before)
    """)
    assert out == "False True"


@needs_linux_x86_64
@pytest.mark.parametrize(("policy", "slice_applied"), [("normal", True), ("batch", False)])
def test_run_applies_the_configured_policy_and_slice(policy: str, slice_applied: bool) -> None:
    """``run`` sets CPU_POLICY for the process and, under the normal policy
    only, asks for CPU_SLICE_US; the service's coroutine runs under both."""
    if slice_applied and not eevdf_slices():
        pytest.skip("a fair task's slice is settable from Linux 6.12")
    out = run_python("""
        from services.common import runtime
        default_slice = sched_attr()[2]
        async def main():
            policy, _, slice_ns = sched_attr()
            print(policy, slice_ns if slice_ns != default_slice else "default")
        runtime.run(main, "test", default_loop="asyncio")
    """, CPU_POLICY=policy, CPU_SLICE_US="300", EVENT_LOOP="asyncio")
    expected_policy = {"normal": os.SCHED_OTHER, "batch": os.SCHED_BATCH}[policy]
    assert out == f"{expected_policy} {300_000 if slice_applied else 'default'}"


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
