"""Structured logging: one JSON object a line (or readable text on a terminal).

Every record carries ``host`` from a context variable, so every line an actor writes names its
host without passing it around.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from typing import Any

log_host: contextvars.ContextVar[str | None] = contextvars.ContextVar("log_host", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "host", None):
            record.host = log_host.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "host": getattr(record, "host", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(host_part)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        host = getattr(record, "host", None)
        record.host_part = f" [{host}]" if host else ""
        return super().format(record)


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Set up the root logger. ``fmt`` is json, text or auto (text when stderr is a terminal)."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    # Chatty libraries: their INFO lines are per-request noise.
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "hypercorn.access", "psycopg.pool"):
        logging.getLogger(name).setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
