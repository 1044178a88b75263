from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from mana_ai.errors import ResearchError
from mana_ai.research.base import ResearchClient
from mana_ai.research.searxng import SearxngResearchClient
from mana_ai.research.triggers import wants_research
from mana_ai.testing.fake_research import SEARXNG_PATH, FakeResearchServer, FakeResponse

OBJECTIVE = "Recherchiere die neuesten KI-News"
NOW = dt.datetime(2024, 6, 10, 12, 0, tzinfo=dt.UTC)

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Tech-News</title><link>https://tech.example/</link>
<item>
  <title>KI-News: Neues Sprachmodell vorgestellt</title>
  <link>https://tech.example/ki-sprachmodell</link>
  <description>&lt;p&gt;Ein neues &lt;b&gt;KI&lt;/b&gt;-Modell&lt;/p&gt;</description>
  <pubDate>Mon, 10 Jun 2024 09:00:00 GMT</pubDate>
</item>
<item>
  <title>Wetterbericht</title>
  <link>https://tech.example/wetter</link>
  <description>Sonne und Regen</description>
  <pubDate>Mon, 10 Jun 2024 10:00:00 GMT</pubDate>
</item>
<item>
  <title>Kinderbuch-Tipps</title>
  <link>https://tech.example/kinder</link>
  <description>Lesen mit Kindern</description>
</item>
</channel></rss>
"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Forschung</title>
  <id>urn:forschung</id>
  <updated>2024-06-07T12:00:00Z</updated>
  <entry>
    <title>Forschung zu KI in der Medizin</title>
    <link rel="alternate" href="https://science.example/ki-medizin"/>
    <id>urn:1</id>
    <updated>2024-06-07T12:00:00Z</updated>
    <summary>Studie</summary>
  </entry>
  <entry>
    <title>Fussball</title>
    <link rel="alternate" href="https://science.example/fussball"/>
    <id>urn:2</id>
    <updated>2024-06-10T11:00:00Z</updated>
    <summary>Tore</summary>
  </entry>
