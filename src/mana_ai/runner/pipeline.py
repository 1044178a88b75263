"""Planning one mission: inputs → prompt → tool set → planner loop → validated plan (SPEC §5).

Pure orchestration over the context's ports; it never writes to the database (the caller writes back) and
never raises for an expected failure: every outcome is a :class:`Planned`, :class:`Failed` or :class:`Skipped`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mana_ai.errors import ProviderError
from mana_ai.planner.compact import make_compactor
from mana_ai.planner.guardrails import check_inputs, check_plan
from mana_ai.planner.llm_client import kind_label
from mana_ai.planner.loop import run_planner_loop
from mana_ai.planner.prompts import ResolvedInput, build_system_prompt, build_user_prompt
from mana_ai.planner.recorder import PlanRecorder
from mana_ai.planner.reminders import build_reminder_channel
from mana_ai.planner.types import LlmClient
from mana_ai.runner.budget import RoundBudget
from mana_ai.runner.context import InputContext, MissionText, ResearchPending, RunnerContext
from mana_ai.runner.iteration import Plan
from mana_ai.synclog.records import ServerAgent, ServerMission
from mana_ai.tools.catalog import CATALOG_BY_NAME
from mana_ai.tools.schema import limit_strings, toolset_for_policy
from mana_ai.tools.select import select_tools, tool_budget

logger = logging.getLogger(__name__)

ENCRYPTED_PLACEHOLDER = "_(verschluesselt — kein Schluessel freigegeben)_"


@dataclass(frozen=True)
class Planned:
    plan: Plan
    tokens: int
    rounds: int
    stop_reason: str = "finished"


PROVIDER_PREFIX = "provider-"


@dataclass(frozen=True)
class Failed:
    reason: str
    """Short name of the failure (``provider-<kind>`` for an LLM error); :attr:`label` is its metric label."""
    message: str
    tokens: int = 0
    phase: str = "calling-llm"
    retryable: bool = True

    @property
    def label(self) -> str:
        """``mana_ai_missions_failed_total{reason}``: a provider's error kind only when it is a known one."""
        if self.reason.startswith(PROVIDER_PREFIX):
            return PROVIDER_PREFIX + kind_label(self.reason.removeprefix(PROVIDER_PREFIX))
        return self.reason


@dataclass(frozen=True)
class Skipped:
    reason: str
    detail: str = ""


Outcome = Planned | Failed | Skipped


@dataclass
class PlanRequest:
    mission: ServerMission
    agent: ServerAgent | None
    iteration_id: str
    tokens_used_24h: int = 0
    token_share: int | None = None
    """The run's reservation from its claim: the loop stops once it has used this many tokens."""
    inputs: list[ResolvedInput] = field(default_factory=list)
    budget: RoundBudget | None = None
    """The LLM client that reserves each round against the agent's cap (None: the agent has none)."""


def linked_modules(mission: ServerMission) -> set[str]:
    """Modules the mission links inputs from (``inputs[].module``)."""
    return {str(i["module"]) for i in mission.inputs if isinstance(i.get("module"), str)}


def _visible(text: str) -> str:
    return ENCRYPTED_PLACEHOLDER if text.startswith("enc:1:") else text


