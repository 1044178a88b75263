"""Shallow research without mana-api: SearxNG web search, feed discovery and ranking done locally.

This reproduces what mana-api's news-research endpoints do (SPEC §8.1, "mana-api side") so a self-hosted
runner needs only a SearxNG instance:

1. Web search for ``"<query> rss feed"`` through SearxNG's JSON API; its failure is fatal
   (``ResearchError(stage="discover")``).
2. Each hit is fetched once: a hit that is itself a feed is used directly (its bytes are kept); an HTML page
   is searched for ``<link rel="alternate" type="application/rss+xml|application/atom+xml">``. Feed URLs are
   deduplicated and capped at ``max_feeds``.
3. Feeds are downloaded with bounded concurrency, a timeout and a size limit, then parsed by feedparser from
   those bytes (feedparser is never given a URL or a path, so it cannot fetch anything itself). A feed that
   fails is skipped and reported in :attr:`ResearchResult.skipped_feeds`; it is not fatal.
4. Articles are ranked with mana-api's keyword scoring (:func:`mana_ai.research.feeds.rank_entries`) and the
   best ``limit`` are returned.

Only ``http``/``https`` URLs are followed. There is no protection against hits that point into the private
network (SSRF): run this backend where outbound requests cannot reach internal services.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urldefrag, urlsplit

from mana_ai.errors import ResearchError
from mana_ai.research.base import (
    HttpClientBase,
    ResearchResult,
    SkippedFeed,
    decode_json_object,
    fetch,
    first_unique,
    optional_str,
)
from mana_ai.research.feeds import FeedEntry, feed_links, looks_like_feed, parse_feed, rank_entries
from mana_ai.research.render import render_shallow_markdown
from mana_ai.timefmt import utcnow

logger = logging.getLogger(__name__)

SEARCH_SUFFIX = " rss feed"
MAX_PAGE_BYTES = 512_000
"""Only the start of an HTML page is read: feed links live in ``<head>``."""


@dataclass(frozen=True, slots=True)
class _FeedSource:
    url: str
    body: bytes | None = None
    """The feed's bytes when the search hit itself was the feed (saves a second download)."""


