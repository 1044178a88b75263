"""Argument validation against the catalog schema."""

from __future__ import annotations

from typing import Any

import pytest

from mana_ai.tools.catalog import CATALOG_BY_NAME
from mana_ai.tools.schema import ToolSet, limit_strings
from mana_ai.tools.validate import validate_arguments

T = CATALOG_BY_NAME


def test_valid_arguments() -> None:
    assert validate_arguments(T["create_task"], {"title": "Buy milk", "priority": "high"}) == []
    assert validate_arguments(T["stop_timer"], {}) == []
    assert validate_arguments(T["create_place"], {"name": "Home", "latitude": 47.3, "longitude": 8}) == []
    assert validate_arguments(T["import_articles_from_urls"], {"urls": ["https://a.example"]}) == []
    assert validate_arguments(T["update_website_block"], {"blockId": "b1", "patch": {"title": "x"}}) == []
    assert validate_arguments(T["list_notes"], {"includeArchived": False, "limit": 0}) == []


@pytest.mark.parametrize("arguments", [None, [], "x", 3])
def test_not_an_object(arguments: Any) -> None:
    assert validate_arguments(T["create_task"], arguments) == ["Arguments must be a JSON object"]


def test_missing_required() -> None:
    assert validate_arguments(T["create_event"], {"title": "x"}) == [
        "Missing required parameter: startTime",
        "Missing required parameter: endTime",
    ]


@pytest.mark.parametrize("title", ["", "   ", "\n\t", None])
def test_empty_required_string_counts_as_missing(title: Any) -> None:
    assert validate_arguments(T["create_task"], {"title": title}) == ["Missing required parameter: title"]


def test_empty_optional_string_is_fine() -> None:
    assert validate_arguments(T["create_task"], {"title": "x", "description": ""}) == []


def test_null_optional_counts_as_absent() -> None:
    assert validate_arguments(T["create_task"], {"title": "x", "dueDate": None}) == []


@pytest.mark.parametrize("value", ["5", True, False, float("nan"), float("inf"), None, [1]])
def test_number_type(value: Any) -> None:
    problems = validate_arguments(T["log_drink"], {"drinkType": "water", "quantityMl": value})
    expected = (
        "Missing required parameter: quantityMl" if value is None else "Parameter quantityMl must be a number"
    )
    assert problems == [expected]


@pytest.mark.parametrize("value", ["true", 1, 0])
def test_boolean_type(value: Any) -> None:
    assert validate_arguments(T["list_notes"], {"includeArchived": value}) == [
        "Parameter includeArchived must be a boolean"
    ]


def test_string_array_object_types() -> None:
    assert validate_arguments(T["create_task"], {"title": 42}) == ["Parameter title must be a string"]
    assert validate_arguments(T["import_articles_from_urls"], {"urls": "https://a"}) == [
        "Parameter urls must be an array"
    ]
    assert validate_arguments(T["update_website_block"], {"blockId": "b", "patch": "x"}) == [
        "Parameter patch must be an object"
    ]


def test_enum_mismatch() -> None:
    assert validate_arguments(T["create_task"], {"title": "x", "priority": "urgent"}) == [
        "Parameter priority must be one of: low, medium, high"
    ]
    assert validate_arguments(T["add_transaction"], {"type": "gift", "amount": 3, "description": "x"}) == [
        "Parameter type must be one of: income, expense"
    ]


def test_enum_is_case_sensitive_and_unicode_exact() -> None:
    tool = T["create_journal_entry"]
    assert validate_arguments(tool, {"content": "x", "mood": "glücklich"}) == []
    assert validate_arguments(tool, {"content": "x", "mood": "Glücklich"}) != []


def test_unknown_parameters_reported_after_param_problems() -> None:
    assert validate_arguments(T["complete_task"], {"id": "t1", "force": True}) == [
        "Missing required parameter: taskId",
        "Unknown parameter: id",
        "Unknown parameter: force",
    ]


def test_string_longer_than_its_limit() -> None:
    tool = limit_strings(ToolSet([T["create_task"]]), 10).by_name["create_task"]
    assert validate_arguments(tool, {"title": "x" * 10, "priority": "high"}) == []
    assert validate_arguments(tool, {"title": "x" * 11, "description": "ü" * 10}) == [
        "Parameter title must be at most 10 characters"
    ]
    # The catalog itself sets no limit: edits in the workbench are validated against it.
    assert validate_arguments(T["create_task"], {"title": "x" * 5000}) == []
