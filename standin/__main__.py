"""``python -m standin --port 8001 --fee 0.05``: one local payment processor."""

from __future__ import annotations

import argparse
import sys

import uvloop
from aiohttp import web

from standin.app import StandinSettings, build_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m standin")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--fee", type=float, default=0.05)
    parser.add_argument("--name", default="default")
    parser.add_argument("--token", default="123")
    parser.add_argument("--health-window", type=float, default=5.0)
    args = parser.parse_args()
    settings = StandinSettings(name=args.name, fee=args.fee, token=args.token,
                               health_window_seconds=args.health_window)
    print(f"standin {args.name} (fee {args.fee}) on {args.host}:{args.port}", file=sys.stderr, flush=True)
    uvloop.install()
    web.run_app(build_app(settings), host=args.host, port=args.port, access_log=None,
                print=None, handle_signals=True)


if __name__ == "__main__":
    main()
