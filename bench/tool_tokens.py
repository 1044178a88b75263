"""How many prompt tokens the tool selection saves, measured by a real server's own count.

Sends the demo mission's first planning request twice, once with every tool the policy allows (62) and once
with the tools chosen for a context window, with ``max_tokens=1``, and prints the server's ``prompt_tokens``
for both::

    python -m bench.tool_tokens --url http://127.0.0.1:8080 --model smollm2 --context 8192 --max-tokens 256
"""

from __future__ import annotations

import argparse
import asyncio

from mana_ai.planner.llm_client import OpenAICompatClient
from mana_ai.planner.prompts import build_system_prompt, build_user_prompt
from mana_ai.tools.schema import ToolSet, toolset_for_policy
from mana_ai.tools.select import estimate_tokens, select_tools, tool_budget

TITLE = "Demo: Tagesplanung"
OBJECTIVE = "Schlage mir für heute drei konkrete Aufgaben vor, die mich meinen Zielen näher bringen."


async def prompt_tokens(client: OpenAICompatClient, model: str, tools: ToolSet) -> int:
    messages = [
        {"role": "system", "content": build_system_prompt(None, None)},
        {
            "role": "user",
            "content": build_user_prompt(
                title=TITLE, concept="", objective=OBJECTIVE, inputs=[], iterations=[]
            ),
        },
    ]
    response = await client.complete(messages, tools_json=tools.json, model=model, temperature=0.0)
    return response.usage.prompt_tokens if response.usage else 0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    everything = toolset_for_policy(None)
    chosen = select_tools(
        everything,
        mission_text=TITLE + " " + OBJECTIVE,
        budget_tokens=tool_budget(args.context, args.max_tokens),
    )
    async with OpenAICompatClient(args.url, max_retries=0, max_tokens=1, timeout_s=600) as client:
        for label, tools in (("all tools", everything), ("selected", chosen)):
            tokens = await prompt_tokens(client, args.model, tools)
            print(
                f"{label}: {len(tools)} tools, {len(tools.json):,} bytes of schema,"
                f" estimated {estimate_tokens(tools):,} tokens; server counted {tokens:,} prompt tokens"
            )


if __name__ == "__main__":
    asyncio.run(main())
