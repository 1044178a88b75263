"""The shape of a tool in the catalog (SPEC §6.7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ParamType = Literal["string", "number", "boolean", "array", "object"]
PolicyDecision = Literal["auto", "propose", "deny"]


@dataclass(frozen=True, slots=True)
class ToolParam:
    """One parameter of a tool."""

    name: str
    type: ParamType
    required: bool
    description: str
    enum: tuple[str, ...] = ()
    """Allowed values; empty means any value of ``type``."""
    max_length: int | None = None
    """Longest allowed string in characters (JSON Schema ``maxLength``); ``None``: no limit."""


@dataclass(frozen=True, slots=True)
class ToolSchema:
    """One tool of the catalog: what the model may call and how the web app runs it."""

    name: str
    module: str
    description: str
    default_policy: Literal["auto", "propose"]
    params: tuple[ToolParam, ...] = field(default=())
