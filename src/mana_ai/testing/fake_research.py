"""A real HTTP server on loopback that plays every research backend mana-ai talks to.

One :class:`FakeResearchServer` can act as mana-api's news-research endpoints, a SearxNG instance, any number
of feed and web-page hosts, and mana-research's async job API, all at once (the paths do not collide).
Each test scripts what a path answers (:meth:`FakeResearchServer.script`): status, body, content type,
a delay, hanging until the client gives up, or a streamed oversize body. Every request is recorded with
its headers and body.

Example::

    async with FakeResearchServer() as server:
        server.news_api(feeds=[...], articles=[...])
        async with ManaApiResearchClient(server.url, token="t") as client:
            result = await client.research("KI-News")
        assert server.requests_to("/api/v1/news-research/discover")[0].json()["limit"] == 5
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

NEWS_DISCOVER_PATH = "/api/v1/news-research/discover"
NEWS_SEARCH_PATH = "/api/v1/news-research/search"
SEARXNG_PATH = "/search"
DEEP_JOBS_PATH = "/api/v1/internal/research/async"

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FakeResponse:
    """What the fake answers to one request."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Wait this long before answering (cut short when the server stops)."""
    hang: bool = False
    """Never answer; the handler is released when the server stops. For client timeout tests."""
    stream_bytes: int = 0
    """When > 0: stream ``body`` then filler up to this many bytes, chunked, without Content-Length."""

    @classmethod
    def json(cls, value: Any, status: int = 200) -> FakeResponse:
        """A JSON response."""
        return cls(status=status, body=orjson.dumps(value))


Responder = FakeResponse | Callable[["RecordedRequest"], FakeResponse]
"""A fixed response, or a function of the request."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the fake received."""

    method: str
    path: str
    """Decoded path without the query string."""
    raw_path: str
    """Path and query as sent (percent-encoding kept)."""
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