class SearxngResearchClient(HttpClientBase):
    """:class:`~mana_ai.research.base.ResearchClient` that searches the web through SearxNG.

    Args:
        searxng_url: SearxNG base URL; its JSON output format must be enabled.
        max_feeds: Cap on distinct feeds read per query.
        max_items_per_feed: Entries read from each feed.
        fetch_concurrency: Parallel page and feed downloads.
        max_feed_bytes: Size limit of one feed; bigger feeds are skipped (``too_large``).
        feed_timeout_s: Total timeout for one page or feed download.
        search_timeout_s: Total timeout of the SearxNG query.
        max_hits: Search hits examined for feeds.
        clock: Returns the current UTC time (recency scoring); injectable for tests.
    """

    def __init__(
        self,
        searxng_url: str,
        *,
        max_feeds: int = 12,
        max_items_per_feed: int = 40,
        fetch_concurrency: int = 6,
        max_feed_bytes: int = 2_000_000,
        feed_timeout_s: float = 10,
        search_timeout_s: float = 15,
        max_hits: int = 20,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        super().__init__()
        self._searxng_url = searxng_url.rstrip("/")
        self._max_feeds = max_feeds
        self._max_items_per_feed = max_items_per_feed
        self._fetch_concurrency = fetch_concurrency
        self._max_feed_bytes = max_feed_bytes
        self._feed_timeout_s = feed_timeout_s
        self._search_timeout_s = search_timeout_s
        self._max_hits = max_hits
        self._clock = clock
        self.skip_counts: Counter[str] = Counter()
        """Skipped pages and feeds since creation, by reason (cumulative, for the caller's metrics)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(searxng_url={self._searxng_url!r})"

    async def research(self, query: str, *, language: str = "de", limit: int = 8) -> ResearchResult | None:
        """Find feeds for ``query`` on the web and return their most relevant articles.

        Args:
            query: What to look for (the mission objective).
            language: SearxNG language code.
            limit: Maximum number of articles.

        Returns:
            The result, or None when no feeds or no relevant articles were found.

        Raises:
            ResearchError: stage ``discover`` when the SearxNG query fails. Individual page and feed
                failures are not raised; they are listed in ``skipped_feeds``.
        """
        hits = await self._search(query, language)
        semaphore = asyncio.Semaphore(self._fetch_concurrency)
        skipped: list[SkippedFeed] = []
        try:
            sources = await self._discover_feeds(hits, semaphore, skipped)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._load_feed(src, semaphore, skipped)) for src in sources]
        finally:
            self.skip_counts.update(item.reason for item in skipped)
        loaded = [entries for task in tasks if (entries := task.result()) is not None]
        log_extra = {"hits": len(hits), "feeds": len(loaded), "skipped": len(skipped)}
        if not loaded:
            logger.info("no usable feeds found", extra={"action": "research.searxng.no_feeds", **log_extra})
            return None
        entries = [entry for feed in loaded for entry in feed]
        articles = rank_entries(query, entries, now=self._clock(), limit=limit)
        if not articles:
            logger.info("no relevant articles", extra={"action": "research.searxng.no_articles", **log_extra})
            return None
        return ResearchResult(
            articles=articles,
            feed_count=len(loaded),
            context_markdown=render_shallow_markdown(query, len(loaded), articles),
            skipped_feeds=tuple(skipped),
        )

    async def _search(self, query: str, language: str) -> list[str]:
        stage = "discover"
        fetched = await fetch(
            self.session,
            "GET",
            self._searxng_url + "/search",
            stage=stage,
            timeout_s=self._search_timeout_s,
            params={"q": query + SEARCH_SUFFIX, "format": "json", "language": language},
        )
        payload = decode_json_object(stage, fetched.body)
        results = payload.get("results", [])
        if not isinstance(results, list):
            raise ResearchError(f"{stage}: 'results' is not a list", stage=stage, reason="bad_response")
        urls = (optional_str(result.get("url")) if isinstance(result, dict) else None for result in results)
        return first_unique((url for url in urls if url and _is_web_url(url)), self._max_hits)

    async def _discover_feeds(
        self, hits: list[str], semaphore: asyncio.Semaphore, skipped: list[SkippedFeed]
    ) -> list[_FeedSource]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._inspect_hit(hit, semaphore, skipped)) for hit in hits]
        # Keep the search engine's order (best hits first) when capping.
        sources: dict[str, _FeedSource] = {}
        for task in tasks:
            for source in task.result():
                key = urldefrag(source.url).url
                if key not in sources:
                    sources[key] = source
        return list(sources.values())[: self._max_feeds]

    async def _inspect_hit(
        self, url: str, semaphore: asyncio.Semaphore, skipped: list[SkippedFeed]
    ) -> list[_FeedSource]:
        """The hit itself if it is a feed, else the feeds its HTML page links to."""
        try:
            async with semaphore:
                # Read up to the feed limit: if the hit is a feed we keep its bytes. An oversize feed shows
                # up as a truncated body and is rejected below; an oversize page is simply cut.
                fetched = await fetch(
                    self.session,
                    "GET",
                    url,
                    stage="page",
                    timeout_s=self._feed_timeout_s,
                    max_bytes=max(self._max_feed_bytes, MAX_PAGE_BYTES),
                    truncate=True,
                )
        except ResearchError as exc:
            self._skip(skipped, url, exc.reason, "page")
            return []
        if looks_like_feed(fetched.content_type, fetched.body):
            if fetched.truncated or len(fetched.body) > self._max_feed_bytes:
                self._skip(skipped, url, "too_large", "feed")
                return []
            return [_FeedSource(url, fetched.body)]
        try:
            links = feed_links(fetched.body[:MAX_PAGE_BYTES], fetched.url, fetched.content_type)
        except Exception:  # one hostile page must not end the whole research
            self._skip(skipped, url, "bad_response", "page")
            return []
        return [_FeedSource(link) for link in links if _is_web_url(link)]

    async def _load_feed(
        self, source: _FeedSource, semaphore: asyncio.Semaphore, skipped: list[SkippedFeed]
    ) -> list[FeedEntry] | None:
        body = source.body
        if body is None:
            try:
                async with semaphore:
                    fetched = await fetch(
                        self.session,
                        "GET",
                        source.url,
                        stage="feed",
                        timeout_s=self._feed_timeout_s,
                        max_bytes=self._max_feed_bytes,
                    )
            except ResearchError as exc:
                self._skip(skipped, source.url, exc.reason, "feed")
                return None
            body = fetched.body
        # feedparser is CPU-bound pure Python; a 2 MB feed would stall every other mission on this loop.
        try:
            entries = await asyncio.to_thread(parse_feed, body, source.url, self._max_items_per_feed)
        except Exception:  # feedparser on hostile input: skip the feed, keep the others
            logger.warning(
                "feed parser failed",
                exc_info=True,
                extra={"action": "research.searxng.parse_error", "url": source.url},
            )
            entries = None
        if entries is None:
            self._skip(skipped, source.url, "bad_response", "feed")
        return entries

    @staticmethod
    def _skip(skipped: list[SkippedFeed], url: str, reason: str, stage: Literal["page", "feed"]) -> None:
        skipped.append(SkippedFeed(url=url, reason=reason, stage=stage))
        logger.info(
            "research source skipped",
            extra={"action": "research.searxng.skipped", "url": url, "reason": reason, "stage": stage},
        )


def _is_web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
