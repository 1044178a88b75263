from __future__ import annotations

import logging
from typing import Any

import pytest

from mana_ai.errors import ResearchError
from mana_ai.research.base import ResearchClient, is_transient
from mana_ai.research.news import ManaApiResearchClient
from mana_ai.research.triggers import wants_research
from mana_ai.testing.fake_research import (
    NEWS_DISCOVER_PATH,
    NEWS_SEARCH_PATH,
    FakeResearchServer,
    FakeResponse,
)

OBJECTIVE = "Recherchiere die neuesten KI-News"
TOKEN = "s3cret-jwt-token"
FEEDS: list[dict[str, Any]] = [
    {"url": "https://heise.example/rss", "title": "Heise", "description": "IT-News"},
    {"url": "https://golem.example/rss", "title": "Golem", "description": None},
]
ARTICLES: list[dict[str, Any]] = [
    {
        "url": "https://heise.example/ki-1",
        "title": "Neues KI-Modell",
        "excerpt": "Ein Sprachmodell",
        "publishedAt": "2024-06-10T08:00:00.000Z",
        "feedUrl": "https://heise.example/rss",
        "score": 7,
        "extra": "ignored",
    },
    {
        "url": "https://golem.example/ki-2",
        "title": "KI-News der Woche",
        "excerpt": None,
        "publishedAt": None,
        "feedUrl": "https://golem.example/rss",
        "score": 3.5,
    },
    {"title": "no url: dropped", "score": 9},
]


def _client(server: FakeResearchServer, **kwargs: Any) -> ManaApiResearchClient:
    return ManaApiResearchClient(server.url, token=TOKEN, **kwargs)


async def test_happy_path_request_shapes_and_result(server: FakeResearchServer) -> None:
    assert wants_research(OBJECTIVE)
    server.news_api(feeds=FEEDS, articles=ARTICLES, feed_count=17)
    async with _client(server) as client:
        result = await client.research(OBJECTIVE)

    (discover,) = server.requests_to(NEWS_DISCOVER_PATH, "POST")
    assert discover.json() == {"query": OBJECTIVE, "language": "de", "limit": 5}
    assert discover.headers["Content-Type"] == "application/json"
    (search,) = server.requests_to(NEWS_SEARCH_PATH, "POST")
    assert search.json() == {
        "feeds": ["https://heise.example/rss", "https://golem.example/rss"],
        "query": OBJECTIVE,
        "limit": 8,
    }
    for request in (discover, search):
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"

    assert result is not None
    assert result.feed_count == 2  # discovered feeds, as in the original (not the backend's feedCount)
    assert [a.url for a in result.articles] == ["https://heise.example/ki-1", "https://golem.example/ki-2"]
    first, second = result.articles
    assert (first.title, first.excerpt, first.published_at, first.feed_url, first.score) == (
        "Neues KI-Modell",
        "Ein Sprachmodell",
        "2024-06-10T08:00:00.000Z",
        "https://heise.example/rss",
        7.0,
    )
    assert (second.excerpt, second.published_at, second.score) == (None, None, 3.5)
    markdown = result.context_markdown
    assert markdown.startswith(f'# Web-Research: "{OBJECTIVE}"\n\n2 Quellen durchsucht, 2 relevante Artikel')
    assert "URL: https://heise.example/ki-1" in markdown
    assert "URL: https://golem.example/ki-2" in markdown
    assert "Datum: 2024-06-10T08:00:00.000Z" in markdown


async def test_language_and_limit_are_passed_and_limit_is_enforced(server: FakeResearchServer) -> None:
    server.news_api(feeds=FEEDS, articles=ARTICLES)
    async with _client(server) as client:
        result = await client.research("news", language="en", limit=1)
    assert server.requests_to(NEWS_DISCOVER_PATH)[0].json()["language"] == "en"
    assert server.requests_to(NEWS_SEARCH_PATH)[0].json()["limit"] == 1
    assert result is not None
    assert len(result.articles) == 1


async def test_custom_auth_header_carries_raw_token(server: FakeResearchServer) -> None:
    server.news_api(feeds=FEEDS, articles=ARTICLES)
    async with _client(server, auth_header="X-Api-Key") as client:
        await client.research(OBJECTIVE)
    request = server.requests_to(NEWS_DISCOVER_PATH)[0]
    assert request.headers["X-Api-Key"] == TOKEN
    assert "Authorization" not in request.headers


