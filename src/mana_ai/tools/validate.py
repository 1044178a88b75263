"""Validate a model's tool-call arguments against the catalog schema (SPEC §16.2, W12).

The original server recorded any arguments as a plan step; the web app found the problems only
when it tried to run the step. We check them while the model can still fix them: the problems
are returned as short English sentences and the planner reports them back as a failed tool
result.

Deliberate differences from the web app's executor: no coercion (``"5"`` is not a number and
``"true"`` is not a boolean, because the recorded step must be runnable as it is); ``null`` for
an optional parameter counts as "not given"; an empty or whitespace-only string for a required
parameter counts as missing; unknown parameters are reported; a string longer than the parameter's
``max_length`` (set on the offered tools by ``MANA_LLM_MAX_ARGUMENT_CHARS``) is reported.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mana_ai.tools.injection import is_blank
from mana_ai.tools.types import ToolParam, ToolSchema

__all__ = ["validate_arguments"]

NOT_AN_OBJECT = "Arguments must be a JSON object"


def _type_problem(param: ToolParam, value: Any) -> str | None:
    ok: bool
    if param.type == "string":
        ok = isinstance(value, str)
    elif param.type == "number":
        # bool is an int subclass in Python, but true/false is not a number in JSON.
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif param.type == "boolean":
        ok = isinstance(value, bool)
    elif param.type == "array":
        ok = isinstance(value, list | tuple)
    elif param.type == "object":
        ok = isinstance(value, Mapping)
    else:  # pragma: no cover - the catalog only uses the five JSON types (checked in tests)
        return f"Parameter {param.name} has an unsupported type"
    if ok:
        return None
    article = "an" if param.type in ("array", "object") else "a"
    return f"Parameter {param.name} must be {article} {param.type}"


def validate_arguments(tool: ToolSchema, arguments: Mapping[str, Any] | None) -> list[str]:
    """List the problems of one call's arguments.

    Args:
        tool: the catalog entry of the called tool.
        arguments: the parsed arguments object, or ``None`` when the model did not send a JSON
            object.

    Returns:
        Problems in parameter order (missing, wrong type, not in enum, too long), then unknown parameters
        in the order given; empty when the arguments are valid.
    """
    if not isinstance(arguments, Mapping):
        return [NOT_AN_OBJECT]
    problems: list[str] = []
    known: set[str] = set()
    for param in tool.params:
        known.add(param.name)
        value = arguments.get(param.name)
        if value is None:
            if param.required:
                problems.append(f"Missing required parameter: {param.name}")
            continue
        type_problem = _type_problem(param, value)
        if type_problem is not None:
            problems.append(type_problem)
            continue
        if param.required and isinstance(value, str) and is_blank(value):
            problems.append(f"Missing required parameter: {param.name}")
            continue
        if param.enum and value not in param.enum:
            problems.append("Parameter {} must be one of: {}".format(param.name, ", ".join(param.enum)))
        elif param.max_length is not None and isinstance(value, str) and len(value) > param.max_length:
            problems.append(f"Parameter {param.name} must be at most {param.max_length} characters")
    for name in arguments:
        if name not in known:
            problems.append(f"Unknown parameter: {name}")
    return problems