</feed>
"""


def _client(server: FakeResearchServer, **kwargs: Any) -> SearxngResearchClient:
    return SearxngResearchClient(server.url, clock=lambda: NOW, **kwargs)


async def test_happy_path_with_rss_and_atom(server: FakeResearchServer) -> None:
    assert wants_research(OBJECTIVE)
    page = server.page("/tech/artikel", ["/tech/feed.xml"])  # relative feed link on an HTML page
    server.feed("/tech/feed.xml", RSS, content_type="text/xml")
    atom = server.feed("/science/atom", ATOM, content_type="application/atom+xml")  # the hit is the feed
    server.searxng([page, atom, page])

    async with _client(server) as client:
        result = await client.research(OBJECTIVE)

    (search,) = server.requests_to(SEARXNG_PATH)
    assert search.query["q"] == OBJECTIVE + " rss feed"
    assert search.query["format"] == "json"
    assert search.query["language"] == "de"
    assert len(server.requests_to("/science/atom")) == 1  # the hit's bytes were reused, not fetched again
    assert len(server.requests_to("/tech/artikel")) == 1  # duplicate hits are fetched once

    assert result is not None
    assert result.feed_count == 2
    assert result.skipped_feeds == ()
    # KI-News title: ki 2+3, news 1+3, fresh +2 = 11; medicine: ki 1+3, three days old +1 = 5.
    assert [(a.url, a.score) for a in result.articles] == [
        ("https://tech.example/ki-sprachmodell", 11.0),
        ("https://science.example/ki-medizin", 5.0),
    ]
    top = result.articles[0]
    assert top.excerpt == "Ein neues KI -Modell"
    assert top.published_at == "2024-06-10T09:00:00.000Z"
    assert top.feed_url == server.url_for("/tech/feed.xml")
    markdown = result.context_markdown
    assert markdown.startswith(f'# Web-Research: "{OBJECTIVE}"\n\n2 Quellen durchsucht, 2 relevante Artikel')
    assert "URL: https://tech.example/ki-sprachmodell" in markdown
    assert "URL: https://science.example/ki-medizin" in markdown
    assert "wetter" not in markdown


async def test_limit(server: FakeResearchServer) -> None:
    server.searxng([server.feed("/atom", ATOM), server.feed("/rss", RSS)])
    async with _client(server) as client:
        result = await client.research(OBJECTIVE, limit=1, language="en")
    assert server.requests_to(SEARXNG_PATH)[0].query["language"] == "en"
    assert result is not None
    assert [a.url for a in result.articles] == ["https://tech.example/ki-sprachmodell"]


async def test_oversize_feed_is_skipped(server: FakeResearchServer) -> None:
    huge = FakeResponse(
        body=b'<?xml version="1.0"?><rss version="2.0"><channel>',
        content_type="application/rss+xml",
        stream_bytes=1_000_000,
    )
    server.script("GET", "/huge.xml", huge)
    server.script("GET", "/huge-hit.xml", huge)
    page = server.page("/page", ["/huge.xml", "/rss.xml"])
    server.feed("/rss.xml", RSS)
    server.searxng([page, server.url_for("/huge-hit.xml")])

    async with _client(server, max_feed_bytes=50_000) as client:
        result = await client.research(OBJECTIVE)

    assert result is not None
    assert result.feed_count == 1
    assert {(s.url, s.reason, s.stage) for s in result.skipped_feeds} == {
        (server.url_for("/huge.xml"), "too_large", "feed"),
        (server.url_for("/huge-hit.xml"), "too_large", "feed"),
    }
    assert client.skip_counts["too_large"] == 2
    assert [a.url for a in result.articles] == ["https://tech.example/ki-sprachmodell"]


async def test_malformed_slow_and_missing_feeds_are_skipped(server: FakeResearchServer) -> None:
    page = server.page("/page", ["/broken.xml", "/slow.xml", "/missing.xml", "/atom"])
    server.feed("/broken.xml", "this is not a feed {{{ <<<")
    server.script("GET", "/slow.xml", FakeResponse(hang=True))
    server.feed("/atom", ATOM)
    server.searxng([page, server.url_for("/gone-page")])

    async with _client(server, feed_timeout_s=0.3) as client:
        result = await client.research(OBJECTIVE)

    assert result is not None
    assert [a.url for a in result.articles] == ["https://science.example/ki-medizin"]
    assert {(s.url, s.reason, s.stage) for s in result.skipped_feeds} == {
        (server.url_for("/broken.xml"), "bad_response", "feed"),
        (server.url_for("/slow.xml"), "timeout", "feed"),
        (server.url_for("/missing.xml"), "http_4xx", "feed"),
        (server.url_for("/gone-page"), "http_4xx", "page"),
    }


async def test_max_feeds_caps_feed_downloads(server: FakeResearchServer) -> None:
    page = server.page("/page", ["/a.xml", "/b.xml", "/c.xml"])
    for path in ("/a.xml", "/b.xml", "/c.xml"):
        server.feed(path, RSS)
    server.searxng([page])
    async with _client(server, max_feeds=2) as client:
        result = await client.research(OBJECTIVE)
    assert result is not None
    assert result.feed_count == 2
    assert server.requests_to("/c.xml") == []
    # The same article in two feeds is listed once.
    assert [a.url for a in result.articles] == ["https://tech.example/ki-sprachmodell"]


@pytest.mark.parametrize(("status", "reason"), [(500, "http_5xx"), (503, "http_5xx"), (429, "http_4xx")])
async def test_discovery_failure_raises(server: FakeResearchServer, status: int, reason: str) -> None:
    server.searxng(["https://never.example/"], status=status)
    async with _client(server) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("discover", reason)


async def test_discovery_timeout_raises(server: FakeResearchServer) -> None:
    server.script("GET", SEARXNG_PATH, FakeResponse(hang=True))
    async with _client(server, search_timeout_s=0.2) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("discover", "timeout")


async def test_discovery_bad_json_raises(server: FakeResearchServer) -> None:
    server.script("GET", SEARXNG_PATH, FakeResponse.json({"results": {"not": "a list"}}))
    async with _client(server) as client:
        with pytest.raises(ResearchError) as caught:
            await client.research(OBJECTIVE)
    assert (caught.value.stage, caught.value.reason) == ("discover", "bad_response")


async def test_no_hits_or_no_feeds_or_no_matches_mean_none(server: FakeResearchServer) -> None:
    async with _client(server) as client:
        server.searxng([])
        assert await client.research(OBJECTIVE) is None
        # Only non-web URLs: ignored without a request.
        server.searxng(["ftp://files.example/feed", "javascript:alert(1)"])
        assert await client.research(OBJECTIVE) is None
        # A page without feed links.
        server.searxng([server.page("/plain", [])])
        assert await client.research(OBJECTIVE) is None
        # Feeds, but nothing relevant.
        server.searxng([server.feed("/rss", RSS)])
        assert await client.research("Quantenchromodynamik") is None
    assert {r.path for r in server.requests} == {SEARXNG_PATH, "/plain", "/rss"}


async def test_feed_parser_crash_skips_only_that_feed(
    server: FakeResearchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mana_ai.research.feeds import parse_feed as real_parse

    def parse(body: bytes, feed_url: str, max_items: int) -> object:
        if feed_url.endswith("/evil.xml"):
            raise RuntimeError("parser bug")
        return real_parse(body, feed_url, max_items)

    monkeypatch.setattr("mana_ai.research.searxng.parse_feed", parse)
    server.feed("/evil.xml", RSS)
    server.searxng([server.page("/page", ["/evil.xml", "/atom"]), server.feed("/atom", ATOM)])
    async with _client(server) as client:
        result = await client.research(OBJECTIVE)
    assert result is not None
    assert [(s.url, s.reason) for s in result.skipped_feeds] == [
        (server.url_for("/evil.xml"), "bad_response")
    ]
    assert [a.url for a in result.articles] == ["https://science.example/ki-medizin"]


def test_satisfies_the_research_port() -> None:
    client: ResearchClient = SearxngResearchClient("http://127.0.0.1:1")
    assert repr(client) == "SearxngResearchClient(searxng_url='http://127.0.0.1:1')"


async def test_a_flood_of_hits_neither_holds_the_event_loop_nor_widens_the_crawl(
    server: FakeResearchServer,
) -> None:
    # 20,000 distinct hits: de-duplicating them with a list's `in` held the loop for seconds.
    server.searxng(server.url_for(f"/page/{n}") for n in range(20_000))
    longest_gap = 0.0

    async def watch_the_loop() -> None:
        nonlocal longest_gap
        while True:
            started = asyncio.get_running_loop().time()
            await asyncio.sleep(0.005)
            longest_gap = max(longest_gap, asyncio.get_running_loop().time() - started)

    watcher = asyncio.create_task(watch_the_loop())
    try:
        async with _client(server, max_hits=5) as client:
            assert await client.research(OBJECTIVE) is None  # the pages are missing: no feeds
    finally:
        watcher.cancel()
    pages = [r.path for r in server.requests if r.path.startswith("/page/")]
    assert sorted(pages) == [f"/page/{n}" for n in range(5)]  # the best five, in the engine's order
    assert longest_gap < 1.0, longest_gap
