"""SPEC §24.2 ``function-schema.test.ts``, §24.1 cases 38-41, and the ToolSet / policy cache."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from mana_ai.tools.catalog import CATALOG, PROPOSABLE, PROPOSABLE_NAMES
from mana_ai.tools.schema import (
    ToolSet,
    clear_toolset_cache,
    limit_strings,
    to_function_schema,
    toolset_for_policy,
)
from mana_ai.tools.types import ToolParam, ToolSchema


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_toolset_cache()
    yield
    clear_toolset_cache()


def _tool(*params: ToolParam) -> ToolSchema:
    return ToolSchema(
        name="do_thing", module="m", description="Does a thing.", default_policy="propose", params=params
    )


def test_empty_params_exact_shape() -> None:
    assert to_function_schema(_tool()) == {
        "type": "function",
        "function": {
            "name": "do_thing",
            "description": "Does a thing.",
            "parameters": {"type": "object", "properties": {}, "required": []},
        },
    }


def test_types_mapped_and_required_in_catalog_order() -> None:
    spec = to_function_schema(
        _tool(
            ToolParam("title", "string", True, "Title."),
            ToolParam("count", "number", False, "Count."),
            ToolParam("flag", "boolean", False, "Flag."),
            ToolParam("items", "array", True, "Items."),
            ToolParam("extra", "object", False, "Extra."),
        )
    )
    params = spec["function"]["parameters"]
    assert params["properties"] == {
        "title": {"type": "string", "description": "Title."},
        "count": {"type": "number", "description": "Count."},
        "flag": {"type": "boolean", "description": "Flag."},
        "items": {"type": "array", "description": "Items."},
        "extra": {"type": "object", "description": "Extra."},
    }
    assert params["required"] == ["title", "items"]
    assert list(params["properties"]) == ["title", "count", "flag", "items", "extra"]


def test_enum_preserved_and_absent_when_empty() -> None:
    spec = to_function_schema(
        _tool(
            ToolParam("priority", "string", False, "P.", ("low", "high")),
            ToolParam("x", "string", False, "X."),
        )
    )
    props = spec["function"]["parameters"]["properties"]
    assert props["priority"]["enum"] == ["low", "high"]
    assert "enum" not in props["x"]


def test_unknown_type_raises() -> None:
    bad = _tool(ToolParam("when", "date", True, "When."))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unsupported parameter type"):
        to_function_schema(bad)
    with pytest.raises(ValueError, match="Unsupported parameter type"):
        ToolSet([bad])


def test_whole_catalog_converts() -> None:
    specs = [to_function_schema(t) for t in CATALOG]
    names = [s["function"]["name"] for s in specs]
    assert all(re.fullmatch(r"^[a-z_]+$", n) for n in names)
    assert len(set(names)) == len(names) == 110
    # No nested items/properties in any parameter (SPEC §6.7).
    for s in specs:
        for prop in s["function"]["parameters"]["properties"].values():
            assert set(prop) <= {"type", "description", "enum"}


# SPEC §24.1 cases 38-41 (planner/tools.test.ts), against the default server tool set.
def test_server_tools_are_proposable() -> None:
    server = toolset_for_policy(None)
    assert server.names <= PROPOSABLE_NAMES
    assert PROPOSABLE_NAMES <= server.names
    for tool in server.tools:
        assert tool.name and tool.module and tool.description
        for p in tool.params:
            if p.required:
                assert p.description.strip()


def test_toolset_basics() -> None:
    ts = ToolSet(PROPOSABLE)
    assert ts.tools == PROPOSABLE
    assert len(ts) == 62 and "create_task" in ts and "log_drink" not in ts
    assert ts.by_name["create_task"] is PROPOSABLE[0]
    assert [t.name for t in ts] == [t.name for t in PROPOSABLE]
    assert ts.json == orjson.dumps([to_function_schema(t) for t in PROPOSABLE])
    assert ts.specs == [to_function_schema(t) for t in PROPOSABLE]
    assert repr(ts) == "ToolSet(62 tools)"


def test_toolset_is_immutable_and_specs_are_copies() -> None:
    ts = ToolSet(PROPOSABLE[:2])
    with pytest.raises(AttributeError):
        ts.json = b"[]"
    with pytest.raises(TypeError):
        ts.by_name["x"] = PROPOSABLE[0]  # type: ignore[index]
    specs = ts.specs
    specs[0]["function"]["name"] = "changed"
    assert ts.specs[0]["function"]["name"] == PROPOSABLE[0].name


def test_empty_toolset_json() -> None:
    assert ToolSet([]).json == b"[]"


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ValueError, match="Duplicate"):
        ToolSet([PROPOSABLE[0], PROPOSABLE[0]])


def test_cache_returns_identical_object_for_equal_policies() -> None:
    a: dict[str, Any] = {"tools": {"create_task": "deny"}, "defaultForAi": "propose"}
    b: dict[str, Any] = {"defaultForAi": "propose", "tools": {"create_task": "deny"}}  # other key order
    ts_a = toolset_for_policy(a)
    assert toolset_for_policy(b) is ts_a
    assert "create_task" not in ts_a and len(ts_a) == 61
    assert toolset_for_policy(None) is toolset_for_policy(None)
    assert toolset_for_policy(None) is not ts_a


def test_cache_shares_sets_with_identical_result() -> None:
    # Two different policies that deny nothing among the proposable tools give the same set.
    p1 = {"tools": {"log_drink": "deny"}, "defaultForAi": "propose"}
    p2 = {"tools": {}, "defaultForAi": "auto"}
    assert toolset_for_policy(p1) is toolset_for_policy(p2) is toolset_for_policy(None)


def test_cache_is_keyed_by_tools_identity() -> None:
    subset = PROPOSABLE[:3]
    ts = toolset_for_policy(None, subset)
    assert ts.tools == subset
    assert toolset_for_policy(None, subset) is ts
    assert toolset_for_policy(None) is not ts


def test_cache_is_bounded_and_survives_eviction() -> None:
    first = toolset_for_policy({"tools": {"create_task": "deny"}})
    for i in range(200):
        toolset_for_policy({"tools": {"create_task": "deny"}, "note": i})
    again = toolset_for_policy({"tools": {"create_task": "deny"}})
    assert again.names == first.names


def test_non_json_policy_is_not_cached_but_works() -> None:
    weird: dict[str, Any] = {"tools": {"create_task": "deny"}, "x": object()}
    ts = toolset_for_policy(weird)
    assert "create_task" not in ts


def test_serialisation_happens_once_per_distinct_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    import mana_ai.tools.schema as schema_mod

    calls = 0
    real = schema_mod.to_function_schema

    def counting(tool: ToolSchema) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return real(tool)

    monkeypatch.setattr(schema_mod, "to_function_schema", counting)
    policies = [{"tools": {"create_task": "deny"}}, {"defaultsByModule": {"quiz": "deny"}}, None]
    for i in range(1000):
        toolset_for_policy(policies[i % 3])
    assert calls == 61 + (62 - 5) + 62


def test_max_length_sent_only_when_set() -> None:
    spec = to_function_schema(
        _tool(ToolParam("title", "string", True, "T.", max_length=200), ToolParam("x", "string", False, "X."))
    )
    props = spec["function"]["parameters"]["properties"]
    assert props["title"] == {"type": "string", "description": "T.", "maxLength": 200}
    assert "maxLength" not in props["x"]


def test_limit_strings_bounds_free_form_strings_only() -> None:
    tool = _tool(
        ToolParam("title", "string", True, "T."),
        ToolParam("priority", "string", False, "P.", ("low", "high")),
        ToolParam("code", "string", False, "C.", max_length=8),
        ToolParam("count", "number", False, "N."),
        ToolParam("items", "array", False, "I."),
    )
    limited = limit_strings(ToolSet([tool]), 500)
    props = limited.specs[0]["function"]["parameters"]["properties"]
    assert props["title"]["maxLength"] == 500
    assert props["code"]["maxLength"] == 8  # a smaller limit of the catalog stays
    assert [name for name, p in props.items() if "maxLength" in p] == ["title", "code"]
    assert limited.by_name["do_thing"].params[0].max_length == 500
    assert limited.names == {"do_thing"}


def test_limit_strings_zero_or_no_strings_returns_the_same_set() -> None:
    ts = toolset_for_policy(None)
    assert limit_strings(ts, 0) is ts
    no_strings = ToolSet([_tool(ToolParam("count", "number", True, "N."))])
    assert limit_strings(no_strings, 100) is no_strings


def test_limit_strings_memoised_per_set_and_limit() -> None:
    ts = toolset_for_policy(None)
    first = limit_strings(ts, 300)
    assert first is not ts
    assert limit_strings(ts, 300) is first
    assert limit_strings(ts, 400) is not first
    assert [t.name for t in first] == [t.name for t in ts]
    assert b'"maxLength":300' in first.json
    assert b"maxLength" not in ts.json