class FakeResearchServer:
    """Scriptable fake research backends on ``127.0.0.1`` (random port)."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._scripts: dict[tuple[str, str], list[Responder]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._released = asyncio.Event()
        self._received = asyncio.Condition()

    # -- lifetime -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner
        self._released.clear()

    async def stop(self) -> None:
        """Release hanging handlers, then shut down."""
        self._released.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._port is None:
            raise RuntimeError("FakeResearchServer is not started")
        return f"http://127.0.0.1:{self._port}"

    def url_for(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return self.url + path

    # -- scripting ------------------------------------------------------------------------------------

    def script(self, method: str, path: str, *responses: Responder) -> None:
        """Answer ``method path`` with ``responses`` in order; the last one repeats.

        Unscripted paths answer 404.
        """
        if not responses:
            raise ValueError("script() needs at least one response")
        self._scripts[(method.upper(), path)] = list(responses)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests for ``path`` (optionally only one method)."""
        return [r for r in self.requests if r.path == path and (method is None or r.method == method.upper())]

    async def wait_for_requests(self, path: str, count: int = 1) -> list[RecordedRequest]:
        """Wait until ``path`` has received ``count`` requests (use with a timeout in tests)."""
        async with self._received:
            await self._received.wait_for(lambda: len(self.requests_to(path)) >= count)
        return self.requests_to(path)

    # -- canned backends ------------------------------------------------------------------------------

    def news_api(
        self,
        *,
        feeds: Sequence[Mapping[str, Any]] = (),
        articles: Sequence[Mapping[str, Any]] = (),
        feed_count: int | None = None,
    ) -> None:
        """Act as mana-api's news-research ``discover`` and ``search`` endpoints."""
        self.script("POST", NEWS_DISCOVER_PATH, FakeResponse.json({"feeds": list(feeds), "searched": True}))
        count = len(feeds) if feed_count is None else feed_count
        self.script(
            "POST", NEWS_SEARCH_PATH, FakeResponse.json({"articles": list(articles), "feedCount": count})
        )

    def searxng(self, urls: Iterable[str], *, status: int = 200) -> None:
        """Act as SearxNG: ``GET /search?format=json`` lists ``urls``; other formats get 403 as in SearxNG."""
        results = [{"url": url, "title": url, "content": ""} for url in urls]

        def answer(request: RecordedRequest) -> FakeResponse:
            if request.query.get("format") != "json":
                return FakeResponse(status=403, body=b"Forbidden", content_type="text/plain")
            if status != 200:
                return FakeResponse.json({"error": "engine failure"}, status=status)
            return FakeResponse.json({"query": request.query.get("q", ""), "results": results})

        self.script("GET", SEARXNG_PATH, answer)

    def feed(self, path: str, body: bytes | str, *, content_type: str = "application/rss+xml") -> str:
        """Serve a feed document; returns its URL."""
        data = body.encode() if isinstance(body, str) else body
        self.script("GET", path, FakeResponse(body=data, content_type=content_type))
        return self.url_for(path)

    def page(self, path: str, feed_hrefs: Iterable[str], *, feed_type: str = "application/rss+xml") -> str:
        """Serve an HTML page announcing ``feed_hrefs`` (absolute or relative); returns its URL."""
        links = "".join(
            f'<link rel="alternate" type="{feed_type}" title="Feed" href="{href}">' for href in feed_hrefs
        )
        html = f"<!DOCTYPE html><html><head><title>Page</title>{links}</head><body><p>Hallo</p></body></html>"
        self.script("GET", path, FakeResponse(body=html.encode(), content_type="text/html; charset=utf-8"))
        return self.url_for(path)

    def deep_research(
        self,
        *,
        task_id: str = "task-1",
        provider_id: str = "gemini-deep-research-max",
        statuses: Sequence[str] = ("running", "completed"),
        answer: str | None = "Antwort",
        citations: Sequence[Mapping[str, Any]] = (),
        error: str | None = None,
    ) -> None:
        """Act as mana-research: submit answers ``queued``; polls walk through ``statuses`` (last repeats).

        A ``completed`` poll carries ``result.answer`` with ``answer`` and ``citations``; a ``failed`` one
        carries ``error``.
        """
        self.script(
            "POST",
            DEEP_JOBS_PATH,
            FakeResponse.json(
                {"taskId": task_id, "status": "queued", "providerId": provider_id, "costCredits": 5}
            ),
        )
        polls: list[Responder] = []
        for status in statuses:
            payload: dict[str, Any] = {"taskId": task_id, "status": status, "providerId": provider_id}
            if status == "completed":
                payload["result"] = {"answer": {"query": "q", "answer": answer, "citations": list(citations)}}
            if status == "failed" and error is not None:
                payload["error"] = error
            polls.append(FakeResponse.json(payload))
        self.script("GET", f"{DEEP_JOBS_PATH}/{task_id}", *polls)

    # -- handler --------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            raw_path=request.raw_path,
            query=MultiDictProxy(MultiDict(request.query)),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=await request.read(),
        )
        async with self._received:
            self.requests.append(recorded)
            self._received.notify_all()
        script = self._scripts.get((recorded.method, recorded.path))
        if not script:
            return web.Response(status=404, text="not scripted")
        responder = script.pop(0) if len(script) > 1 else script[0]
        response = responder(recorded) if callable(responder) else responder
        if response.hang:
            await self._released.wait()
        elif response.delay_s:
            try:
                await asyncio.wait_for(self._released.wait(), response.delay_s)
            except TimeoutError:
                pass
        if response.stream_bytes:
            return await self._stream(request, response)
        return web.Response(
            status=response.status,
            body=response.body,
            headers={**response.headers, "Content-Type": response.content_type},
        )

    async def _stream(self, request: web.Request, response: FakeResponse) -> web.StreamResponse:
        stream = web.StreamResponse(
            status=response.status, headers={**response.headers, "Content-Type": response.content_type}
        )
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        sent = 0
        try:
            if response.body:
                await stream.write(response.body)
                sent = len(response.body)
            while sent < response.stream_bytes and not self._released.is_set():
                chunk = b" " * min(_CHUNK, response.stream_bytes - sent)
                await stream.write(chunk)
                sent += len(chunk)
            await stream.write_eof()
        except ConnectionError:
            # The client stopped reading (size limit reached): expected.
            pass
        return stream
