"""Pure feed handling for the local research backend: feed detection, feed links, parsing and ranking.

No I/O here: :mod:`mana_ai.research.searxng` downloads the bytes (with its size limit) and hands them over.

Ranking follows mana-api's ``/search`` (SPEC §8.1): keyword frequency in title and text, +3 per keyword found
in the title, +2 for articles younger than a day and +1 younger than a week, articles scoring 0 dropped.
The SPEC does not say whether the recency bonus applies to articles without any keyword hit; here it does
not, so an unrelated but fresh article is still dropped (otherwise every article of the last week would be
"relevant").
"""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Final
from urllib.parse import urljoin

import feedparser

from mana_ai.research.base import Article, first_unique
from mana_ai.timefmt import UTC, to_js_iso

FEED_LINK_TYPES: Final = frozenset({"application/rss+xml", "application/atom+xml"})
FEED_CONTENT_TYPES: Final = ("application/rss+xml", "application/atom+xml", "application/rdf+xml")
TITLE_HIT_BONUS: Final = 3
EXCERPT_CHARS: Final = 300

_STOPWORDS: Final = frozenset(
    "der die das den dem des ein eine einen einem einer und oder zu zum zur im in am an auf fuer für mit von "
    "vom bei ueber über ist sind was wie wer ich mir mich du es the a an and or of to for on at by with is "
    "are what how".split()
)
_TAG = re.compile(r"<[^>]*>")
_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One feed item, reduced to what ranking and rendering need."""

    url: str
    title: str
    text: str
    """Plain-text summary or content (tags stripped, whitespace collapsed)."""
    feed_url: str
    published: dt.datetime | None


def looks_like_feed(content_type: str, body: bytes) -> bool:
    """Whether a downloaded document is an RSS/Atom/RDF feed rather than an HTML page.

    The body is sniffed first because many servers send feeds as ``text/xml`` or even ``text/html``.
    """
    head = body[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<html" in head or head.startswith(b"<!doctype html"):
        return False
    if b"<rss" in head or b"<feed" in head or b"<rdf:rdf" in head:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in FEED_CONTENT_TYPES


class _FeedLinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "link":
            return
        values = {name.lower(): (value or "") for name, value in attrs}
        rels = values.get("rel", "").lower().split()
        media_type = values.get("type", "").split(";", 1)[0].strip().lower()
        href = values.get("href", "").strip()
        if "alternate" in rels and media_type in FEED_LINK_TYPES and href:
            self.hrefs.append(href)


def feed_links(body: bytes, page_url: str, content_type: str = "") -> list[str]:
    """Feed URLs announced by an HTML page's ``<link rel="alternate" type="application/rss+xml">`` tags.

    Args:
        body: The page bytes (may be cut off).
        page_url: The page's final URL, for resolving relative links.
        content_type: The page's Content-Type header (for its charset).

    Returns:
        Absolute feed URLs in page order, without duplicates.
    """
    parser = _FeedLinkParser()
    parser.feed(body.decode(_charset(content_type), errors="replace"))
    parser.close()
    return first_unique(urljoin(page_url, href) for href in parser.hrefs)


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
            try:
                "".encode(charset)
            except LookupError:
                break
            return charset
    return "utf-8"


def parse_feed(body: bytes, feed_url: str, max_items: int) -> list[FeedEntry] | None:
    """Parse feed bytes with feedparser.

    The bytes are wrapped in a stream on purpose: given ``bytes`` or ``str``, feedparser first tries to open
    them as a file path (or fetch them as a URL), which a hostile feed body must never trigger.

    Args:
        body: The downloaded feed.
        feed_url: Where it came from (base for relative links, and ``Article.feed_url``).
        max_items: Entries to keep, from the top of the feed.

    Returns:
        The entries with a usable link (possibly none), or None when the body is not a feed at all.
    """
    parsed: Any = feedparser.parse(io.BytesIO(body), response_headers={"content-location": feed_url})
    if not parsed.entries and (parsed.bozo or not parsed.version):
        return None
    entries: list[FeedEntry] = []
    for raw in parsed.entries[:max_items]:
        entry = _entry(raw, feed_url)
        if entry is not None:
            entries.append(entry)
    return entries


def _entry(raw: Any, feed_url: str) -> FeedEntry | None:
    link = raw.get("link")
    if not isinstance(link, str) or not link.startswith(("http://", "https://")):
        return None
    summary = raw.get("summary")
    if not summary and raw.get("content"):
        summary = raw["content"][0].get("value")
    return FeedEntry(
        url=link,
        title=plain_text(raw.get("title")) or link,
        text=plain_text(summary),
        feed_url=feed_url,
        published=_published(raw.get("published_parsed") or raw.get("updated_parsed")),
    )


def _published(parsed_time: Any) -> dt.datetime | None:
    if parsed_time is None:
        return None
    try:
        year, month, day, hour, minute, second = parsed_time[:6]
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def plain_text(value: Any) -> str:
    """Feed HTML to one line of text."""
    if not isinstance(value, str):
        return ""
    return _WHITESPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()


def keywords(query: str) -> list[str]:
    """Lower-case query words worth matching: no stop words, no single characters, no duplicates."""
    words: list[str] = []
    for word in _WORD.findall(query.lower()):
        if len(word) >= 2 and word not in _STOPWORDS and word not in words:
            words.append(word)
    return words


def _keyword_pattern(word: str) -> re.Pattern[str]:
    # Words of four or more letters match as word prefixes so German inflections count ("neueste" finds
    # "neuesten"); shorter ones ("ki", "eu") must be whole words or they would hit inside unrelated words.
    suffix = "" if len(word) >= 4 else r"(?!\w)"
    return re.compile(r"(?<!\w)" + re.escape(word) + suffix)


def score_entry(patterns: Sequence[re.Pattern[str]], entry: FeedEntry, now: dt.datetime) -> float:
    """Relevance of one entry (0 = irrelevant).

    Args:
        patterns: Compiled keyword patterns (see :func:`keywords`).
        entry: The entry.
        now: Current time for the recency bonus.
    """
    title = entry.title.lower()
    text = f"{title} {entry.text.lower()}"
    score = 0
    for pattern in patterns:
        score += len(pattern.findall(text))
        if pattern.search(title):
            score += TITLE_HIT_BONUS
    if score == 0:
        return 0.0
    if entry.published is not None:
        age = now - entry.published
        if age < dt.timedelta(days=1):
            score += 2
        elif age < dt.timedelta(days=7):
            score += 1
    return float(score)


def rank_entries(query: str, entries: Iterable[FeedEntry], *, now: dt.datetime, limit: int) -> list[Article]:
    """The ``limit`` most relevant entries as articles, best first (ties: newer first).

    Args:
        query: The research query.
        entries: Entries from all feeds; the same URL from several feeds counts once (its best score).
        now: Current time for the recency bonus.
        limit: Maximum number of articles.
    """
    patterns = [_keyword_pattern(word) for word in keywords(query)]
    best: dict[str, tuple[float, FeedEntry]] = {}
    for entry in entries:
        score = score_entry(patterns, entry, now)
        if score > 0 and (entry.url not in best or score > best[entry.url][0]):
            best[entry.url] = (score, entry)
    ranked = sorted(
        best.values(),
        key=lambda item: (-item[0], -(item[1].published.timestamp() if item[1].published else float("-inf"))),
    )
    return [_article(score, entry) for score, entry in ranked[:limit]]


def _article(score: float, entry: FeedEntry) -> Article:
    excerpt = entry.text
    if len(excerpt) > EXCERPT_CHARS:
        excerpt = excerpt[: EXCERPT_CHARS - 1].rstrip() + "…"
    return Article(
        url=entry.url,
        title=entry.title,
        excerpt=excerpt or None,
        published_at=to_js_iso(entry.published) if entry.published else None,
        feed_url=entry.feed_url,
        score=score,
    )
