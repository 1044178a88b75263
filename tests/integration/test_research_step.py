"""Research in the per-mission pipeline, end to end: real ticks, real Postgres (plain role), the fake LLM
server and the fake research backends on loopback (SPEC §5 steps 4–5, §8; W4, W14)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mana_ai.app import App
from mana_ai.planner.guardrails import MAX_INPUT_CHARS
from mana_ai.planner.prompts import ResolvedInput
from mana_ai.research.deep import JOBS_PATH
from mana_ai.research.news import DISCOVER_PATH, SEARCH_PATH
from mana_ai.research.render import MAX_RESEARCH_CHARS, TRUNCATED_NOTE
from mana_ai.runner.context import InputContext, MissionText
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.testing.fake_research import FakeResearchServer, FakeResponse
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import running_app

TOKEN = "research-token-that-must-not-leak"
NEWS_OBJECTIVE = "Recherchiere die neuesten KI-News"
DEEP_OBJECTIVE = "Tiefe Recherche zur Marktlage von Waermepumpen"
"""Matches the deep trigger but not the shallow one: a shallow block after it proves the fallback."""

ARTICLES = [
    {
        "url": "https://news.example.org/ki/eu-gesetz",
        "title": "EU beschliesst KI-Gesetz",
        "excerpt": "Das Parlament hat zugestimmt.",
        "publishedAt": "2026-11-23T08:00:00.000Z",
        "feedUrl": "https://news.example.org/feed.xml",
        "score": 5,
    },
    {
        "url": "https://blog.example.com/neues-modell",
        "title": "Neues Sprachmodell vorgestellt",
        "excerpt": None,
        "publishedAt": None,
        "feedUrl": "https://blog.example.com/rss",
        "score": 3,
    },
]
CITATIONS = [
    {"url": "https://research.example.net/waermepumpen-2026", "title": "Marktstudie", "snippet": "Absatz"}
]


def user_prompt(llm: FakeLlmServer, index: int = 0) -> str:
    messages = llm.requests[index].json["messages"]
    return "\n".join(
        m["content"] for m in messages if m.get("role") == "user" and isinstance(m["content"], str)
    )


def sample(app: App, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def serve_news(server: FakeResearchServer) -> None:
    server.news_api(feeds=[{"url": "https://news.example.org/feed.xml", "title": "News"}], articles=ARTICLES)


@asynccontextmanager
async def research_app(
    app_db_url: str, llm: FakeLlmServer, *, api_url: str, research_url: str | None = None, **overrides: Any
) -> AsyncIterator[App]:
    settings: dict[str, Any] = {
        "research_backend": "mana-api",
        "api_url": api_url,
        "research_token": TOKEN,
        "research_auth_header": "X-API-Key",
    }
    if research_url is not None:
        settings.update(research_url=research_url, deep_research_enabled=True, service_key="svc-key")
    settings.update(overrides)
    async with running_app(app_db_url, llm, **settings) as app:
        yield app


async def job_row(admin_db: Any, mission_id: str = "m1") -> dict[str, Any] | None:
    row: dict[str, Any] | None = await admin_db.fetchrow(
        "SELECT task_id, provider_id, submitted_at, last_polled_at FROM mana_ai.mission_research_jobs"
        " WHERE user_id = 'u1' AND mission_id = %s",
        (mission_id,),
    )
    return row


async def runner_writes(admin_db: Any, mission_id: str = "m1") -> int:
    row = await admin_db.fetchrow(
        "SELECT count(*) AS n FROM public.sync_changes WHERE record_id = %s AND client_id = 'mana-ai-runner'",
        (mission_id,),
    )
    return int(row["n"])


# --- shallow research -----------------------------------------------------------------------------------


async def test_news_mission_gets_research_block_with_article_urls(
    db: Any, app_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective=NEWS_OBJECTIVE))
    caplog.set_level(logging.DEBUG)
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(app_db_url, llm, api_url=research.url) as app,
    ):
        serve_news(research)
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}, stats.to_json()
        prompt = user_prompt(llm)
        assert f'### news-research/web: Web-Research: "{NEWS_OBJECTIVE}"' in prompt
        assert "URL: https://news.example.org/ki/eu-gesetz" in prompt
        assert "URL: https://blog.example.com/neues-modell" in prompt
        assert "1 Quellen durchsucht, 2 relevante Artikel gefunden:" in prompt

        discover = research.requests_to(DISCOVER_PATH)
        assert len(discover) == 1
        assert discover[0].json() == {"query": NEWS_OBJECTIVE, "language": "de", "limit": 5}
        assert discover[0].headers["X-API-Key"] == TOKEN  # W4: the backend gets credentials
        assert research.requests_to(SEARCH_PATH)[0].json()["limit"] == 8
        assert app.metrics.registry.get_sample_value("mana_ai_research_failures_total", {}) is None
    assert all(TOKEN not in str(record.__dict__) for record in caplog.records)


@pytest.mark.parametrize("down", ["stopped", "http-500"])
async def test_backend_down_mission_is_still_planned_and_failure_counted(
    db: Any, app_db_url: str, caplog: pytest.LogCaptureFixture, down: str
) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective=NEWS_OBJECTIVE))
    caplog.set_level(logging.WARNING)
    async with FakeResearchServer() as research, FakeLlmServer(default=conversation_responder()) as llm:
        if down == "stopped":
            api_url = research.url
            await research.stop()
        else:
            research.script("POST", DISCOVER_PATH, FakeResponse.json({"error": "boom"}, status=500))
            api_url = research.url
        async with research_app(app_db_url, llm, api_url=api_url) as app:
            stats = await app.ticker.tick()
            assert stats.decisions == {"ran": 1}, stats.to_json()
            assert stats.plans_written_back == 1
            prompt = user_prompt(llm)
            assert "Web-Research" not in prompt and "news-research/web" not in prompt
            reason = "unreachable" if down == "stopped" else "http_5xx"
            assert sample(app, "mana_ai_research_failures_total", stage="discover", reason=reason) == 1
    failures = [r for r in caplog.records if getattr(r, "action", None) == "research.failed"]
    assert len(failures) == 1
    assert (failures[0].stage, failures[0].reason) == ("discover", reason)  # type: ignore[attr-defined]
    assert all(TOKEN not in str(record.__dict__) for record in caplog.records)


async def test_mission_without_trigger_or_with_backend_off_does_no_research(db: Any, app_db_url: str) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective="Ordne meine Woche"))
    await put_row(db, "u1", "aiMissions", "m2", "insert", mission("m2", objective=NEWS_OBJECTIVE))
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(app_db_url, llm, api_url=research.url, research_backend="off") as app,
    ):
        serve_news(research)
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 2}, stats.to_json()
        assert research.requests == []
        assert all("Web-Research" not in user_prompt(llm, i) for i in range(len(llm.requests)))


# --- deep research across ticks -------------------------------------------------------------------------


class Recorder:
    """A text step and an input step placed around research that only count their calls."""

    def __init__(self) -> None:
        self.text_calls = 0
        self.input_calls = 0

    async def text(self, ctx: InputContext) -> MissionText | None:
        self.text_calls += 1
        return None

    async def __call__(self, ctx: InputContext) -> Sequence[ResolvedInput]:
        self.input_calls += 1
        return [ResolvedInput(id="n1", module="notes", table="notes", content="Notiz-Inhalt", title="Notiz")]


async def test_deep_research_submit_poll_complete_across_ticks(
    db: Any, app_db_url: str, admin_db: Any
) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective=DEEP_OBJECTIVE))
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(app_db_url, llm, api_url=research.url, research_url=research.url) as app,
    ):
        research.deep_research(
            task_id="t-42",
            statuses=("running", "completed"),
            answer="  Der Markt waechst.  ",
            citations=CITATIONS,
        )
        serve_news(research)
        recorder = Recorder()
        ctx = app.ticker.ctx
        ctx.text_step = recorder.text
        ctx.input_steps.insert(0, recorder)  # a resolver
        ctx.input_steps.append(recorder)  # and a step after research

        # Tick 1: submit → pending. No LLM call, claim released, nothing written, still due.
        stats = await app.ticker.tick()
        assert stats.decisions == {"skipped-research-pending": 1}, stats.to_json()
        submit = research.requests_to(JOBS_PATH, "POST")
        assert [r.json() for r in submit] == [
            {"query": DEEP_OBJECTIVE, "provider": "gemini-deep-research-max"}
        ]
        assert submit[0].headers["X-Service-Key"] == "svc-key" and submit[0].headers["X-User-Id"] == "u1"
        row = await job_row(admin_db)
        assert row is not None and row["task_id"] == "t-42" and row["last_polled_at"] is None
        run = await admin_db.fetchrow("SELECT state FROM mana_ai.mission_runs WHERE mission_id = 'm1'")
        assert run["state"] == "released"
        assert llm.request_count == 0 and await runner_writes(admin_db) == 0
        assert sample(app, "mana_ai_research_jobs_submitted_total", provider="gemini-deep-research-max") == 1
        assert sample(app, "mana_ai_research_jobs_pending_skips_total") == 1
        # W14: neither the text step (decrypts) nor any input step ran on the pending tick.
        assert (recorder.text_calls, recorder.input_calls) == (0, 0)

        # Tick 2: the poll says running → still pending, row touched.
        stats = await app.ticker.tick()
        assert stats.due_mission_count == 1
        assert stats.decisions == {"skipped-research-pending": 1}, stats.to_json()
        assert len(research.requests_to(f"{JOBS_PATH}/t-42")) == 1
        row = await job_row(admin_db)
        assert row is not None and row["last_polled_at"] is not None
        assert sample(app, "mana_ai_research_jobs_pending_skips_total") == 2
        assert llm.request_count == 0 and (recorder.text_calls, recorder.input_calls) == (0, 0)

        # Tick 3: completed → the answer and its citations are in the prompt, the row is gone.
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}, stats.to_json()
        prompt = user_prompt(llm)
        assert f'### news-research/web: Deep Research: "{DEEP_OBJECTIVE}"' in prompt
        assert "Der Markt waechst." in prompt
        assert "- [Marktstudie](https://research.example.net/waermepumpen-2026) — Absatz" in prompt
        # Order as in the original: resolver inputs, research, then what comes after.
        assert prompt.index("Notiz-Inhalt") < prompt.index("Deep-Research") < prompt.rindex("Notiz-Inhalt")
        assert "Web-Research" not in prompt and research.requests_to(DISCOVER_PATH) == []
        assert await job_row(admin_db) is None
        assert sample(app, "mana_ai_research_jobs_completed_total", provider="gemini-deep-research-max") == 1
        assert sample(app, "mana_ai_research_jobs_pending_skips_total") == 2
        assert (recorder.text_calls, recorder.input_calls) == (1, 2)
        assert await runner_writes(admin_db) == 1
        assert (await app.ticker.tick()).due_mission_count == 0


async def test_failed_job_falls_back_to_shallow_research_in_the_same_tick(
    db: Any, app_db_url: str, admin_db: Any
) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective=DEEP_OBJECTIVE))
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(app_db_url, llm, api_url=research.url, research_url=research.url) as app,
    ):
        research.deep_research(
            task_id="t-1", provider_id="prov-x", statuses=("failed",), error="quota exceeded"
        )
        serve_news(research)
        assert (await app.ticker.tick()).decisions == {"skipped-research-pending": 1}
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}, stats.to_json()
        assert await job_row(admin_db) is None
        assert sample(app, "mana_ai_research_jobs_failed_total", provider="prov-x") == 1
        assert sample(app, "mana_ai_research_jobs_completed_total", provider="prov-x") == 0
        prompt = user_prompt(llm)
        assert "Deep-Research" not in prompt
        assert "URL: https://news.example.org/ki/eu-gesetz" in prompt
        assert research.requests_to(DISCOVER_PATH)[0].json()["query"] == DEEP_OBJECTIVE


async def test_job_past_the_age_limit_is_abandoned_and_shallow_research_runs(
    db: Any, app_db_url: str, admin_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective=DEEP_OBJECTIVE))
    caplog.set_level(logging.WARNING)
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(app_db_url, llm, api_url=research.url, research_url=research.url) as app,
    ):
        research.deep_research(task_id="t-slow", statuses=("running",))  # never finishes
        serve_news(research)
        assert (await app.ticker.tick()).decisions == {"skipped-research-pending": 1}
        assert (await app.ticker.tick()).decisions == {"skipped-research-pending": 1}  # young: keep waiting
        await admin_db.execute(
            "UPDATE mana_ai.mission_research_jobs SET submitted_at = now() - interval '2 hours 1 minute'"
        )
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}, stats.to_json()
        assert await job_row(admin_db) is None
        assert sample(app, "mana_ai_research_jobs_failed_total", provider="gemini-deep-research-max") == 1
        assert "URL: https://news.example.org/ki/eu-gesetz" in user_prompt(llm)
        assert len(research.requests_to(JOBS_PATH, "POST")) == 1  # not resubmitted in the same run
    abandoned = [r for r in caplog.records if getattr(r, "action", None) == "research.deep.abandoned"]
    assert len(abandoned) == 1 and abandoned[0].age_s >= 7260  # type: ignore[attr-defined]


async def test_submit_failure_falls_back_to_shallow_research(db: Any, app_db_url: str, admin_db: Any) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective=DEEP_OBJECTIVE))
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(app_db_url, llm, api_url=research.url, research_url=research.url) as app,
    ):
        research.script("POST", JOBS_PATH, FakeResponse.json({"error": "down"}, status=503))
        serve_news(research)
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}, stats.to_json()
        assert await job_row(admin_db) is None
        assert sample(app, "mana_ai_research_failures_total", stage="submit", reason="http_5xx") == 1
        assert sample(app, "mana_ai_research_jobs_submitted_total", provider="gemini-deep-research-max") == 0
        assert sample(app, "mana_ai_research_jobs_pending_skips_total") == 0
        assert "URL: https://news.example.org/ki/eu-gesetz" in user_prompt(llm)


@pytest.mark.parametrize(
    ("poll_status", "pending"),
    [(503, True), (404, False)],
    ids=["transient-keeps-waiting", "unknown-job-gives-up"],
)
async def test_poll_failures(
    db: Any, app_db_url: str, admin_db: Any, poll_status: int, pending: bool
) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective=DEEP_OBJECTIVE))
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(app_db_url, llm, api_url=research.url, research_url=research.url) as app,
    ):
        research.deep_research(task_id="t-1")
        research.script("GET", f"{JOBS_PATH}/t-1", FakeResponse.json({"error": "x"}, status=poll_status))
        serve_news(research)
        await app.ticker.tick()
        stats = await app.ticker.tick()
        reason = "http_5xx" if pending else "http_4xx"
        assert sample(app, "mana_ai_research_failures_total", stage="poll", reason=reason) == 1
        row = await job_row(admin_db)
        if pending:
            assert stats.decisions == {"skipped-research-pending": 1}
            assert row is not None and row["last_polled_at"] is not None
            assert llm.request_count == 0
        else:
            assert stats.decisions == {"ran": 1}
            assert row is None
            assert sample(app, "mana_ai_research_jobs_failed_total", provider="gemini-deep-research-max") == 1
            assert "URL: https://news.example.org/ki/eu-gesetz" in user_prompt(llm)


async def test_deep_research_disabled_submits_nothing(db: Any, app_db_url: str, admin_db: Any) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective="Deep research: KI-News"))
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(
            app_db_url, llm, api_url=research.url, research_url=research.url, deep_research_enabled=False
        ) as app,
    ):
        research.deep_research()
        serve_news(research)
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}, stats.to_json()
        assert research.requests_to(JOBS_PATH) == [] and await job_row(admin_db) is None
        assert "URL: https://news.example.org/ki/eu-gesetz" in user_prompt(llm)


async def test_a_report_longer_than_the_planner_takes_is_cut_and_the_mission_planned(
    db: Any, app_db_url: str, admin_db: Any
) -> None:
    # A report alone over the planner's input limit failed the mission for good, after the job was taken.
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective=DEEP_OBJECTIVE))
    report = "Ein langer Absatz ueber Waermepumpen.\n" * 4_000
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(app_db_url, llm, api_url=research.url, research_url=research.url) as app,
    ):
        research.deep_research(task_id="t-long", statuses=("completed",), answer=report, citations=CITATIONS)
        assert (await app.ticker.tick()).decisions == {"skipped-research-pending": 1}
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}, stats.to_json()
        prompt = user_prompt(llm)
        assert len(report) > MAX_INPUT_CHARS
        assert "Ein langer Absatz ueber Waermepumpen." in prompt and TRUNCATED_NOTE in prompt
        assert prompt.count("Ein langer Absatz") < MAX_RESEARCH_CHARS // 30
        assert await job_row(admin_db) is None and await runner_writes(admin_db) == 1
