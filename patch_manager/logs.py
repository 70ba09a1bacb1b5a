"""Structured logging: one JSON object a line (or readable text on a terminal).

Every record written inside a host actor's tasks carries ``host_id`` and ``host`` (its name)
from the actor's context variable (``actors.host.log_host``), so every line an actor writes
names its host without passing it around. The level follows ``logging.level`` on every
configuration reload (SIGHUP, file change) and can be set at run time (``set_level``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from actors.host import log_host
from settings import ConfigStore

log = logging.getLogger(__name__)
LEVELS = ("debug", "info", "warning", "error")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class ContextFilter(logging.Filter):
    """Adds the current host actor's ``host_id`` and ``host`` to a record (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = log_host.get()
        if getattr(record, "host_id", None) is None:
            record.host_id = context[0] if context else None
        if not getattr(record, "host", None):
            record.host = context[1] if context else None
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
            "host_id": getattr(record, "host_id", None),
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
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    # Chatty libraries: their INFO lines are per-request noise.
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "hypercorn.access", "psycopg.pool"):
        logging.getLogger(name).setLevel(logging.WARNING)


def set_level(level: str) -> None:
    """Set the root logger's level (one of ``LEVELS``); ValueError for anything else."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    logging.getLogger().setLevel(level.upper())


def current_level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()


async def follow_config(store: ConfigStore) -> None:
    """Apply ``logging.level`` whenever a reload changes it (a level set at run time or on the
    command line stays until the file's value changes). Runs until cancelled."""
    version, level = store.version, store.current.logging.level
    while True:
        version, config = await store.wait_changed(version)
        if config.logging.level != level:
            level = config.logging.level
            set_level(level)
            log.warning("log level is now %s (configuration reload)", level)
