"""Function-calling schemas for the catalog and the immutable offered tool set (SPEC §6.7, §10).

``to_function_schema`` converts one catalog entry into the OpenAI ``tools`` wire shape.
``ToolSet`` is what one planner run offers the model: the tools, a by-name index, and the
``tools`` array serialised once with orjson. The LLM client splices ``ToolSet.json`` into every
request body, so the catalog is never re-encoded per request.

``toolset_for_policy`` memoises tool sets per (agent policy, candidate tools): a tick with
thousands of missions but a handful of distinct agent policies builds a handful of tool sets.
The memo is bounded and holds only immutable values, so sharing it between missions is safe.

``limit_strings`` gives every free-form string parameter a ``maxLength`` (``MANA_LLM_MAX_ARGUMENT_CHARS``).
Servers that constrain tool-call arguments with a grammar built from the schema (llama-cpp-python's,
llama.cpp's) then cannot write a string without end; without it, a small model that starts repeating
itself inside a string keeps the server busy until its context window is full, whatever ``max_tokens``
says (see the README's "LLM servers").
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import orjson

from mana_ai.tools.catalog import CATALOG, PROPOSABLE
from mana_ai.tools.policy import filter_tools, promoted_tools
from mana_ai.tools.types import ToolSchema

__all__ = ["ToolSet", "clear_toolset_cache", "limit_strings", "to_function_schema", "toolset_for_policy"]

_JSON_TYPES = frozenset({"string", "number", "boolean", "array", "object"})

_CACHE_SIZE = 64
"""Distinct (policy, tools) pairs kept; agent policies rarely differ, so this is generous."""


def to_function_schema(tool: ToolSchema) -> dict[str, Any]:
    """Convert a catalog entry to an OpenAI function-calling tool spec.

    Args:
        tool: the catalog entry.

    Returns:
        ``{"type": "function", "function": {"name", "description", "parameters": {"type":
        "object", "properties": {...}, "required": [...]}}}``; each property has ``type`` and
        ``description``, plus ``enum`` only when the parameter has allowed values and ``maxLength``
        only when it has a length limit; ``required`` lists required parameter names in catalog order.

    Raises:
        ValueError: a parameter type is not one of string, number, boolean, array, object.
    """
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in tool.params:
        if param.type not in _JSON_TYPES:
            raise ValueError(
                f"Unsupported parameter type in tool catalog: {tool.name}.{param.name} has type {param.type!r}"
            )
        prop: dict[str, Any] = {"type": param.type, "description": param.description}
        if param.enum:
            prop["enum"] = list(param.enum)
        if param.max_length is not None:
            prop["maxLength"] = param.max_length
        properties[param.name] = prop
        if param.required:
            required.append(param.name)
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


class ToolSet:
    """An immutable set of tools offered to the model in one planner run.

    Attributes:
        tools: the tools in catalog order.
        by_name: read-only index by tool name.
        json: the ``tools`` array of function schemas, serialised once with orjson (``b"[]"`` when
            empty); pass it to ``LlmClient.complete(tools_json=...)``.
    """

    __slots__ = ("_specs", "by_name", "json", "tools")

    tools: tuple[ToolSchema, ...]
    by_name: Mapping[str, ToolSchema]
    json: bytes
    _specs: tuple[dict[str, Any], ...]

    def __init__(self, tools: Sequence[ToolSchema]) -> None:
        """Build the set and serialise its schemas.

        Args:
            tools: the tools to offer; names must be unique.

        Raises:
            ValueError: duplicate tool names, or a parameter type the wire format cannot express.
        """
        tools_t = tuple(tools)
        by_name = {t.name: t for t in tools_t}
        if len(by_name) != len(tools_t):
            raise ValueError("Duplicate tool names in tool set")
        specs = tuple(to_function_schema(t) for t in tools_t)
        object.__setattr__(self, "tools", tools_t)
        object.__setattr__(self, "by_name", MappingProxyType(by_name))
        object.__setattr__(self, "_specs", specs)
        object.__setattr__(self, "json", orjson.dumps(list(specs)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ToolSet is immutable")

    @property
    def specs(self) -> list[dict[str, Any]]:
        """The function schemas as a fresh list of fresh dicts (callers may mutate them)."""
        specs: list[dict[str, Any]] = orjson.loads(self.json)
        return specs

    @property
    def names(self) -> frozenset[str]:
        """The offered tool names."""
        return frozenset(self.by_name)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self) -> Iterator[ToolSchema]:
        return iter(self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    def __repr__(self) -> str:
        return f"ToolSet({len(self.tools)} tools)"


_lock = threading.Lock()
# key: (canonical policy JSON, id(tools)) -> (tools, ToolSet); the tools object is kept in the
# value so its id cannot be reused by another object while the entry lives.
_by_policy: OrderedDict[tuple[bytes, int], tuple[Sequence[ToolSchema], ToolSet]] = OrderedDict()
# Different policies often filter to the same tools (e.g. only auto tools denied): share one set.
_by_tools: OrderedDict[tuple[ToolSchema, ...], ToolSet] = OrderedDict()


def _canonical(policy: Mapping[str, Any] | None) -> bytes | None:
    if policy is None:
        return b"null"
    try:
        return orjson.dumps(policy, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return None  # not JSON-shaped: compute without caching


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def toolset_for_policy(policy: Mapping[str, Any] | None, tools: Sequence[ToolSchema] = PROPOSABLE) -> ToolSet:
    """Return the tool set an agent's policy allows, memoised.

    Equal policies (compared as canonical JSON) over the same ``tools`` object return the
    identical ``ToolSet``, so its JSON is encoded once per distinct policy, not per mission.

    Args:
        policy: the agent's ``AiPolicy`` JSON; ``None`` (no agent / no policy) offers every tool.
        tools: candidate tools, by default the proposable tools of the catalog.

    Returns:
        The offered tool set (never raises for malformed policies; see ``tools.policy``).
    """
    canonical = _canonical(policy)
    key = (canonical, id(tools)) if canonical is not None else None
    if key is not None:
        with _lock:
            hit = _by_policy.get(key)
            if hit is not None and hit[0] is tools:
                _by_policy.move_to_end(key)
                return hit[1]
    kept = filter_tools(tools, policy)
    if tools is PROPOSABLE:
        promoted = promoted_tools(CATALOG, policy)
        if promoted:
            order = {t.name: i for i, t in enumerate(CATALOG)}
            kept = tuple(sorted((*kept, *promoted), key=lambda t: order[t.name]))
    with _lock:
        toolset = _by_tools.get(kept)
        if toolset is None:
            toolset = ToolSet(kept)
        _remember(_by_tools, kept, toolset)
        if key is not None:
            _remember(_by_policy, key, (tools, toolset))
    return toolset


# key: (tool set, limit); the key holds the tool set itself, so its id cannot be reused meanwhile.
_limited: OrderedDict[tuple[ToolSet, int], ToolSet] = OrderedDict()


def limit_strings(toolset: ToolSet, max_chars: int) -> ToolSet:
    """The same tools, each free-form string parameter limited to ``max_chars`` characters (memoised).

    A parameter with an ``enum`` is bounded already and stays as it is; a smaller existing limit is kept.

    Args:
        toolset: the tools to limit.
        max_chars: the longest string argument; 0 (or less) means no limit.

    Returns:
        ``toolset`` itself when ``max_chars`` is 0 or nothing changes, else a new set with the same tools
        in the same order (the same one for the same arguments).
    """
    if max_chars <= 0:
        return toolset
    key = (toolset, max_chars)
    with _lock:
        hit = _limited.get(key)
        if hit is not None:
            _limited.move_to_end(key)
            return hit
    tools = tuple(_limit_tool(tool, max_chars) for tool in toolset.tools)
    limited = toolset if tools == toolset.tools else ToolSet(tools)
    with _lock:
        _remember(_limited, key, limited)
    return limited


def _limit_tool(tool: ToolSchema, max_chars: int) -> ToolSchema:
    params = tuple(
        dataclasses.replace(p, max_length=min(p.max_length or max_chars, max_chars))
        if p.type == "string" and not p.enum
        else p
        for p in tool.params
    )
    return tool if params == tool.params else dataclasses.replace(tool, params=params)


def clear_toolset_cache() -> None:
    """Forget all memoised tool sets (for tests)."""
    with _lock:
        _by_policy.clear()
        _by_tools.clear()
        _limited.clear()
