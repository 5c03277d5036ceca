"""Settings from environment variables, validated at start-up.

Each service declares one frozen dataclass and builds it with the readers here;
a bad value raises ``ConfigError`` naming the variable, and ``main`` turns that
into a one-line message and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot run with."""


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def env_str(name: str, default: str) -> str:
    return _raw(name) or default


def env_int(name: str, default: int, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    _check_range(name, value, minimum, maximum)
    return value


def env_float(name: str, default: float, *, minimum: float | None = None,
              maximum: float | None = None) -> float:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}={raw!r} is not a finite number")
    _check_range(name, value, minimum, maximum)
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _raw(name)
    if raw is None:
        return default
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw


def env_url(name: str, default: str) -> str:
    """A plain ``http://host[:port]`` URL (the processors speak no TLS)."""
    value = env_str(name, default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme != "http" or not parts.hostname or parts.path:
        raise ConfigError(f"{name}={value!r} must be an http://host[:port] URL")
    check_port(name, value)
    return value


def check_port(name: str, url: str) -> None:
    """``url``'s port, if it has one, is a number from 0 to 65535 (urlsplit
    checks it only when it is read)."""
    try:
        urlsplit(url).port  # noqa: B018 (read for its check)
    except ValueError:
        raise ConfigError(f"{name}={url!r} has an invalid port") from None


def _check_range(name: str, value: float, minimum: float | None,
                 maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} must be at most {maximum}")


def load_or_exit(loader: Callable[[], T], service: str) -> T:
    """Build settings or stop the process with a clear message."""
    try:
        return loader()
    except ConfigError as exc:
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
