"""Structured logging: one line per event, with the incident / call id bound to every line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["ContextLogger", "bind", "setup_logging"]

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "ctx"}


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds fixed context (incident=…, call=…) and per-call `extra` to each line."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        ctx = dict(self.extra or {})
        ctx.update(kwargs.pop("extra", None) or {})
        kwargs["extra"] = {"ctx": ctx}
        return msg, kwargs

    def bind(self, **ctx: object) -> ContextLogger:
        return ContextLogger(self.logger, {**(self.extra or {}), **ctx})


def bind(logger: logging.Logger | str, **ctx: object) -> ContextLogger:
    """Return `logger` with `ctx` on every line it writes."""
    base = logging.getLogger(logger) if isinstance(logger, str) else logger
    return ContextLogger(base, ctx)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    ctx: dict[str, Any] = dict(getattr(record, "ctx", {}) or {})
    for k, v in vars(record).items():
        if k not in _RESERVED and not k.startswith("_"):
            ctx.setdefault(k, v)
    return ctx


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(_context(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _kv(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (not text or any(c in text for c in ' ="\n')) else text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        parts = [ts, record.levelname.lower(), record.name, record.getMessage()]
        parts += [f"{k}={_kv(v)}" for k, v in _context(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Configure the root logger once for a process (CLI commands and `serve`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter at INFO would drown the one-line-per-event log.
    for noisy in ("sqlalchemy", "aiosqlite", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
