"""JWT verification under attack and outage (issue 14, items 5 and 8).

* an RS256 header naming an Ed25519 key is a 401, not a 500;
* the issuer is exactly MANA_AUTH_URL (or JWT_ISSUER): no hard-coded extra issuers;
* a failing JWKS endpoint is asked once per backoff period, not once per request;
* requests never queue behind a hanging JWKS fetch: concurrent requests share one fetch.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519

from mana_ai.http.auth import AuthError, JwtVerifier
from mana_ai.settings import Settings
from tests.integration.http_helpers import free_port


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


ED_KEY = ed25519.Ed25519PrivateKey.generate()
JWKS = {
    "keys": [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(ED_KEY.public_key().public_bytes_raw()),
            "kid": "ed1",
            "alg": "EdDSA",
        }
    ]
}


@asynccontextmanager
async def jwks_server(behaviour: str = "ok", body: Any = JWKS) -> AsyncIterator[tuple[str, list[float]]]:
    """A JWKS endpoint that answers ``body``, fails with 500, or hangs; records each hit."""
    hits: list[float] = []
    release = asyncio.Event()

    async def serve(_request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        if behaviour == "fail":
            return web.Response(status=500)
        if behaviour == "hang":
            await release.wait()
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/v1/auth/jwks", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        release.set()
        await runner.cleanup()


def token(iss: str, *, alg: str = "EdDSA", kid: str = "ed1", key: Any = ED_KEY) -> str:
    claims = {"sub": "alice", "aud": "mana", "iss": iss, "exp": int(time.time()) + 600}
    return "Bearer " + jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def verifier(auth_url: str, **kw: Any) -> JwtVerifier:
    return JwtVerifier(Settings(auth_url=auth_url, **kw), fetch_timeout_s=0.5)


def rs256_with_ed25519_kid(iss: str) -> str:
    # The signature does not matter: the header alone reached the 500.
    header = b64url(b'{"alg":"RS256","kid":"ed1","typ":"JWT"}')
    body = b64url(f'{{"sub":"alice","aud":"mana","iss":"{iss}","exp":{int(time.time()) + 600}}}'.encode())
    return f"Bearer {header}.{body}.{b64url(b'x' * 256)}"


async def test_valid_token_passes_and_rs256_header_with_an_ed25519_kid_is_refused() -> None:
    async with jwks_server() as (url, _hits):
        v = verifier(url)
        assert (await v.authenticate(token(url))).user_id == "alice"
        with pytest.raises(AuthError):
            await v.authenticate(rs256_with_ed25519_kid(url))


async def test_rs256_header_with_an_ed25519_kid_is_a_401_over_http(db: Any, app_db_url: str) -> None:
    import aiohttp

    from mana_ai.testing.fake_llm import FakeLlmServer
    from tests.integration.http_helpers import serve_http
    from tests.integration.runner_helpers import running_app

    async with (
        jwks_server() as (url, _hits),
        FakeLlmServer() as llm,
        running_app(app_db_url, llm, auth_url=url) as app,
        serve_http(app) as base,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(
            base + "/api/v1/me/ai-audit", headers={"Authorization": rs256_with_ed25519_kid(url)}
        ) as resp:
            assert resp.status == 401


@pytest.mark.parametrize("issuer", ["https://auth.mana.how", "http://localhost:3001"])
async def test_only_the_configured_issuer_is_accepted(issuer: str) -> None:
    async with jwks_server() as (url, _hits):
        with pytest.raises(AuthError):
            await verifier(url).authenticate(token(issuer))
        extra = verifier(url, jwt_issuer=issuer)
        assert (await extra.authenticate(token(issuer))).user_id == "alice"


async def test_a_failing_jwks_is_asked_once_per_backoff_not_per_request() -> None:
    async with jwks_server("fail") as (url, hits):
        v = verifier(url)
        for _ in range(5):
            with pytest.raises(AuthError):
                await v.authenticate(token(url))
        assert len(hits) == 1 and v.fetches == 1


@pytest.mark.parametrize("body", [{"keys": None}, {"keys": 5}, {"keys": ["not-a-jwk", JWKS["keys"][0]]}])
async def test_a_malformed_key_set_is_a_401_and_its_good_keys_still_verify(body: Any) -> None:
    # A key set that is not a list, or holds a key that is not an object, once reached the request as a
    # TypeError or AttributeError (a 500); later requests in the refetch window got 401.
    async with jwks_server(body=body) as (url, hits):
        v = verifier(url)
        has_good_key = isinstance(body["keys"], list)
        for _ in range(3):
            if has_good_key:
                assert (await v.authenticate(token(url))).user_id == "alice"
            else:
                with pytest.raises(AuthError):
                    await v.authenticate(token(url))
        assert len(hits) == 1


async def test_concurrent_requests_share_one_hanging_fetch() -> None:
    async with jwks_server("hang") as (url, hits):
        v = verifier(url)
        results = await asyncio.gather(
            *(v.authenticate(token(url)) for _ in range(4)), return_exceptions=True
        )
        assert all(isinstance(r, AuthError) for r in results)
        assert len(hits) == 1 and v.fetches == 1


async def test_a_stale_cached_key_answers_at_once_while_the_refresh_runs(monkeypatch: Any) -> None:
    async with jwks_server() as (url, hits):
        v = verifier(url)
        await v.authenticate(token(url))
        v._fetched_at -= 10_000  # the cache is stale
        v._next_fetch_at = 0.0
        principal: Callable[[], Any] = lambda: v.authenticate(token(url))  # noqa: E731
        assert (await principal()).user_id == "alice"  # answered from the stale key
        assert v.fetches == 2  # and a refresh was started
        await asyncio.sleep(0)
        assert v._inflight is not None
        await v._inflight
        assert len(hits) == 2
