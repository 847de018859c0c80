"""Process logging: text or JSON lines, each carrying the transaction id of the request or
activation it belongs to.

The controller sets `TRANSACTION` when it accepts a request, the invoker and scheduler when
they handle an activation (its message carries the id the controller gave it); asyncio copies
the context into every task started from there, so a log line written anywhere on the way
carries the id without passing it around. Setting it is one ContextVar.set on the hot path.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

from squall.config import LogSettings

TRANSACTION: ContextVar[str | None] = ContextVar("squall_transaction", default=None)
# The drivers Squall reports for: their own per-attempt lines would repeat what readiness and
# the store adapters say once per change.
_QUIETED = {"psycopg.pool": logging.ERROR, "httpx": logging.WARNING}


class TransactionFilter(logging.Filter):
    """Adds `tid` (the current transaction id, or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.tid = TRANSACTION.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, tid, and the error if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        tid = getattr(record, "tid", None)
        if tid:
            entry["tid"] = tid
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with `[tid ...]` when the line belongs to a transaction."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tid = getattr(record, "tid", None)
        return f"{line} [tid {tid}]" if tid else line


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure(settings: LogSettings) -> None:
    """Root logging for a server process, as `SQUALL_LOG_FORMAT` and `SQUALL_LOG_LEVEL` say."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(TransactionFilter())
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level)
    for name, level in _QUIETED.items():
        logging.getLogger(name).setLevel(level)
