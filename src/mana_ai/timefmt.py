"""Timestamps as the mana web app writes them.

The sync log compares timestamps as strings, so every timestamp we write must look exactly like
JavaScript's ``Date.prototype.toISOString()``: ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds).
"""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(UTC)


def to_js_iso(value: dt.datetime) -> str:
    """Format like JS ``toISOString()`` (naive datetimes are taken as UTC): milliseconds truncated, the year
    always four digits (``0999-…``), as JavaScript writes it."""
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_iso(value: str) -> dt.datetime:
    """Parse an ISO-8601 timestamp (``Z`` or offset; a missing offset means UTC).

    Raises:
        ValueError: when the text is not a timestamp.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
JS_ISO_SHAPE = b"0000-00-00T00:00:00.000Z"
"""What a JS ``toISOString()`` timestamp becomes with every ASCII digit turned into ``0``."""


def js_iso_shape(value: str) -> bytes:
    """``value`` as UTF-8 with every ASCII digit turned into ``0``: one C-level pass, several times cheaper
    than a regular expression; compare it with :data:`JS_ISO_SHAPE` (or several joined)."""
    return value.encode("utf-8", "surrogatepass").translate(_DIGITS_AS_ZERO)


def is_js_iso(value: str) -> bool:
    """True when ``value`` already has the exact JS ``toISOString()`` form, ASCII digits only (the common
    case: cheap)."""
    return len(value) == 24 and js_iso_shape(value) == JS_ISO_SHAPE


def normalize_iso(value: str) -> str:
    """Re-format any ISO timestamp in the JS form, so string comparison orders correctly.

    Raises:
        ValueError: when the text is not a timestamp.
    """
    if is_js_iso(value):
        return value
    return to_js_iso(parse_iso(value))
