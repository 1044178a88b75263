"""The server-side tool-call handler: record valid calls as plan steps (SPEC §5 step 12, §6.9, W12).

mana-ai never executes a tool: it records what the planner wants done and the web app applies
the steps later. The original recorded every call unchecked, so hallucinated tool names,
policy-denied tools and malformed arguments ended up in plans (W12). ``PlanRecorder`` checks
each call first and answers the model with a failed result it can act on:

1. the tool must be in the offered ``ToolSet`` (which already excludes policy-denied tools);
2. the arguments must be a JSON object valid for the tool's schema;
3. unless ``policy_mode == "off"``, the arguments are scanned for instruction-injection
   markers; a hit is logged (never the argument values) and, in ``enforce`` mode, the call is
   dropped.

The recorder never raises: any failure becomes a ``ToolResult(success=False)``. It keeps the
rejected and flagged calls so the runner can count them in its metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mana_ai.planner.types import ToolCall, ToolResult
from mana_ai.tools.injection import detect_injection_marker
from mana_ai.tools.schema import ToolSet
from mana_ai.tools.validate import validate_arguments

__all__ = ["PlanRecorder", "PlannedStep", "PolicyMode"]

logger = logging.getLogger(__name__)

PolicyMode = Literal["off", "log-only", "enforce"]

RECORDED_MESSAGE = "recorded — pending client application"
INJECTION_DROPPED_MESSAGE = "Call dropped by policy: the arguments contain an instruction-injection marker."
NOT_AN_OBJECT_MESSAGE = (
    "The arguments were not a valid JSON object. Call the tool again with a JSON object of its parameters."
)
INTERNAL_ERROR_MESSAGE = "The call could not be recorded because of an internal error."


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One recorded step of a server plan (SPEC §6.3 ``PlannedStep``)."""

    summary: str
    tool_name: str
    params: dict[str, Any]
    rationale: str = ""

    def to_json(self) -> dict[str, Any]:
        """The step in the web app's wire shape ``{summary, toolName, params, rationale}``."""
        return {
            "summary": self.summary,
            "toolName": self.tool_name,
            "params": self.params,
            "rationale": self.rationale,
        }


@dataclass(eq=False)
class PlanRecorder:
    """Callable ``on_tool_call`` for the planner loop.

    Attributes:
        toolset: the tools offered to the model in this run.
        policy_mode: ``off`` skips the injection scan; ``log-only`` logs hits and still records;
            ``enforce`` logs hits and drops the call.
        mission_id: included in log records.
        steps: recorded steps in call order.
        rejected: calls answered with a failure, with the reason sent to the model.
        flagged: calls whose arguments matched an injection marker, with the marker (also
            present in ``rejected`` when ``policy_mode == "enforce"``).
    """

    toolset: ToolSet
    policy_mode: PolicyMode
    mission_id: str | None = None
    steps: list[PlannedStep] = field(default_factory=list)
    rejected: list[tuple[ToolCall, str]] = field(default_factory=list)
    flagged: list[tuple[ToolCall, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy_mode not in get_args(PolicyMode):
            raise ValueError(f"Unknown policy mode: {self.policy_mode!r}")

    async def __call__(self, call: ToolCall) -> ToolResult:
        """Check one tool call and record it when it is acceptable.

        Args:
            call: the call as the model sent it.

        Returns:
            ``ToolResult(True, "recorded — pending client application")`` for a recorded step,
            otherwise a failed result whose message tells the model what to fix.
        """
        try:
            return self.record(call)
        except Exception:
            # Defensive: the loop contract says on_tool_call never raises.
            logger.exception(
                "Recording a tool call failed",
                extra={"action": "planner.record_error", "tool": call.name, "mission_id": self.mission_id},
            )
            return self._reject(call, INTERNAL_ERROR_MESSAGE)

    def record(self, call: ToolCall) -> ToolResult:
        """Synchronous core of ``__call__`` (same contract, but may raise on internal bugs)."""
        tool = self.toolset.by_name.get(call.name)
        if tool is None:
            return self._reject(call, f"Unknown tool: {call.name}. Use only the tools offered as functions.")
        arguments = call.arguments
        if not isinstance(arguments, dict):
            return self._reject(call, NOT_AN_OBJECT_MESSAGE)
        problems = validate_arguments(tool, arguments)
        if problems:
            return self._reject(
                call,
                "Invalid arguments for {}: {}. Fix them and call the tool again.".format(
                    call.name, "; ".join(problems)
                ),
            )
        if self.policy_mode != "off":
            marker = detect_injection_marker(arguments)
            if marker is not None:
                self.flagged.append((call, marker))
                logger.warning(
                    "Tool call arguments contain an instruction-injection marker",
                    extra={
                        "action": "policy.injection_flag",
                        "tool": call.name,
                        "mission_id": self.mission_id,
                        "marker": marker,
                        "policy_mode": self.policy_mode,
                    },
                )
                if self.policy_mode == "enforce":
                    return self._reject(call, INJECTION_DROPPED_MESSAGE)
        # Optional parameters sent as null mean "not given"; the web app expects them absent.
        params = {k: v for k, v in arguments.items() if v is not None}
        self.steps.append(PlannedStep(summary=call.name, tool_name=call.name, params=params))
        return ToolResult(True, RECORDED_MESSAGE)

    def _reject(self, call: ToolCall, reason: str) -> ToolResult:
        self.rejected.append((call, reason))
        logger.info(
            "Tool call rejected",
            extra={"action": "planner.tool_call_rejected", "tool": call.name, "mission_id": self.mission_id},
        )
        return ToolResult(False, reason)
