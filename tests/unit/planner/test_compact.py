"""Context compactor (SPEC §13; original suite §24.2 compact.test.ts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mana_ai.errors import ProviderError
from mana_ai.planner.compact import (
    COMPACT_INSTRUCTION,
    COMPACT_SYSTEM_PROMPT,
    DEFAULT_COMPACT_KEEP_RECENT,
    DEFAULT_COMPACT_MODEL,
    DEFAULT_COMPACT_THRESHOLD,
    CompactSummary,
    compact_history,
    make_compactor,
    parse_compact_summary,
    render_compact_summary,
    should_compact,
)
from mana_ai.planner.types import ChatMessage, CompletionResponse, Usage

SUMMARY_HALFWAY = "## Goal\nX\n\n## Decisions\n-\n\n## Tools Called\n-\n\n## Current Progress\nhalfway"


@dataclass
class Request:
    messages: list[ChatMessage]
    tools_json: bytes
    model: str
    temperature: float


@dataclass
class FakeLlm:
    """Scripted LlmClient: answers from a queue and records every request."""

    replies: list[CompletionResponse | Exception] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def reply(self, content: str, usage: Usage | None = None) -> FakeLlm:
        self.replies.append(
            CompletionResponse(content=content, tool_calls=(), finish_reason="stop", usage=usage)
        )
        return self

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        tools_json: bytes,
        model: str,
        temperature: float = 0.3,
    ) -> CompletionResponse:
        # Copy so a later mutation by the code under test cannot rewrite what was sent.
        self.requests.append(Request([dict(m) for m in messages], tools_json, model, temperature))
        assert self.replies, "unexpected LLM call"
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def build_history(middle_pairs: int, keep_recent: int) -> list[ChatMessage]:
    msgs: list[ChatMessage] = [
        {"role": "system", "content": "Original system prompt"},
        {"role": "user", "content": "Original user task"},
    ]
    for i in range(middle_pairs):
        msgs.append({"role": "assistant", "content": "middle-assistant-" + str(i)})
        msgs.append({"role": "tool", "tool_call_id": "c" + str(i), "content": "middle-tool-" + str(i)})
    for i in range(keep_recent):
        msgs.append({"role": "assistant", "content": "recent-" + str(i)})
    return msgs


# --- should_compact ----------------------------------------------------------------------


def test_should_compact_at_threshold() -> None:
    assert should_compact(92_000, 100_000) is True


def test_should_not_compact_below_threshold() -> None:
    assert should_compact(91_000, 100_000) is False


def test_should_not_compact_without_window() -> None:
    assert should_compact(50_000, None) is False
    assert should_compact(50_000, 0) is False


def test_should_not_compact_on_zero_usage() -> None:
    assert should_compact(0, 100_000) is False


def test_should_compact_custom_threshold() -> None:
    assert should_compact(50_000, 100_000, 0.5) is True
    assert should_compact(49_999, 100_000, 0.5) is False


def test_constants() -> None:
    assert DEFAULT_COMPACT_THRESHOLD == 0.92
    assert DEFAULT_COMPACT_KEEP_RECENT == 4
    assert DEFAULT_COMPACT_MODEL == "google/gemini-2.5-flash-lite"


def test_system_prompt_names_all_four_sections() -> None:
    for header in ("## Goal", "## Decisions", "## Tools Called", "## Current Progress"):
        assert header in COMPACT_SYSTEM_PROMPT
    assert "unklar" in COMPACT_SYSTEM_PROMPT


# --- parse_compact_summary ---------------------------------------------------------------


def test_parse_canonical_block() -> None:
    raw = (
        "## Goal\nAlle offenen Tasks bis Freitag abschliessen.\n\n"
        "## Decisions\n- Prio: Release-Blocker zuerst\n- Keine neuen Features\n\n"
        "## Tools Called\n- list_tasks(open) -> 12 Tasks\n- complete_task(T-42) -> ok\n\n"
        "## Current Progress\n8 von 12 Tasks erledigt; naechste Aktion: T-19 in Angriff nehmen."
    )
    s = parse_compact_summary(raw)
    assert s.goal == "Alle offenen Tasks bis Freitag abschliessen."
    assert s.decisions == "- Prio: Release-Blocker zuerst\n- Keine neuen Features"
    assert "list_tasks" in s.tools_called and "complete_task(T-42)" in s.tools_called
    assert s.current_progress.startswith("8 von 12")


def test_parse_tolerates_missing_sections() -> None:
    s = parse_compact_summary("## Goal\nFoo bar.\n\n## Decisions\n(keine)")
    assert s == CompactSummary(goal="Foo bar.", decisions="(keine)", tools_called="", current_progress="")


def test_parse_headers_case_insensitive() -> None:
    s = parse_compact_summary("## GOAL\nX\n\n## decisions\nY")
    assert (s.goal, s.decisions) == ("X", "Y")


def test_parse_garbage_gives_empty_summary() -> None:
    assert parse_compact_summary("this is not a markdown block") == CompactSummary()


def test_parse_ignores_text_around_the_block() -> None:
    s = parse_compact_summary("Hier ist die Zusammenfassung:\n## Goal\nZ\n## Current Progress\nfast fertig\n")
    assert (s.goal, s.current_progress) == ("Z", "fast fertig")


def test_parse_empty_sections_do_not_swallow_the_next_header() -> None:
    # The original regex read "## Decisions" as the goal here.
    s = parse_compact_summary("## Goal\n\n## Decisions\nY\n\n## Tools Called\n\n## Current Progress\n")
    assert s == CompactSummary(goal="", decisions="Y", tools_called="", current_progress="")


def test_parse_crlf_and_header_at_end() -> None:
    s = parse_compact_summary("## Goal \r\nA\r\n## Current Progress")
    assert (s.goal, s.current_progress) == ("A", "")


def test_parse_needs_the_exact_header_word() -> None:
    assert parse_compact_summary("## Goals\nA") == CompactSummary()


# --- render_compact_summary --------------------------------------------------------------


def test_render_wraps_in_tags() -> None:
    out = render_compact_summary(CompactSummary("G", "D", "T", "P"))
    assert out.startswith("<compact-summary>")
    assert out.endswith("</compact-summary>")
    assert "## Goal\nG" in out
    assert "## Decisions\nD" in out
    assert "## Tools Called\nT" in out
    assert "## Current Progress\nP" in out


def test_render_fills_placeholders() -> None:
    out = render_compact_summary(CompactSummary())
    assert "## Goal\nunklar" in out
    assert "## Decisions\n(keine)" in out
    assert "## Tools Called\n(keine)" in out
    assert "## Current Progress\nunklar" in out


def test_render_then_parse_round_trips() -> None:
    s = CompactSummary("G", "- d", "- t() -> ok", "P")
    assert parse_compact_summary(render_compact_summary(s)) == s


# --- compact_history ---------------------------------------------------------------------


async def test_short_history_returned_by_identity() -> None:
    llm = FakeLlm()
    msgs: list[ChatMessage] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "only-turn"},
    ]
    res = await compact_history(msgs, llm=llm, model="m", keep_recent=4)
    assert res.messages is msgs
    assert res.compacted_turns == 0
    assert res.summary == ""
    assert llm.requests == []


async def test_preserves_anchors_and_tail() -> None:
    history = build_history(5, DEFAULT_COMPACT_KEEP_RECENT)  # 2 + 10 + 4 = 16 messages
    snapshot = [dict(m) for m in history]
    llm = FakeLlm().reply(SUMMARY_HALFWAY)

    res = await compact_history(history, llm=llm, model="compact-model")

    assert res.compacted_turns == 10
    assert len(res.messages) == 2 + 1 + DEFAULT_COMPACT_KEEP_RECENT
    assert res.messages[0] == history[0]
    assert res.messages[1] == history[1]
    assert res.messages[2]["role"] == "assistant"
    assert "<compact-summary>" in res.messages[2]["content"]
    assert "halfway" in res.messages[2]["content"]
    assert res.summary == res.messages[2]["content"]
    assert [m["content"] for m in res.messages[3:]] == ["recent-" + str(i) for i in range(4)]
    assert history == snapshot  # input untouched


async def test_request_layout() -> None:
    history = build_history(3, 4)
    llm = FakeLlm().reply("## Goal\n\n## Decisions\n\n## Tools Called\n\n## Current Progress\n")

    await compact_history(history, llm=llm, model="m")

    (req,) = llm.requests
    sent = req.messages
    assert sent[0] == {"role": "system", "content": COMPACT_SYSTEM_PROMPT}
    assert sent[1] == {"role": "system", "content": "Urspruenglicher System-Prompt:\nOriginal system prompt"}
    assert sent[2] == history[1]
    assert sent[3:-1] == history[2:8]
    assert sent[-1] == {"role": "user", "content": COMPACT_INSTRUCTION}
    assert req.tools_json == b"[]"
    assert req.temperature == 0.2


async def test_returns_usage_and_parsed_sections() -> None:
    history = build_history(3, 4)
    llm = FakeLlm().reply(
        "## Goal\nX\n\n## Decisions\n-\n\n## Tools Called\n-\n\n## Current Progress\nY",
        usage=Usage(prompt_tokens=100, completion_tokens=30),
    )
    res = await compact_history(history, llm=llm, model="m")
    assert res.usage == Usage(prompt_tokens=100, completion_tokens=30)
    assert parse_compact_summary(res.summary) == CompactSummary("X", "-", "-", "Y")


async def test_usage_none_when_not_reported() -> None:
    llm = FakeLlm().reply(SUMMARY_HALFWAY)
    res = await compact_history(build_history(3, 4), llm=llm)
    assert res.usage is None


async def test_default_model() -> None:
    llm = FakeLlm().reply(SUMMARY_HALFWAY)
    await compact_history(build_history(3, 4), llm=llm)
    assert llm.requests[0].model == "google/gemini-2.5-flash-lite"


async def test_explicit_model() -> None:
    llm = FakeLlm().reply(SUMMARY_HALFWAY)
    await compact_history(build_history(3, 4), llm=llm, model="custom/model")
    assert llm.requests[0].model == "custom/model"


async def test_custom_keep_recent() -> None:
    history = build_history(5, 6)
    llm = FakeLlm().reply("## Goal\n\n## Decisions\n")
    res = await compact_history(history, llm=llm, model="m", keep_recent=2)
    assert len(res.messages) == 2 + 1 + 2
    assert res.messages[3]["content"] == "recent-4"
    assert res.messages[4]["content"] == "recent-5"
    assert res.compacted_turns == 14


async def test_nothing_between_anchors_and_tail_makes_no_call() -> None:
    # 6 messages reach the minimum length, but a tail of 4 leaves no middle once the cut avoids
    # orphaning the tool message.
    history: list[ChatMessage] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "a"}]},
        {"role": "tool", "tool_call_id": "a", "content": "r"},
        {"role": "assistant", "content": "x"},
        {"role": "assistant", "content": "y"},
    ]
    llm = FakeLlm()
    res = await compact_history(history, llm=llm, keep_recent=3)
    assert res.messages is history
    assert res.compacted_turns == 0
    assert llm.requests == []


async def test_tail_never_starts_with_a_tool_result() -> None:
    history: list[ChatMessage] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "early"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "a"}, {"id": "b"}]},
        {"role": "tool", "tool_call_id": "a", "content": "ra"},
        {"role": "tool", "tool_call_id": "b", "content": "rb"},
        {"role": "assistant", "content": "last"},
    ]
    llm = FakeLlm().reply(SUMMARY_HALFWAY)
    res = await compact_history(history, llm=llm, keep_recent=2)
    assert res.compacted_turns == 1
    assert res.messages[3:] == history[3:]
    assert llm.requests[0].messages[3:-1] == [history[2]]


async def test_messages_before_first_user_are_folded_not_dropped() -> None:
    history: list[ChatMessage] = [
        {"role": "system", "content": "s"},
        {"role": "assistant", "content": "prior"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "m1"},
        {"role": "assistant", "content": "t1"},
        {"role": "assistant", "content": "t2"},
    ]
    llm = FakeLlm().reply(SUMMARY_HALFWAY)
    res = await compact_history(history, llm=llm, keep_recent=2)
    assert res.compacted_turns == 2
    assert [m["content"] for m in llm.requests[0].messages[3:-1]] == ["prior", "m1"]
    assert [m["content"] for m in res.messages[:2]] == ["s", "u"]


async def test_history_without_anchors() -> None:
    history: list[ChatMessage] = [{"role": "assistant", "content": "a" + str(i)} for i in range(4)]
    llm = FakeLlm().reply(SUMMARY_HALFWAY)
    res = await compact_history(history, llm=llm, keep_recent=2)
    assert res.compacted_turns == 2
    assert [m["role"] for m in llm.requests[0].messages] == ["system", "assistant", "assistant", "user"]
    assert [m["content"] for m in res.messages[1:]] == ["a2", "a3"]


async def test_negative_keep_recent_rejected() -> None:
    with pytest.raises(ValueError):
        await compact_history(build_history(3, 4), llm=FakeLlm(), keep_recent=-1)


async def test_provider_error_propagates() -> None:
    llm = FakeLlm(replies=[ProviderError("down", kind="unreachable")])
    with pytest.raises(ProviderError):
        await compact_history(build_history(3, 4), llm=llm)


# --- make_compactor ----------------------------------------------------------------------


@pytest.mark.parametrize("window", [0, -1])
def test_make_compactor_disabled(window: int) -> None:
    assert make_compactor(FakeLlm(), max_context_tokens=window) is None


async def test_make_compactor_wires_history_compaction() -> None:
    llm = FakeLlm().reply(SUMMARY_HALFWAY)
    compactor = make_compactor(llm, max_context_tokens=128_000, model="cheap/model")
    assert compactor is not None
    assert compactor.max_context_tokens == 128_000
    assert compactor.threshold == DEFAULT_COMPACT_THRESHOLD
    res = await compactor.compact(build_history(5, 4))
    assert res.compacted_turns == 10
    assert llm.requests[0].model == "cheap/model"
    assert llm.requests[0].temperature == 0.2