async def plan_mission(ctx: RunnerContext, request: PlanRequest) -> Outcome:
    mission, agent = request.mission, request.agent
    metrics, settings = ctx.metrics, ctx.settings
    input_ctx = InputContext(mission, agent, request.iteration_id)

    text = MissionText(_visible(mission.title), _visible(mission.objective), _visible(mission.concept))
    inputs = list(request.inputs)
    try:
        # Pre-steps first: a pending deep-research job ends the run before any decrypt or resolver (W14).
        for pre_step in ctx.pre_steps:
            await pre_step(input_ctx)
        if ctx.text_step is not None:
            text = await ctx.text_step(input_ctx) or text
        for step in ctx.input_steps:
            inputs.extend(await step(input_ctx))
    except ResearchPending:
        return Skipped("research-pending")

    guard = check_inputs([i.content for i in inputs])
    if not guard.passed:
        return Failed(
            "input-size-limit",
            guard.block_reason or "inputs too large",
            phase="resolving-inputs",
            retryable=False,
        )

    system_prompt = build_system_prompt(
        text.persona if text.persona is not None else (agent.system_prompt if agent else None),
        text.memory if text.memory is not None else (agent.memory if agent else None),
    )
    user_prompt = build_user_prompt(
        title=text.title,
        concept=text.concept,
        objective=text.objective,
        inputs=inputs,
        iterations=[i for i in mission.iterations if isinstance(i, dict)],
    )
    toolset = select_tools(
        limit_strings(toolset_for_policy(agent.policy if agent else None), settings.llm_max_argument_chars),
        mission_text=" ".join(t for t in (text.title, text.objective, text.concept) if t),
        linked_modules=linked_modules(mission),
        budget_tokens=tool_budget(settings.llm_context_tokens, settings.llm_max_tokens),
        max_tools=settings.llm_max_tools,
    )
    recorder = PlanRecorder(toolset, settings.policy_mode, mission_id=mission.id)
    cap = agent.max_tokens_per_day if agent else None
    channel = build_reminder_channel(
        agent_name=agent.name if agent else None,
        max_tokens_per_day=cap,
        pretick_usage_24h=request.tokens_used_24h,
    )
    if request.token_share is not None:
        allowance: int | None = max(request.token_share, 0)
    else:
        allowance = max(cap - request.tokens_used_24h, 0) if cap is not None and cap > 0 else None
    llm: LlmClient = request.budget if request.budget is not None else ctx.llm
    compactor = make_compactor(llm, max_context_tokens=settings.compaction_ceiling, model=settings.llm_model)

    result = await run_planner_loop(
        llm,
        system_prompt=system_prompt,
        user_prompt=user_prompt,
        tools_json=toolset.json,
        model=settings.llm_model,
        temperature=settings.llm_temperature,
        on_tool_call=recorder,
        reminder_channel=channel,
        compactor=compactor,
        token_allowance=allowance,
    )
    tokens = result.usage.total_tokens

    metrics.planner_rounds.observe(result.rounds)
    for reminder in result.reminders:
        metrics.reminders.labels(reminder.producer, reminder.severity).inc()
    for compaction in result.compactions:
        metrics.compactions.inc()
        metrics.compacted_turns.observe(compaction.compacted_turns)

    if result.stop_reason == "llm-error":
        error = result.error
        if isinstance(error, ProviderError):
            provider = settings.llm_model.split("/", 1)[0] if "/" in settings.llm_model else "llm"
            metrics.provider_errors.labels(provider, kind_label(error.kind)).inc()
        if not recorder.steps:
            if isinstance(error, ProviderError):
                return Failed(PROVIDER_PREFIX + error.kind, str(error), tokens=tokens)
            return Failed("planner-error", f"{type(error).__name__}: {error}", tokens=tokens)

    for planned in recorder.steps:
        tool = CATALOG_BY_NAME.get(planned.tool_name)
        metrics.tool_calls.labels(
            planned.tool_name, tool.default_policy if tool else "propose", "deferred"
        ).inc()
    for call, _reason in recorder.rejected:
        known = call.name in toolset  # a name the model made up is no label: the series would be unbounded
        metrics.tool_calls.labels(
            call.name if known else "(unknown)", "propose" if known else "unknown", "rejected"
        ).inc()

    spent = request.budget.spent if request.budget is not None else tokens  # rounds without usage count too
    if result.stop_reason == "budget" and not recorder.steps and tokens == 0 and spent == 0:
        # Refused before the first round: like a claim the budget refused, nothing happened.
        refused = request.budget.refused if request.budget is not None else None
        return Skipped("budget", refused or "")

    if result.stop_reason == "truncated" and not recorder.steps:
        return Failed(
            "truncated",
            "the model's answer was cut off (finish_reason=length) before any tool call",
            tokens=tokens,
            phase="parsing-response",
        )

    outcome = check_plan(recorder.steps)
    if not outcome.passed:
        return Failed(
            "guardrail",
            f"plan rejected by guardrail: {outcome.block_reason}",
            tokens=tokens,
            phase="staging-proposals",
            retryable=False,
        )
    stop_reason = plan_stop_reason(result.stop_reason, has_steps=bool(recorder.steps))
    summary = plan_summary(result.summary, stop_reason, rounds=result.rounds, error=result.error)
    return Planned(Plan(summary, tuple(recorder.steps), stop_reason), tokens, result.rounds, stop_reason)


def plan_stop_reason(loop_reason: str, *, has_steps: bool) -> str:
    """The stop reason recorded on the iteration (pure): the loop's, with a plain stop told apart."""
    if loop_reason == "assistant-stop":
        return "finished" if has_steps else "no-tool-calls"
    return loop_reason


_STOP_NOTES = {
    "no-tool-calls": "The model answered without calling a tool, so there is nothing to review.",
    "max-rounds": "Planning stopped after the last allowed round.",
    "budget-exhausted": "Planning stopped: the agent's daily token budget is used up.",
    "budget": "Planning stopped: another round could take the agent past its daily token budget.",
    "truncated": "The model's answer was cut off by the token limit (MANA_LLM_MAX_TOKENS).",
}


def plan_summary(summary: str | None, stop_reason: str, *, rounds: int, error: Exception | None) -> str:
    """The iteration's summary: the model's own, plus a sentence on why planning ended early (pure)."""
    text = (summary or "").strip()
    if stop_reason == "llm-error":
        note = (
            f"Planning stopped in round {rounds}: {_error_text(error)} — "
            "the steps from the earlier rounds are kept."
        )
    else:
        note = _STOP_NOTES.get(stop_reason, "")
    if not note:
        return text
    return text + ("\n\n" if text else "") + note


def _error_text(error: Exception | None) -> str:
    if error is None:
        return "the LLM call failed"
    if isinstance(error, ProviderError):
        return str(error)
    return f"{type(error).__name__}: {error}"
