"""``mana-ai llm check``: one small tool-calling exchange with the configured LLM, and what the server did.

Two rounds, as the planner does them: the first offers one tool and asks for a call; the second sends the
assistant turn (with ``content: ""``) and the tool result back, which is where servers that reject the
planner's follow-up requests fail. Exit code 0 only when the server called the tool with valid arguments
and accepted the follow-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import click
import orjson

from mana_ai.cli.common import async_command, settings_from_env
from mana_ai.errors import ProviderError
from mana_ai.planner.llm_client import OpenAICompatClient
from mana_ai.planner.loop import assistant_message
from mana_ai.planner.types import ChatMessage, CompletionResponse, ToolCall


def check_tool(max_chars: int = 0) -> dict[str, Any]:
    """The one tool of the check; its title has ``maxLength`` when the planner sends one (pure)."""
    title: dict[str, Any] = {"type": "string", "description": "Title of the task."}
    if max_chars > 0:
        title["maxLength"] = max_chars
    return {
        "type": "function",
        "function": {
            "name": "create_task",
            "description": "Create a task in the user's todo list.",
            "parameters": {"type": "object", "properties": {"title": title}, "required": ["title"]},
        },
    }


CHECK_MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "You are a planning assistant. Use the tools you are given."},
    {"role": "user", "content": "Create a task titled 'Drink a glass of water'."},
]
NO_TOOL_HINT = (
    "the model answered without calling the tool. The server must support OpenAI tool calls: "
    "llama.cpp's llama-server needs --jinja; llama-cpp-python's server needs "
    "--chat_format chatml-function-calling; vLLM needs --enable-auto-tool-choice and a --tool-call-parser; "
    "Ollama needs a model with tool support."
)


@dataclass(frozen=True)
class CheckVerdict:
    ok: bool
    message: str


def describe_round(label: str, response: CompletionResponse, seconds: float) -> str:
    """One line on what a round returned (pure)."""
    usage = response.usage
    tokens = f", {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens" if usage else ""
    if response.tool_calls:
        calls = "; ".join(_call_text(c) for c in response.tool_calls)
        what = f"{len(response.tool_calls)} tool call(s): {calls}"
    else:
        what = "text: " + repr((response.content or "")[:80])
    return f"{label}: {seconds:.1f} s, finish_reason {response.finish_reason}, {what}{tokens}"


def _call_text(call: ToolCall) -> str:
    valid = call.name == "create_task" and isinstance(call.arguments, dict) and "title" in call.arguments
    return call.name + " " + call.raw_arguments[:80] + (" (valid)" if valid else " (not valid)")


def first_round_verdict(response: CompletionResponse) -> CheckVerdict | None:
    """``None`` when round 1 is good enough to go on; else why not (pure)."""
    if not response.tool_calls:
        return CheckVerdict(False, NO_TOOL_HINT)
    call = response.tool_calls[0]
    if call.name != "create_task":
        return CheckVerdict(False, f"the model called an unknown tool {call.name[:40]!r}")
    if not isinstance(call.arguments, dict) or not isinstance(call.arguments.get("title"), str):
        return CheckVerdict(False, "the tool call's arguments are not a JSON object with a title")
    return None


@click.group()
def llm() -> None:
    """Check the LLM server configured with MANA_LLM_URL and MANA_LLM_MODEL."""


@llm.command("check")
@async_command
async def check() -> None:
    """Send a one-tool request to the LLM and report what the server did (exit 1 if planning would fail).

    Example usage:

    \b
        mana-ai llm check
        MANA_LLM_URL=http://127.0.0.1:8080 MANA_LLM_MODEL=smollm2 mana-ai llm check
    """
    settings = settings_from_env()
    from mana_ai.banner import describe_url

    click.echo(f"LLM server {describe_url(settings.llm_url)}, model {settings.llm_model}")
    tools_json = orjson.dumps([check_tool(settings.llm_max_argument_chars)])
    client = OpenAICompatClient(
        settings.llm_url,
        api_key=settings.llm_credential,
        auth_header=settings.llm_auth_header,
        timeout_s=settings.llm_timeout_s,
        max_retries=0,
        max_tokens=settings.llm_max_tokens or None,
    )
    async with client:
        messages = list(CHECK_MESSAGES)
        first = await _round(client, "round 1 (one tool offered)", messages, tools_json, settings.llm_model)
        verdict = first_round_verdict(first)
        if verdict is not None:
            raise click.ClickException(verdict.message)
        messages.append(assistant_message(first))
        for call in first.tool_calls:
            result = {"success": True, "message": "recorded"}
            messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": orjson.dumps(result).decode()}
            )
        await _round(client, "round 2 (tool result sent back)", messages, tools_json, settings.llm_model)
    click.echo("ok: the server calls tools and accepts the planner's follow-up requests")


async def _round(
    client: OpenAICompatClient, label: str, messages: list[ChatMessage], tools_json: bytes, model: str
) -> CompletionResponse:
    start = time.perf_counter()
    try:
        response = await client.complete(messages, tools_json=tools_json, model=model, temperature=0.0)
    except ProviderError as exc:
        raise click.ClickException(f"{label}: {exc}") from None
    click.echo("  " + describe_round(label, response, time.perf_counter() - start))
    return response


def register(cli: click.Group) -> None:
    cli.add_command(llm)
