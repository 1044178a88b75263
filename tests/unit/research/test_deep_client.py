from __future__ import annotations

import datetime as dt

import pytest

from mana_ai.errors import ResearchError
from mana_ai.research.base import Citation, is_transient
from mana_ai.research.deep import (
    DEFAULT_MAX_JOB_AGE,
    DEFAULT_PROVIDER,
    JobStatus,
    ManaResearchClient,
    SubmittedJob,
    job_expired,
)
from mana_ai.research.render import render_deep_markdown
from mana_ai.testing.fake_research import DEEP_JOBS_PATH, FakeResearchServer, FakeResponse

SERVICE_KEY = "svc-key"
USER = "user-42"


def _client(
    server: FakeResearchServer, *, timeout_submit_s: float = 30, timeout_poll_s: float = 15
) -> ManaResearchClient:
    return ManaResearchClient(
        server.url, service_key=SERVICE_KEY, timeout_submit_s=timeout_submit_s, timeout_poll_s=timeout_poll_s
    )


def _assert_service_headers(server: FakeResearchServer) -> None:
    assert server.requests
    for request in server.requests:
        assert request.headers["X-Service-Key"] == SERVICE_KEY
        assert request.headers["X-User-Id"] == USER
        assert request.headers["X-App-Id"] == "mana-ai"


async def test_submit_then_poll_until_completed(server: FakeResearchServer) -> None:
    citations = [
        {"url": "https://a.example", "title": "Quelle A", "snippet": "Ausschnitt"},
        {"url": "https://b.example"},
        {"title": "ohne URL"},
    ]
    server.deep_research(
        task_id="t-1", statuses=["running", "completed"], answer="Die Antwort", citations=citations
    )
    async with _client(server) as client:
        job = await client.submit(USER, "Hintergrundrecherche zu X")
        first = await client.poll(USER, job.task_id)
        second = await client.poll(USER, job.task_id)

    assert job == SubmittedJob(task_id="t-1", status="queued", provider_id=DEFAULT_PROVIDER, cost_credits=5.0)
    (submit,) = server.requests_to(DEEP_JOBS_PATH, "POST")
    assert submit.json() == {"query": "Hintergrundrecherche zu X", "provider": "gemini-deep-research-max"}
    assert len(server.requests_to(f"{DEEP_JOBS_PATH}/t-1", "GET")) == 2
    _assert_service_headers(server)

    assert first == JobStatus(status="running", provider_id=DEFAULT_PROVIDER)
    assert not first.terminal
    assert second.terminal
    assert second.status == "completed"
    assert second.answer == "Die Antwort"
    assert second.citations == [
        Citation(url="https://a.example", title="Quelle A", snippet="Ausschnitt"),
        Citation(url="https://b.example", title="https://b.example"),
    ]
    markdown = render_deep_markdown("Hintergrundrecherche zu X", second.answer, second.citations)
    assert "- [Quelle A](https://a.example) — Ausschnitt" in markdown


async def test_custom_provider(server: FakeResearchServer) -> None:
    server.deep_research(provider_id="other")
    async with _client(server) as client:
        job = await client.submit(USER, "q", provider="other")
    assert server.requests_to(DEEP_JOBS_PATH)[0].json()["provider"] == "other"
    assert job.provider_id == "other"


async def test_task_id_is_url_encoded(server: FakeResearchServer) -> None:
    server.deep_research(task_id="a/b c?", statuses=["queued"])
    async with _client(server) as client:
        status = await client.poll(USER, "a/b c?")
    assert status.status == "queued"
    (poll,) = server.requests_to(f"{DEEP_JOBS_PATH}/a/b c?")
    assert poll.raw_path == f"{DEEP_JOBS_PATH}/a%2Fb%20c%3F"


@pytest.mark.parametrize("final", ["failed", "cancelled"])
async def test_failed_and_cancelled(server: FakeResearchServer, final: str) -> None:
    server.deep_research(statuses=[final], error="provider quota exhausted")
    async with _client(server) as client:
        status = await client.poll(USER, "task-1")
    assert status.status == final
    assert status.terminal
    assert status.answer is None
    assert status.error == ("provider quota exhausted" if final == "failed" else None)


