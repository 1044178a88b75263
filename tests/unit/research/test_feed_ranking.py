from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from mana_ai.research.base import first_unique
from mana_ai.research.feeds import (
    FeedEntry,
    feed_links,
    keywords,
    looks_like_feed,
    parse_feed,
    plain_text,
    rank_entries,
)

NOW = dt.datetime(2024, 6, 10, 12, 0, tzinfo=dt.UTC)


def _entry(
    url: str,
    title: str,
    text: str = "",
    *,
    age: dt.timedelta | None = None,
    feed: str = "https://f.example/rss",
) -> FeedEntry:
    return FeedEntry(
        url=url, title=title, text=text, feed_url=feed, published=None if age is None else NOW - age
    )


def test_keywords_drop_stopwords_short_words_and_duplicates() -> None:
    assert keywords("Recherchiere die neuesten KI-News, KI und a News") == [
        "recherchiere",
        "neuesten",
        "ki",
        "news",
    ]


def test_scoring_frequency_title_bonus_and_recency() -> None:
    entries = [
        # "ki": 2 hits in title+text + 3 title bonus = 5; "news": 1 + 3 = 4; younger than a day: +2 -> 11
        _entry("https://a/1", "KI-News", "Über KI", age=dt.timedelta(hours=3)),
        # "ki" once in text = 1; three days old: +1 -> 2
        _entry("https://a/2", "Wetter", "auch KI", age=dt.timedelta(days=3)),
        # "ki" once in text = 1; old: no bonus -> 1
        _entry("https://a/3", "Sport", "etwas KI", age=dt.timedelta(days=30)),
        # no keyword: dropped even though it is fresh
        _entry("https://a/4", "Wetter", "Sonne", age=dt.timedelta(hours=1)),
        # "ki" is short, so it must match a whole word: "Kinder" and "Skiing" do not count
        _entry("https://a/5", "Kinderbuch", "Skiing", age=dt.timedelta(hours=1)),
    ]
    articles = rank_entries("KI-News", entries, now=NOW, limit=10)
    assert [(a.url, a.score) for a in articles] == [
        ("https://a/1", 11.0),
        ("https://a/2", 2.0),
        ("https://a/3", 1.0),
    ]
    assert articles[0].published_at == "2024-06-10T09:00:00.000Z"
    assert articles[0].feed_url == "https://f.example/rss"


def test_long_keywords_match_word_prefixes() -> None:
    # "neueste" finds the inflected "neuesten" (German), but not inside another word.
    entries = [_entry("https://a/1", "Die neuesten Modelle"), _entry("https://a/2", "Brandneueste Modelle")]
    assert [a.url for a in rank_entries("neueste", entries, now=NOW, limit=5)] == ["https://a/1"]


def test_limit_ties_and_duplicates() -> None:
    entries = [
        _entry("https://a/old", "KI", age=dt.timedelta(days=30)),
        _entry("https://a/undated", "KI"),
        _entry("https://a/new", "KI", age=dt.timedelta(days=20)),
        # The same article from a second feed counts once, with its best score.
        _entry("https://a/old", "KI KI", age=dt.timedelta(days=30), feed="https://g.example/rss"),
    ]
    articles = rank_entries("KI", entries, now=NOW, limit=3)
    assert [a.url for a in articles] == ["https://a/old", "https://a/new", "https://a/undated"]
    assert articles[0].feed_url == "https://g.example/rss"
    assert len(rank_entries("KI", entries, now=NOW, limit=1)) == 1


def test_excerpt_is_truncated() -> None:
    (article,) = rank_entries("ki", [_entry("https://a/1", "KI", "wort " * 200)], now=NOW, limit=1)
    assert article.excerpt is not None
    assert len(article.excerpt) == 300
    assert article.excerpt.endswith("…")


def test_plain_text_strips_markup() -> None:
    assert plain_text("<p>Neue <b>KI</b>&amp;Co\n\n modelle</p>") == "Neue KI &Co modelle"
    assert plain_text(None) == ""


def test_looks_like_feed() -> None:
    assert looks_like_feed("text/xml", b'<?xml version="1.0"?>\n<rss version="2.0">')
    assert looks_like_feed("text/html", b"\xef\xbb\xbf<feed xmlns='http://www.w3.org/2005/Atom'>")
    assert looks_like_feed("application/atom+xml; charset=utf-8", b"")
    assert not looks_like_feed("text/html", b"<!DOCTYPE html><html><head>")
    assert not looks_like_feed("application/rss+xml", b"<html><body>error page</body></html>")


def test_feed_links_from_html() -> None:
    html = b"""<html><head>
    <link rel="stylesheet" href="/style.css">
    <link rel="alternate" type="application/rss+xml" href="/feed.xml">
    <LINK REL="Alternate feed" TYPE="application/atom+xml; charset=utf-8" HREF="https://other.example/atom">
    <link rel="alternate" type="text/html" href="/de">
    <link rel="alternate" type="application/rss+xml" href="/feed.xml">
    </head></html>"""
    assert feed_links(html, "https://site.example/blog/post", "text/html; charset=latin-1") == [
        "https://site.example/feed.xml",
        "https://other.example/atom",
    ]
    assert feed_links(b"<html", "https://x.example/", "text/html; charset=bogus") == []


def test_parse_feed_never_opens_paths() -> None:
    # Given raw bytes, feedparser would try them as a file name first; we must not let it.
    assert parse_feed(b"/etc/hostname", "https://x.example/feed", 10) is None


def test_first_unique_keeps_order_and_stops_reading_at_its_limit() -> None:
    consumed: list[str] = []

    def values() -> Iterator[str]:
        for value in ["b", "a", "b", "c", "a", "d", "e"]:
            consumed.append(value)
            yield value

    assert first_unique(values()) == ["b", "a", "c", "d", "e"]
    consumed.clear()
    assert first_unique(values(), 3) == ["b", "a", "c"]
    assert consumed == ["b", "a", "b", "c"]  # nothing after the third distinct value is read
    assert first_unique([], 0) == [] and first_unique(["x"], 0) == []
