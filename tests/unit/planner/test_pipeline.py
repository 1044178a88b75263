"""plan_mission with a scripted LLM: what reaches the model server and the metrics."""

from __future__ import annotations

from mana_ai.errors import ProviderError
from mana_ai.metrics import Metrics
from mana_ai.runner.context import RunnerContext
from mana_ai.runner.pipeline import Planned, PlanRequest, plan_mission
from mana_ai.settings import Settings
from mana_ai.synclog.records import ServerMission
from mana_ai.testing.fake_llm import ScriptedLlmClient, ScriptedRequest, completion

MODEL = "qwen2.5-7b-instruct"
MISSION = ServerMission.from_record(
    "u1", {"id": "m1", "title": "Aufgaben", "objective": "Plane Aufgaben", "cadence": {"kind": "manual"}}
)


def context(llm: ScriptedLlmClient, metrics: Metrics) -> RunnerContext:
    settings = Settings(llm_model=MODEL, llm_context_tokens=32768)
    return RunnerContext(settings=settings, db=None, llm=llm, metrics=metrics, owner="t")  # type: ignore[arg-type]


def served(response: object):  # type: ignore[no-untyped-def]
    def step(request: ScriptedRequest) -> object:
        if request.model != MODEL:  # as vLLM, Ollama or OpenAI answer a model they do not serve
            raise ProviderError(
                f"LLM server 404: model {request.model} not found", kind="unknown", status=404
            )
        return response

    return step


async def test_the_compaction_request_goes_to_the_configured_model() -> None:
    # It went to a hard-coded "google/gemini-2.5-flash-lite": every long run on another server stopped.
    llm = ScriptedLlmClient(
        [
            served(completion(calls=[("create_task", {"title": "a"})], usage=(100, 10))),
            served(completion(calls=[("create_task", {"title": "b"})], usage=(100, 10))),
            served(completion(calls=[("create_task", {"title": "c"})], usage=(31_000, 10))),  # past 92 %
            served(completion(content="compacted", usage=(500, 50))),
            served(completion(content="fertig", usage=(1_000, 10))),
        ]
    )
    outcome = await plan_mission(context(llm, Metrics(process=False)), PlanRequest(MISSION, None, "it1"))
    assert [r.model for r in llm.requests] == [MODEL] * 5
    assert isinstance(outcome, Planned) and outcome.stop_reason == "finished", outcome


async def test_a_tool_name_the_model_made_up_is_no_metric_label() -> None:
    metrics = Metrics(process=False)
    invented = ["x" * 60 + str(i) for i in range(3)]
    llm = ScriptedLlmClient(
        [
            completion(calls=[(name, {}) for name in invented]),
            completion(calls=[("create_task", {"title": "a"})]),
            completion(content="fertig"),
        ]  # fmt: skip
    )
    await plan_mission(context(llm, metrics), PlanRequest(MISSION, None, "it1"))
    labels = {
        sample.labels["tool"]
        for metric in metrics.registry.collect()
        if metric.name == "mana_ai_tool_calls"
        for sample in metric.samples
    }
    assert labels == {"(unknown)", "create_task"}, labels