async def test_structured_error_message(server: FakeResearchServer) -> None:
    server.script(
        "GET",
        f"{DEEP_JOBS_PATH}/t",
        FakeResponse.json({"taskId": "t", "status": "failed", "error": {"message": "boom", "code": 7}}),
    )
    async with _client(server) as client:
        assert (await client.poll(USER, "t")).error == "boom"


@pytest.mark.parametrize(("status", "reason"), [(401, "http_4xx"), (500, "http_5xx")])
async def test_submit_http_errors(server: FakeResearchServer, status: int, reason: str) -> None:
    server.script("POST", DEEP_JOBS_PATH, FakeResponse.json({"error": "x"}, status=status))
    async with _client(server) as client:
        with pytest.raises(ResearchError) as caught:
            await client.submit(USER, "q")
    assert (caught.value.stage, caught.value.reason) == ("submit", reason)
    assert SERVICE_KEY not in str(caught.value)


@pytest.mark.parametrize(
    "payload",
    [{"status": "queued"}, {"taskId": "t", "status": "completed"}, {"taskId": 5, "status": "queued"}],
)
async def test_submit_unexpected_payload(server: FakeResearchServer, payload: dict[str, object]) -> None:
    server.script("POST", DEEP_JOBS_PATH, FakeResponse.json(payload))
    async with _client(server) as client:
        with pytest.raises(ResearchError) as caught:
            await client.submit(USER, "q")
    assert (caught.value.stage, caught.value.reason) == ("submit", "bad_response")


async def test_submit_timeout(server: FakeResearchServer) -> None:
    server.script("POST", DEEP_JOBS_PATH, FakeResponse(hang=True))
    async with _client(server, timeout_submit_s=0.2) as client:
        with pytest.raises(ResearchError) as caught:
            await client.submit(USER, "q")
    assert (caught.value.stage, caught.value.reason) == ("submit", "timeout")


async def test_poll_unknown_job_is_permanent_and_timeout_is_transient(server: FakeResearchServer) -> None:
    server.script("GET", f"{DEEP_JOBS_PATH}/slow", FakeResponse(hang=True))
    async with _client(server, timeout_poll_s=0.2) as client:
        with pytest.raises(ResearchError) as unknown:
            await client.poll(USER, "gone")  # unscripted: 404
        with pytest.raises(ResearchError) as slow:
            await client.poll(USER, "slow")
    assert (unknown.value.stage, unknown.value.reason) == ("poll", "http_4xx")
    assert not is_transient(unknown.value)
    assert (slow.value.stage, slow.value.reason) == ("poll", "timeout")
    assert is_transient(slow.value)


async def test_poll_unknown_status(server: FakeResearchServer) -> None:
    server.script("GET", f"{DEEP_JOBS_PATH}/t", FakeResponse.json({"taskId": "t", "status": "exploded"}))
    async with _client(server) as client:
        with pytest.raises(ResearchError) as caught:
            await client.poll(USER, "t")
    assert (caught.value.stage, caught.value.reason) == ("poll", "bad_response")


async def test_poll_unreachable(closed_port_url: str) -> None:
    async with ManaResearchClient(closed_port_url, service_key=SERVICE_KEY) as client:
        with pytest.raises(ResearchError) as caught:
            await client.poll(USER, "t")
    assert (caught.value.stage, caught.value.reason) == ("poll", "unreachable")
    assert SERVICE_KEY not in repr(client)


def test_job_expired() -> None:
    submitted = dt.datetime(2024, 6, 10, 12, 0, tzinfo=dt.UTC)
    assert not job_expired(submitted, submitted + DEFAULT_MAX_JOB_AGE)
    assert job_expired(submitted, submitted + DEFAULT_MAX_JOB_AGE + dt.timedelta(seconds=1))
    assert job_expired(submitted, submitted + dt.timedelta(minutes=11), max_age=dt.timedelta(minutes=10))
