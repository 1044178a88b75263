"""ResearchStep without a database: backend choice, triggers on plaintext only, failures (SPEC §8.1)."""

from __future__ import annotations

from typing import Any

import pytest

from mana_ai.errors import ConfigError
from mana_ai.metrics import Metrics
from mana_ai.research.deep import ManaResearchClient
from mana_ai.research.news import DISCOVER_PATH, ManaApiResearchClient
from mana_ai.research.step import ResearchStep
from mana_ai.runner.context import InputContext
from mana_ai.settings import Settings
from mana_ai.synclog.records import ServerMission
from mana_ai.testing.fake_research import SEARXNG_PATH, FakeResearchServer, FakeResponse

NO_DB: Any = None
"""from_settings only keeps the database for the job store, which deep research (off here) needs."""
ARTICLE = {"url": "https://example.org/a", "title": "KI heute", "score": 2}


def ctx(objective: str, concept: str = "") -> InputContext:
    record = {"id": "m1", "title": "T", "objective": objective, "conceptMarkdown": concept, "state": "active"}
    return InputContext(ServerMission.from_record("u1", record), None, "it-1")


def metrics() -> Metrics:
    return Metrics(process=False)


def failures(m: Metrics, stage: str, reason: str) -> float:
    return (
        m.registry.get_sample_value("mana_ai_research_failures_total", {"stage": stage, "reason": reason})
        or 0.0
    )


@pytest.mark.parametrize(
    ("objective", "concept", "researched"),
    [
        ("Recherchiere KI-News", "", True),
        (
            "Plane die Woche",
            "Bitte die neuesten Artikel",
            True,
        ),  # the concept triggers, objective is the query
        ("Plane die Woche", "", False),
        ("enc:1:news-news-news", "", False),  # ciphertext never triggers and is never sent out
        ("enc:1:abc", "Recherchiere", False),
        ("Plane die Woche", "enc:1:news", False),
    ],
)
async def test_shallow_trigger_uses_plaintext_only(
    server: FakeResearchServer, objective: str, concept: str, researched: bool
) -> None:
    server.news_api(feeds=[{"url": "https://example.org/feed"}], articles=[ARTICLE])
    async with ManaApiResearchClient(server.url) as client:
        step = ResearchStep(metrics=metrics(), shallow=client)
        inputs = await step(ctx(objective, concept))
    assert bool(inputs) is researched
    assert bool(server.requests_to(DISCOVER_PATH)) is researched
    if researched:
        assert inputs[0].id == "__web-research__" and inputs[0].title == f'Web-Research: "{objective}"'
        assert server.requests_to(DISCOVER_PATH)[0].json()["query"] == objective


async def test_nothing_found_is_no_input_and_no_failure(server: FakeResearchServer) -> None:
    server.news_api(feeds=[], articles=[])
    m = metrics()
    async with ManaApiResearchClient(server.url) as client:
        assert await ResearchStep(metrics=m, shallow=client)(ctx("Aktuelle News")) == []
    counted = [s for f in m.registry.collect() if f.name == "mana_ai_research_failures" for s in f.samples]
    assert counted == []
    assert server.requests_to("/api/v1/news-research/search") == []


async def test_search_stage_failure_is_counted_with_its_stage(server: FakeResearchServer) -> None:
    server.news_api(feeds=[{"url": "https://example.org/feed"}])
    server.script("POST", "/api/v1/news-research/search", FakeResponse(status=200, body=b"<html>"))
    m = metrics()
    async with ManaApiResearchClient(server.url) as client:
        assert await ResearchStep(metrics=m, shallow=client)(ctx("Aktuelle News")) == []
    assert failures(m, "search", "bad_response") == 1


async def test_pre_step_without_deep_research_does_nothing() -> None:
    context = ctx("Deep dive: KI")
    await ResearchStep(metrics=metrics()).pre_step(context)
    assert context.state == {}
    assert await ResearchStep(metrics=metrics())(context) == []


def test_deep_research_needs_a_job_store() -> None:
    with pytest.raises(ValueError, match="job store"):
        ResearchStep(metrics=metrics(), deep=ManaResearchClient("http://127.0.0.1:1", service_key="k"))


def settings(**values: Any) -> Settings:
    return Settings(**values)


def test_searxng_backend_needs_its_url() -> None:
    with pytest.raises(ConfigError, match="MANA_AI_SEARXNG_URL"):
        ResearchStep.from_settings(settings(research_backend="searxng"), db=NO_DB, metrics=metrics())


async def test_backend_is_chosen_by_settings(server: FakeResearchServer) -> None:
    server.searxng([])
    server.news_api()
    for backend, path in (("searxng", SEARXNG_PATH), ("mana-api", DISCOVER_PATH), ("off", None)):
        server.requests.clear()
        chosen = settings(research_backend=backend, searxng_url=server.url, api_url=server.url)
        step = ResearchStep.from_settings(chosen, db=NO_DB, metrics=metrics())
        await step.open()
        try:
            assert await step(ctx("Aktuelle News")) == []
        finally:
            await step.close()
        assert [r.path for r in server.requests][:1] == ([path] if path else [])


async def test_mana_api_credentials_come_from_settings(server: FakeResearchServer) -> None:
    server.news_api()
    chosen = settings(api_url=server.url, research_token="tok", research_auth_header="Authorization")
    step = ResearchStep.from_settings(chosen, db=NO_DB, metrics=metrics())
    await step.open()
    try:
        await step(ctx("Aktuelle News"))
    finally:
        await step.close()
        await step.close()  # idempotent
    assert server.requests_to(DISCOVER_PATH)[0].headers["Authorization"] == "Bearer tok"
