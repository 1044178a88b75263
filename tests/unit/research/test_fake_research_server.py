from __future__ import annotations

import asyncio

import aiohttp
import pytest

from mana_ai.testing.fake_research import SEARXNG_PATH, FakeResearchServer, FakeResponse


async def test_scripted_responses_are_served_in_order_and_the_last_repeats(
    server: FakeResearchServer,
) -> None:
    server.script("GET", "/x", FakeResponse(status=500), FakeResponse(body=b"ok", content_type="text/plain"))
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.get(server.url_for("/x?a=1"), headers={"X-Test": "v"}) as response:
                statuses.append((response.status, await response.read()))
    assert [s for s, _ in statuses] == [500, 200, 200]
    assert statuses[-1][1] == b"ok"
    first = server.requests_to("/x")[0]
    assert first.query["a"] == "1"
    assert first.headers["x-test"] == "v"


async def test_unscripted_path_is_404_and_recorded(server: FakeResearchServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url_for("/nope"), data=b"body") as response,
    ):
        assert response.status == 404
    assert server.requests_to("/nope", "POST")[0].body == b"body"


async def test_searxng_requires_json_format(server: FakeResearchServer) -> None:
    server.searxng(["https://a.example/"])
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url_for(SEARXNG_PATH), params={"q": "x"}) as response:
            assert response.status == 403
        async with session.get(server.url_for(SEARXNG_PATH), params={"q": "x", "format": "json"}) as response:
            assert (await response.json())["results"][0]["url"] == "https://a.example/"


async def test_wait_for_requests_and_stop_releases_hanging_handlers() -> None:
    server = FakeResearchServer()
    with pytest.raises(RuntimeError):
        _ = server.url
    await server.start()
    server.script("GET", "/hang", FakeResponse(hang=True))
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(session.get(server.url_for("/hang")))
        (request,) = await asyncio.wait_for(server.wait_for_requests("/hang"), timeout=5)
        assert request.method == "GET"
        await asyncio.wait_for(server.stop(), timeout=5)
        response = await pending
        assert response.status == 200
        response.release()


async def test_delay_is_applied(server: FakeResearchServer) -> None:
    server.script("GET", "/slow", FakeResponse(delay_s=0.5, body=b"late"))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            async with session.get(server.url_for("/slow"), timeout=aiohttp.ClientTimeout(total=0.1)):
                pass
