"""Research port, result types and the HTTP plumbing the research adapters share (SPEC §8).

Unlike the original clients, which turned every failure into ``null``, the adapters here raise
:class:`~mana_ai.errors.ResearchError` with a ``stage`` (which request failed) and a ``reason`` (why), so the
runner can log and count failures. ``None`` from :meth:`ResearchClient.research` only ever means "nothing
found".

Driver exceptions are translated once, in :func:`fetch`: nothing above this module catches ``aiohttp.*``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self

import aiohttp
import orjson

from mana_ai.errors import ResearchError

logger = logging.getLogger(__name__)

FailureReason = Literal["timeout", "unreachable", "http_4xx", "http_5xx", "bad_response", "too_large"]
"""The ``reason`` values our adapters put on a :class:`ResearchError`."""

TRANSIENT_REASONS: Final[frozenset[str]] = frozenset({"timeout", "unreachable", "http_5xx"})
"""Reasons worth retrying on a later tick; the others will fail the same way again."""

DEFAULT_MAX_JSON_BYTES: Final = 5_000_000
"""Upper bound for a JSON API response; protects the runner's memory from a misbehaving backend."""

USER_AGENT: Final = "mana-ai-research/0.1"


@dataclass(frozen=True, slots=True)
class Article:
    """One article found by shallow research."""

    url: str
    title: str
    excerpt: str | None
    published_at: str | None
    """ISO-8601 timestamp as the backend sent it (ours: JS ``toISOString`` form), or None."""
    feed_url: str | None
    score: float
    """Relevance score; higher is better."""


@dataclass(frozen=True, slots=True)
class SkippedFeed:
    """A feed (or a page searched for feed links) that research had to leave out."""

    url: str
    reason: str
    """One of the :data:`FailureReason` values."""
    stage: Literal["page", "feed"] = "feed"


@dataclass(frozen=True, slots=True)
class ResearchResult:
    """What shallow research found."""

    articles: list[Article]
    feed_count: int
    """How many feeds (sources) were searched."""
    context_markdown: str
    """The articles rendered for the planner prompt (:func:`mana_ai.research.render.render_shallow_markdown`)."""
    skipped_feeds: tuple[SkippedFeed, ...] = ()
    """Feeds that failed and were left out (only backends that fetch feeds themselves fill this)."""


@dataclass(frozen=True, slots=True)
class Citation:
    """A source cited by a deep-research answer."""

    url: str
    title: str
    snippet: str | None = None


class ResearchClient(Protocol):
    """A shallow research backend."""

    async def research(self, query: str, *, language: str = "de", limit: int = 8) -> ResearchResult | None:
        """Search the web for ``query``.

        Returns:
            The result, or None when nothing was found.

        Raises:
            ResearchError: when the backend failed.
        """
        ...


def is_transient(error: ResearchError) -> bool:
    """Whether a research failure may go away by itself (worth trying again on a later tick)."""
    return error.reason in TRANSIENT_REASONS


