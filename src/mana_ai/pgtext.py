"""What Postgres text and jsonb cannot hold: the NUL character (``\\u0000``).

JSON allows it and orjson decodes it, so a value from outside (a request body, a model's answer) may carry
one; a statement storing it fails. Pure helpers over decoded JSON values (dicts, lists, strings, scalars).
"""

from __future__ import annotations

from typing import Any

NUL = "\x00"
ESCAPED_NUL = b"\\u0000"
"""How a NUL appears in JSON text (also inside a JSON string nested in a string, e.g. tool arguments)."""


def has_nul(value: Any) -> bool:
    """Whether any string in ``value``, keys included, holds a NUL character."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def without_nul(value: Any) -> Any:
    """``value`` with every NUL character removed from its strings, keys included (a copy where needed)."""
    if isinstance(value, str):
        return value.replace(NUL, "") if NUL in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value
