"""Render the repo's nginx.conf for the local stack: same file, local paths.

Each rewrite must find its target; a change to nginx.conf that would silently
stop a rewrite from applying fails here instead of producing a config that
points at /run/rinha.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "nginx.conf"
TEMP_KINDS = ("client-body", "proxy", "fastcgi", "uwsgi", "scgi")


def _replace(text: str, old: str, new: str) -> str:
    if old not in text:
        raise ValueError(f"nginx.conf no longer contains {old!r}; update tools/nginx_conf.py")
    return text.replace(old, new)


def render(run_dir: Path, *, listen_port: int = 9999, error_log: str | None = None) -> str:
    text = SOURCE.read_text()
    text = _replace(text, "unix:/run/rinha/", f"unix:{run_dir}/")
    text = _replace(text, "listen 9999 ", f"listen 127.0.0.1:{listen_port} ")
    text = _replace(text, "pid /run/nginx.pid;", f"pid {run_dir}/nginx.pid;")
    log_path = error_log or run_dir / "logs/nginx-error.log"
    text = _replace(text, "error_log /dev/stderr warn;", f"error_log {log_path} warn;")
    for kind in TEMP_KINDS:
        text = _replace(text, f"/tmp/nginx-{kind};", f"{run_dir}/nginx-tmp/{kind};")
    if os.geteuid() == 0:
        # As root, nginx would drop its worker to "nobody", which cannot reach
        # sockets in a private run directory: keep the worker as root locally.
        text = f"user {pwd.getpwuid(0).pw_name};\n" + text
    return text


FLOOR_LOCATIONS = """location = /payments-summary {
            default_type application/json;
            return 200 '{"default":{"totalRequests":0,"totalAmount":0},"fallback":{"totalRequests":0,"totalAmount":0}}';
        }
        location = /purge-payments { return 200; }
        location = /health { return 200; }
        location / {"""


def render_floor(run_dir: Path, *, listen_port: int = 9999) -> str:
    """The same nginx, answering alone with static responses: the floor that
    k6, the stand-ins and the machine put under any p99 we can measure."""
    text = _replace(render(run_dir, listen_port=listen_port), "location / {", FLOOR_LOCATIONS)
    return _replace(text, "proxy_pass http://payments;", "return 202;")


def write(run_dir: Path, *, floor: bool = False, **kwargs: object) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    for kind in TEMP_KINDS:
        (run_dir / "nginx-tmp" / kind).mkdir(parents=True, exist_ok=True)
    target = run_dir / "nginx.conf"
    text = render_floor(run_dir, **kwargs) if floor else render(run_dir, **kwargs)  # type: ignore[arg-type]
    target.write_text(text)
    return target