class HttpClientBase:
    """Owns one ``aiohttp.ClientSession``; use ``async with`` or :meth:`open` / :meth:`close`.

    The session is not created lazily: the composition root decides when clients live.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the HTTP session (idempotent)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session.

        Raises:
            RuntimeError: when the client was not opened.
        """
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__} is not open; use 'async with' or 'await open()'")
        return self._session


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded response body."""

    status: int
    content_type: str
    body: bytes
    url: str
    """The final URL after redirects."""
    truncated: bool = False


async def fetch(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    stage: str,
    timeout_s: float,
    max_bytes: int = DEFAULT_MAX_JSON_BYTES,
    truncate: bool = False,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    check_status: bool = True,
) -> Fetched:
    """Send one request and read the body, never more than ``max_bytes``.

    Args:
        session: The session to use.
        method: HTTP method.
        url: Absolute URL.
        stage: Stage name put on any :class:`ResearchError`.
        timeout_s: Total time for connect, send and reading the body.
        max_bytes: Body size limit (after content decoding, so a gzip bomb is caught too).
        truncate: Return the first ``max_bytes`` (``truncated=True``) instead of failing with ``too_large``.
        json_body: Serialised with orjson as the request body when not None.
        headers: Extra request headers.
        params: Query parameters.
        check_status: Raise for non-2xx statuses.

    Returns:
        The status, content type, body and final URL.

    Raises:
        ResearchError: on timeout, connection failure, an oversize body or (with ``check_status``) a non-2xx
            status.
    """
    request_headers = dict(headers or {})
    data: bytes | None = None
    if json_body is not None:
        data = orjson.dumps(json_body)
        request_headers["Content-Type"] = "application/json"
    try:
        async with session.request(
            method,
            url,
            data=data,
            headers=request_headers,
            params=params,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            if check_status:
                raise_for_status(stage, response.status)
            body, truncated = await _read_limited(
                response, stage=stage, max_bytes=max_bytes, truncate=truncate
            )
            return Fetched(
                status=response.status,
                content_type=response.headers.get("Content-Type", ""),
                body=body,
                url=str(response.url),
                truncated=truncated,
            )
    except ResearchError:
        raise
    except TimeoutError as exc:
        # Checked before ClientError: aiohttp's ServerTimeoutError is both.
        raise ResearchError(
            f"{stage}: timed out after {timeout_s:g}s", stage=stage, reason="timeout"
        ) from exc
    except aiohttp.ClientPayloadError as exc:
        raise ResearchError(f"{stage}: broken response body", stage=stage, reason="bad_response") from exc
    except aiohttp.ClientResponseError as exc:
        raise ResearchError(f"{stage}: invalid HTTP response", stage=stage, reason="bad_response") from exc
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        # ValueError: aiohttp rejects some malformed URLs with it rather than InvalidURL.
        raise ResearchError(f"{stage}: {type(exc).__name__}", stage=stage, reason="unreachable") from exc


def raise_for_status(stage: str, status: int) -> None:
    """Raise a :class:`ResearchError` for a non-2xx status."""
    if 200 <= status < 300:
        return
    if 400 <= status < 500:
        reason = "http_4xx"
    elif 500 <= status < 600:
        reason = "http_5xx"
    else:
        reason = "bad_response"
    raise ResearchError(f"{stage}: HTTP {status}", stage=stage, reason=reason)


async def _read_limited(
    response: aiohttp.ClientResponse, *, stage: str, max_bytes: int, truncate: bool
) -> tuple[bytes, bool]:
    declared = response.content_length
    if declared is not None and declared > max_bytes and not truncate:
        raise ResearchError(
            f"{stage}: body of {declared} bytes exceeds {max_bytes}", stage=stage, reason="too_large"
        )
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        if total + len(chunk) > max_bytes:
            if truncate:
                chunks.append(chunk[: max_bytes - total])
                return b"".join(chunks), True
            raise ResearchError(f"{stage}: body exceeds {max_bytes} bytes", stage=stage, reason="too_large")
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks), False


def decode_json_object(stage: str, body: bytes) -> dict[str, Any]:
    """Parse a JSON object.

    Raises:
        ResearchError: ``bad_response`` when the body is not JSON or not an object.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResearchError(f"{stage}: response is not JSON", stage=stage, reason="bad_response") from exc
    if not isinstance(value, dict):
        raise ResearchError(f"{stage}: response is not a JSON object", stage=stage, reason="bad_response")
    return value


def optional_str(value: Any) -> str | None:
    """``value`` when it is a non-empty string, else None (backend JSON is not trusted to be typed)."""
    return value if isinstance(value, str) and value else None


def first_unique(values: Iterable[str], limit: int | None = None) -> list[str]:
    """The distinct ``values`` in their order, at most ``limit`` of them.

    Linear and stops at the limit: a backend answer with tens of thousands of entries must not hold the
    event loop (a list's ``in`` made this quadratic).
    """
    seen: dict[str, None] = {}
    if limit is not None and limit <= 0:
        return []
    for value in values:
        seen.setdefault(value)
        if len(seen) == limit:
            break
    return list(seen)
