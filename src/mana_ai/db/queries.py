"""Named SQL queries, loaded once from ``sql/queries.sql``.

Each query starts with ``-- name: <name>`` followed by a description comment and the statement. Only the
store modules use these names; business code never builds SQL.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import LiteralString, cast

_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    text = (resources.files("mana_ai.db") / "sql" / "queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise RuntimeError(f"duplicate query name {name!r} in queries.sql")
        queries[name] = body.strip()
    return queries


def q(name: str) -> LiteralString:
    """The SQL of one named query (``KeyError`` for an unknown name: a programming error)."""
    # The text comes from our package file, never from input, so it is as safe as a literal.
    return cast(LiteralString, _load()[name])  # type: ignore[redundant-cast]


def names() -> list[str]:
    return sorted(_load())
