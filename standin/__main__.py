"""``python -m standin --port 8001 --fee 0.05``: one local payment processor."""

from __future__ import annotations

import argparse
import sys

import uvloop
from aiohttp import web

from standin.app import StandinSettings, build_app


def parse_settings(argv: list[str] | None = None) -> tuple[str, int, StandinSettings]:
    defaults = StandinSettings()
    parser = argparse.ArgumentParser(prog="python -m standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--fee", type=float, default=defaults.fee)
    parser.add_argument("--name", default=defaults.name)
    parser.add_argument("--token", default=defaults.token)
    parser.add_argument("--max-running", type=int, default=defaults.max_running)
    parser.add_argument("--max-waiting", type=int, default=defaults.max_waiting)
    parser.add_argument("--health-window", type=float, default=defaults.health_window_seconds,
                        help="seconds per health-check window")
    args = parser.parse_args(argv)
    settings = StandinSettings(name=args.name, fee=args.fee, token=args.token, max_running=args.max_running,
                               max_waiting=args.max_waiting, health_window_seconds=args.health_window)
    return args.host, args.port, settings


def main(argv: list[str] | None = None) -> None:
    host, port, settings = parse_settings(argv)
    print(f"standin {settings.name} (fee {settings.fee}) listening on {host}:{port}", file=sys.stderr, flush=True)
    # handler_cancellation stays off: a payment whose caller hung up must still be stored.
    # The backlog covers a burst of the 800 + 500 connections the processor accepts.
    web.run_app(build_app(settings), host=host, port=port, access_log=None, print=None,
                handle_signals=True, handler_cancellation=False, backlog=2048,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