async def test_without_token_no_credentials_are_sent(server: FakeResearchServer) -> None:
    server.news_api(feeds=FEEDS, articles=ARTICLES)
    async with ManaApiResearchClient(server.url) as client:
        await client.research(OBJECTIVE)
    assert "Authorization" not in server.requests_to(NEWS_DISCOVER_PATH)[0].headers


async def test_no_feeds_means_none_and_no_search(server: FakeResearchServer) -> None:
    server.news_api(feeds=[], articles=ARTICLES)
    async with _client(server) as client:
        assert await client.research(OBJECTIVE) is None
    assert server.requests_to(NEWS_SEARCH_PATH) == []


async def test_no_articles_means_none(server: FakeResearchServer) -> None:
    server.news_api(feeds=FEEDS, articles=[])
    async with _client(server) as client:
        assert await client.research(OBJECTIVE) is None
    assert len(server.requests_to(NEWS_SEARCH_PATH)) == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [(401, "http_4xx"), (403, "http_4xx"), (500, "http_5xx"), (503, "http_5xx")],
)
async def test_discover_http_errors(server: FakeResearchServer, status: int, reason: str) -> None:
    server.script("POST", NEWS_DISCOVER_PATH, FakeResponse.json({"error": "nope"}, status=status))
    async with _client(server) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("discover", reason)
    assert str(status) in str(caught.value)
    assert is_transient(caught.value) is (status >= 500)


async def test_search_http_error_names_the_search_stage(server: FakeResearchServer) -> None:
    server.news_api(feeds=FEEDS)
    server.script("POST", NEWS_SEARCH_PATH, FakeResponse.json({"error": "boom"}, status=502))
    async with _client(server) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("search", "http_5xx")


async def test_discover_timeout(server: FakeResearchServer) -> None:
    server.script("POST", NEWS_DISCOVER_PATH, FakeResponse(hang=True))
    async with _client(server, discover_timeout_s=0.2) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("discover", "timeout")
    assert is_transient(caught.value)


async def test_search_timeout(server: FakeResearchServer) -> None:
    server.news_api(feeds=FEEDS)
    server.script("POST", NEWS_SEARCH_PATH, FakeResponse(hang=True))
    async with _client(server, search_timeout_s=0.2) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("search", "timeout")


async def test_unreachable(closed_port_url: str) -> None:
    async with ManaApiResearchClient(closed_port_url, token=TOKEN) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("discover", "unreachable")


@pytest.mark.parametrize(
    "response",
    [
        FakeResponse(body=b"<html>not json</html>", content_type="text/html"),
        FakeResponse.json(["a", "list"]),
        FakeResponse.json({"feeds": "not a list"}),
    ],
)
async def test_bad_discover_response(server: FakeResearchServer, response: FakeResponse) -> None:
    server.script("POST", NEWS_DISCOVER_PATH, response)
    async with _client(server) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("discover", "bad_response")


async def test_oversize_response(server: FakeResearchServer) -> None:
    server.news_api(feeds=FEEDS)
    server.script("POST", NEWS_SEARCH_PATH, FakeResponse(body=b"{}", stream_bytes=200_000))
    async with _client(server, max_response_bytes=10_000) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("search", "too_large")


async def test_token_never_appears_in_logs_errors_or_repr(
    server: FakeResearchServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.news_api(feeds=[])
    server.script("POST", NEWS_SEARCH_PATH, FakeResponse(status=401))
    async with _client(server) as client:
        assert TOKEN not in repr(client)
        await client.research(OBJECTIVE)
        server.news_api(feeds=FEEDS)
        server.script("POST", NEWS_SEARCH_PATH, FakeResponse(status=401))
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert TOKEN not in str(caught.value)
    assert caplog.records, "the no-feeds path logs something"
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in repr(record.__dict__)


async def test_using_a_closed_client_is_an_error() -> None:
    client = ManaApiResearchClient("http://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="not open"):
        await client.research(OBJECTIVE)


def test_satisfies_the_research_port() -> None:
    client: ResearchClient = ManaApiResearchClient("http://127.0.0.1:1")
    assert client is not None


async def test_discovered_feeds_are_deduplicated_in_order(server: FakeResearchServer) -> None:
    twice = [*FEEDS, *FEEDS, {"url": ""}, "not an object"]
    server.news_api(feeds=twice, articles=ARTICLES)
    async with _client(server) as client:
        await client.research(OBJECTIVE)
    (search,) = server.requests_to(NEWS_SEARCH_PATH, "POST")
    assert search.json()["feeds"] == ["https://heise.example/rss", "https://golem.example/rss"]
