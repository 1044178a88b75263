"""Shallow research through mana-api's news-research endpoints (SPEC §8.1).

Two calls: ``discover`` finds RSS feeds for the query, ``search`` ranks their articles. Two fixes over the
original ``NewsResearchClient``:

- W4: mana-api guards ``/api/*`` with a JWT (and a beta tier); the original sent no credentials and every
  call failed silently. We send a configured token in a configured header.
- Failures raise :class:`~mana_ai.errors.ResearchError` (stage ``discover`` or ``search``) instead of
  vanishing as ``null``; ``None`` means only "no feeds" or "no articles".

The token is never logged and never part of an error message.
"""

from __future__ import annotations

import logging
from typing import Any

from mana_ai.errors import ResearchError
from mana_ai.research.base import (
    DEFAULT_MAX_JSON_BYTES,
    Article,
    HttpClientBase,
    ResearchResult,
    decode_json_object,
    fetch,
    first_unique,
    optional_str,
)
from mana_ai.research.render import render_shallow_markdown

logger = logging.getLogger(__name__)

DISCOVER_PATH = "/api/v1/news-research/discover"
SEARCH_PATH = "/api/v1/news-research/search"
DISCOVER_LIMIT = 5
"""How many feeds ``discover`` is asked for (fixed in the original)."""


class ManaApiResearchClient(HttpClientBase):
    """:class:`~mana_ai.research.base.ResearchClient` backed by mana-api.

    Args:
        base_url: mana-api base URL (``MANA_API_URL``), e.g. ``http://mana-api:3060``.
        auth_header: Header that carries ``token``. For ``Authorization`` the value is ``Bearer <token>``,
            for any other header the raw token.
        token: Credential for mana-api; None sends no credentials (as the original did).
        discover_timeout_s: Total timeout of the discover call.
        search_timeout_s: Total timeout of the search call.
        max_response_bytes: Size limit of one response body (``too_large`` beyond it).
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth_header: str = "Authorization",
        token: str | None = None,
        discover_timeout_s: float = 15,
        search_timeout_s: float = 30,
        max_response_bytes: int = DEFAULT_MAX_JSON_BYTES,
    ) -> None:
        super().__init__()
        self._base_url = base_url.rstrip("/")
        self._headers: dict[str, str] = {}
        if token:
            value = f"Bearer {token}" if auth_header.lower() == "authorization" else token
            self._headers[auth_header] = value
        self._discover_timeout_s = discover_timeout_s
        self._search_timeout_s = search_timeout_s
        self._max_response_bytes = max_response_bytes

    def __repr__(self) -> str:
        # Keep the token out of reprs that end up in logs or tracebacks.
        return f"{type(self).__name__}(base_url={self._base_url!r}, authenticated={bool(self._headers)})"

    async def research(self, query: str, *, language: str = "de", limit: int = 8) -> ResearchResult | None:
        """Discover feeds for ``query`` and return their most relevant articles.

        Args:
            query: What to look for (the mission objective).
            language: Language hint for feed discovery.
            limit: Maximum number of articles.

        Returns:
            The result, or None when no feeds or no articles were found.

        Raises:
            ResearchError: stage ``discover`` or ``search``; reason ``timeout``, ``unreachable``,
                ``http_4xx``, ``http_5xx``, ``bad_response`` or ``too_large``.
        """
        feed_urls = await self._discover(query, language)
        if not feed_urls:
            logger.info("no feeds discovered", extra={"action": "research.news.no_feeds"})
            return None
        articles = await self._search(feed_urls, query, limit)
        if not articles:
            logger.info(
                "no articles found",
                extra={"action": "research.news.no_articles", "feed_count": len(feed_urls)},
            )
            return None
        # The original reports the number of discovered feeds, not the backend's feedCount.
        feed_count = len(feed_urls)
        return ResearchResult(
            articles=articles,
            feed_count=feed_count,
            context_markdown=render_shallow_markdown(query, feed_count, articles),
        )

    async def _discover(self, query: str, language: str) -> list[str]:
        stage = "discover"
        fetched = await fetch(
            self.session,
            "POST",
            self._base_url + DISCOVER_PATH,
            stage=stage,
            timeout_s=self._discover_timeout_s,
            json_body={"query": query, "language": language, "limit": DISCOVER_LIMIT},
            headers=self._headers,
            max_bytes=self._max_response_bytes,
        )
        payload = decode_json_object(stage, fetched.body)
        feeds = payload.get("feeds", [])
        if not isinstance(feeds, list):
            raise ResearchError(f"{stage}: 'feeds' is not a list", stage=stage, reason="bad_response")
        urls = (optional_str(feed.get("url")) if isinstance(feed, dict) else None for feed in feeds)
        return first_unique(url for url in urls if url)

    async def _search(self, feed_urls: list[str], query: str, limit: int) -> list[Article]:
        stage = "search"
        fetched = await fetch(
            self.session,
            "POST",
            self._base_url + SEARCH_PATH,
            stage=stage,
            timeout_s=self._search_timeout_s,
            json_body={"feeds": feed_urls, "query": query, "limit": limit},
            headers=self._headers,
            max_bytes=self._max_response_bytes,
        )
        payload = decode_json_object(stage, fetched.body)
        raw_articles = payload.get("articles", [])
        if not isinstance(raw_articles, list):
            raise ResearchError(f"{stage}: 'articles' is not a list", stage=stage, reason="bad_response")
        articles = [article for raw in raw_articles if (article := _parse_article(raw)) is not None]
        return articles[:limit]


def _parse_article(raw: Any) -> Article | None:
    """One article from the search response; entries without a URL are dropped (the model may only cite
    URLs we list)."""
    if not isinstance(raw, dict):
        return None
    url = optional_str(raw.get("url"))
    if url is None:
        return None
    score = raw.get("score")
    return Article(
        url=url,
        title=optional_str(raw.get("title")) or url,
        excerpt=optional_str(raw.get("excerpt")),
        published_at=optional_str(raw.get("publishedAt")),
        feed_url=optional_str(raw.get("feedUrl")),
        score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else 0.0,
    )
