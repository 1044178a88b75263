"""Turning the workbench's HTML forms into tool arguments, agent policies and mission fields (pure).

Form values are strings; tool arguments must be typed JSON (SPEC §16.2: the recorded step must be runnable as
it is). Each parameter gets one form field ``param.<name>``; a value that does not parse as its type is passed
on unchanged so that :func:`~mana_ai.tools.validate.validate_arguments` reports it, in the same words the
planner's model gets. Empty fields mean "not given".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from mana_ai.cli.records import DEFAULT_POLICY_DECISION, InvalidOption, cadence_from_options, parse_input_ref
from mana_ai.scheduler.cadence import Cadence
from mana_ai.tools.catalog import CATALOG_BY_NAME, MODULES
from mana_ai.tools.types import ToolSchema

PARAM_PREFIX: Final = "param."
DECISIONS: Final = ("auto", "propose", "deny")
_INT: Final = re.compile(r"^-?\d+$")


def _typed(kind: str, raw: str) -> Any:
    text = raw.strip()
    if kind == "number":
        try:
            return int(text) if _INT.match(text) else float(text)
        except ValueError:
            return raw
    if kind == "boolean":
        return {"true": True, "false": False, "on": True}.get(text.lower(), raw)
    if kind in ("array", "object"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return raw
    return raw


def params_from_form(tool: ToolSchema, form: Mapping[str, Any]) -> dict[str, Any]:
    """The tool arguments the edit form describes (``param.<name>`` fields; unknown ones are kept as text)."""
    kinds = {p.name: p.type for p in tool.params}
    out: dict[str, Any] = {}
    for key, value in form.items():
        if not key.startswith(PARAM_PREFIX) or not isinstance(value, str):
            continue
        name = key[len(PARAM_PREFIX) :]
        if value.strip() == "":
            continue
        kind = kinds.get(name, "string")
        out[name] = value if kind == "string" else _typed(kind, value)
    return out


def field_value(kind: str, value: Any) -> str:
    """A planned argument as the text shown in its form field."""
    if value is None:
        return ""
    if kind in ("array", "object") or not isinstance(value, str | int | float | bool):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def policy_from_form(form: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's ``AiPolicy`` from ``module.<name>`` selects, ``tool_overrides`` lines and ``default_for_ai``.

    Raises:
        InvalidOption: an unknown tool or decision in the overrides.
    """
    modules: dict[str, str] = {}
    for module in MODULES:
        value = form.get("module." + module)
        if isinstance(value, str) and value in DECISIONS:
            modules[module] = value
    tools: dict[str, str] = {}
    overrides = form.get("tool_overrides")
    for line in (overrides if isinstance(overrides, str) else "").splitlines():
        if not line.strip():
            continue
        name, sep, decision = line.partition("=")
        name, decision = name.strip(), decision.strip()
        if not sep or name not in CATALOG_BY_NAME or decision not in DECISIONS:
            raise InvalidOption(
                "tool override " + repr(line.strip()[:80]) + " must look like <tool>=auto|propose|deny"
            )
        tools[name] = decision
    default = form.get("default_for_ai")
    return {
        "tools": tools,
        "defaultsByModule": modules,
        "defaultForAi": default
        if isinstance(default, str) and default in DECISIONS
        else DEFAULT_POLICY_DECISION,
    }


def overrides_text(policy: Any) -> str:
    tools = policy.get("tools") if isinstance(policy, Mapping) else None
    if not isinstance(tools, Mapping):
        return ""
    return "\n".join(str(k) + "=" + str(v) for k, v in sorted(tools.items()))


def cadence_from_form(form: Mapping[str, Any]) -> Cadence:
    """The cadence of the mission form: ``cadence`` (manual/every/daily/weekly/cron), ``cadence_value``, ``tz``.

    Raises:
        InvalidOption: malformed value. InvalidCadence: out of range, bad cron, unknown zone.
    """
    kind = str(form.get("cadence") or "manual")
    value = str(form.get("cadence_value") or "").strip()
    tz = str(form.get("tz") or "").strip() or None
    if kind != "manual" and not value:
        raise InvalidOption("the " + kind + " cadence needs a value (e.g. 30m, 07:30, mon@09, 0 8 * * 1-5)")
    options: dict[str, Any] = {"timezone": tz}
    if kind in ("every", "daily", "weekly", "cron"):
        options[kind] = value
    elif kind != "manual":
        raise InvalidOption("unknown cadence " + repr(kind))
    else:
        options["manual"] = True
    return cadence_from_options(**options)


def cadence_fields(cadence: Any) -> tuple[str, str, str]:
    """``(kind, value, tz)`` of a synced cadence for the edit form."""
    if not isinstance(cadence, Mapping):
        return "manual", "", ""
    tz = str(cadence.get("timezone") or "")
    kind = cadence.get("kind")
    if kind == "interval":
        return "every", str(cadence.get("everyMinutes", "")) + "m", tz
    if kind == "daily":
        return "daily", f"{int(cadence.get('atHour', 0)):02d}:{int(cadence.get('atMinute', 0)):02d}", tz
    if kind == "weekly":
        return "weekly", str(cadence.get("dayOfWeek", 1)) + "@" + f"{int(cadence.get('atHour', 0)):02d}", tz
    if kind == "cron":
        return "cron", str(cadence.get("expression", "")), tz
    return "manual", "", tz


def inputs_from_text(text: str) -> list[dict[str, str]]:
    """Mission inputs from ``<table>:<id>`` lines.

    Raises:
        InvalidOption: an unknown table or a missing id.
    """
    return [parse_input_ref(line) for line in text.splitlines() if line.strip()]


def inputs_text(inputs: Any) -> str:
    items: Iterable[Any] = inputs if isinstance(inputs, list) else []
    return "\n".join(
        str(i.get("table")) + ":" + str(i.get("id"))
        for i in items
        if isinstance(i, Mapping) and i.get("table")
    )


def optional_int(value: Any, name: str, *, minimum: int = 0) -> int | None:
    """An optional whole number from a form field.

    Raises:
        InvalidOption: not a whole number, or below ``minimum``.
    """
    text = str(value or "").strip()
    if not text:
        return None
    if not _INT.match(text) or int(text) < minimum:
        raise InvalidOption(name + " must be a whole number of at least " + str(minimum))
    return int(text)
