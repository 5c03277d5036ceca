"""Structured logs: one JSON object per line on stderr, quiet by default."""

from __future__ import annotations

import logging
import sys

import orjson

from services.common.config import ConfigError, env_str

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def level() -> str:
    """``LOG_LEVEL``, any case; a name logging does not know is a configuration error."""
    value = env_str("LOG_LEVEL", "INFO").upper()
    if value not in LEVELS:
        raise ConfigError(f"LOG_LEVEL={value!r} must be one of: {', '.join(LEVELS)}")
    return value


def setup(service: str) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level())
    return logging.getLogger(service)


def fields(**values: object) -> dict[str, dict[str, object]]:
    """``log.info("msg", extra=fields(k=v))`` attaches k=v to the JSON line."""
    return {"fields": values}
