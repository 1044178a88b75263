"""The HTTP API fuzzed with schemathesis against its own OpenAPI document: no request gets a 5xx.

The app is served for real (uvicorn on loopback, as the plain database role, with a JWKS server, a runner key
and a fake LLM); schemathesis reads ``/openapi.json`` from it and generates requests for every operation,
valid ones and invalid ones (wrong types, junk headers and query strings), plus requests that carry the
right service key or a valid token, so the tick and the audit query really run with fuzzed input.

Requests are sent synchronously (requests, as schemathesis does) from a worker thread; the server keeps
running on the test's event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
import schemathesis
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from mana_ai.crypto.grants import generate_runner_keypair
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from tests.integration.helpers import mission, put_row
from tests.integration.http_helpers import free_port, serve_http
from tests.integration.runner_helpers import running_app

EXAMPLES_PER_MODE = 100
"""Per operation and strategy: about 1,000 requests in all, a few seconds (200 find a NUL byte in a query
string reliably; 100 most of the time, and the hand-made junk test sends one always)."""
SERVICE_KEY = "fuzz-service-key"
ALWAYS_OPERATIONS = {
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/internal/tick"),
    ("GET", "/api/v1/me/ai-audit"),
    ("GET", "/api/v1/ai-runner-pubkey"),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
async def jwks() -> AsyncIterator[tuple[str, Callable[[str], str]]]:
    """A loopback mana-auth JWKS endpoint and a function that signs a valid token for a user."""
    key = ed25519.Ed25519PrivateKey.generate()
    keys = {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64url(key.public_key().public_bytes_raw()),
                "kid": "k1",
                "alg": "EdDSA",
            }
        ]
    }

    async def serve(_request: web.Request) -> web.Response:
        return web.json_response(keys)

    server = web.Application()
    server.router.add_get("/api/v1/auth/jwks", serve)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"

    def token(sub: str) -> str:
        claims = {"sub": sub, "aud": "mana", "iss": url, "exp": int(time.time()) + 3600}
        return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1"})

    try:
        yield url, token
    finally:
        await runner.cleanup()


HEADER_NAMES = [
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Content-Type",
    "Cookie",
    "If-None-Match",
    "Origin",
    "Range",
    "Referer",
    "User-Agent",
    "X-Forwarded-For",
    "X-Request-Id",
    "traceparent",
    "baggage",
]
"""Headers a client or proxy may send with junk in them; framing headers (Content-Length, Host ...) are
left to the HTTP client."""
junk_headers = st.dictionaries(
    st.sampled_from(HEADER_NAMES) | st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z"),
    # Any visible Latin-1 text and spaces: what HTTP/1.1 lets through (no CR, LF or other controls).
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=200
    ).map(str.strip),
    max_size=4,
)


def fuzz_operation(operation: Any, base: str, fixed_headers: list[dict[str, str]]) -> Counter[int]:
    """Send generated requests for one operation; fail on the first 5xx. Returns the status counts."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if _has_parameters(operation):
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    strategies += [operation.as_strategy(headers=headers) for headers in fixed_headers]
    statuses: Counter[int] = Counter()
    # Operations without parameters generate one request only: make each distinct with junk headers.
    per_strategy = EXAMPLES_PER_MODE if _has_parameters(operation) else EXAMPLES_PER_MODE // 4

    @settings(
        max_examples=per_strategy * len(strategies),
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: the failure message carries the request already
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies), junk=junk_headers)
    def check(case: Any, junk: dict[str, str]) -> None:
        response = case.call(base_url=base, headers=junk, timeout=30)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} headers={dict(case.headers or {})!r} junk={junk!r} "
            f"query={case.query!r} -> {response.status_code}: {response.text[:500]}"
        )

    check()
    return statuses


def _has_parameters(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


def fuzz_all(base: str, fixed: dict[tuple[str, str], list[dict[str, str]]]) -> dict[str, Counter[int]]:
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    results: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        results[f"{key[0]} {key[1]}"] = fuzz_operation(operation, base, fixed.get(key, []))
    return results


async def test_no_request_gets_a_server_error(db, app_db_url, jwks):
    auth_url, token = jwks
    private_pem, _public = generate_runner_keypair()
    await put_row(db, "alice", "aiMissions", "m1", "insert", mission("m1"))  # a tick has something to plan
    async with (
        FakeLlmServer(default=conversation_responder()) as llm,
        running_app(
            app_db_url, llm, auth_url=auth_url, service_key=SERVICE_KEY, private_key_pem=private_pem
        ) as app,
        serve_http(app) as base,
    ):
        fixed = {
            ("POST", "/internal/tick"): [{"x-service-key": SERVICE_KEY}],
            ("GET", "/api/v1/me/ai-audit"): [{"authorization": "Bearer " + token("alice")}],
        }
        results = await asyncio.to_thread(fuzz_all, base, fixed)

    assert ALWAYS_OPERATIONS <= {tuple(k.split(" ", 1)) for k in results}
    # The fuzzing really reached the code behind the checks, not only the 401/422 paths.
    assert results["POST /internal/tick"][200] > 0 and results["POST /internal/tick"][401] > 0
    assert results["GET /api/v1/me/ai-audit"][200] > 0 and results["GET /api/v1/me/ai-audit"][401] > 0
    assert results["GET /api/v1/ai-runner-pubkey"] == Counter(
        {200: results["GET /api/v1/ai-runner-pubkey"][200]}
    )


async def test_hand_made_junk_requests_get_no_server_error(db, app_db_url, jwks):
    """What a schema-driven generator does not send: unknown methods and paths, bodies where none is
    expected, oversized and malformed headers, NUL bytes and huge numbers in query strings."""
    auth_url, token = jwks
    bearer = {"Authorization": "Bearer " + token("alice")}
    requests: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("DELETE", "/health", {}, None),
        ("PATCH", "/internal/tick", {"X-Service-Key": SERVICE_KEY}, None),
        (
            "POST",
            "/internal/tick",
            {"X-Service-Key": SERVICE_KEY, "Content-Type": "application/json"},
            b"{not json",
        ),
        ("POST", "/internal/tick", {"X-Service-Key": "x" * 60_000}, None),
        (
            "POST",
            "/internal/tick",
            {"X-Service-Key": SERVICE_KEY + "\u00e9".encode().decode("latin-1")},
            None,
        ),
        ("GET", "/api/v1/me/ai-audit?missionId=%00&limit=5", bearer, None),
        ("GET", "/api/v1/me/missions/m%00/grant", bearer, None),
        ("DELETE", "/api/v1/me/missions/m%00/grant", bearer, None),
        ("PUT", "/api/v1/me/missions/m%00/grant/copies", bearer, b'{"grantId": "g"}'),
        ("GET", "/api/v1/me/ai-audit?missionId=" + "m" * 50_000, bearer, None),
        ("GET", "/api/v1/me/ai-audit?limit=" + "9" * 5000, bearer, None),
        ("GET", "/api/v1/me/ai-audit?limit=-1e999&missionId=%ff%fe", bearer, None),
        ("GET", "/api/v1/me/ai-audit", {"Authorization": "Bearer " + "a.b.c"}, None),
        ("GET", "/api/v1/me/ai-audit", {"Authorization": "Bearer " + "e30.e30.e30"}, None),
        ("GET", "/api/v1/me/ai-audit", {"Authorization": "Bearer " + "x" * 20_000}, None),
        ("GET", "/api/v1/me/ai-audit", {"Authorization": "Basic Zm9vOmJhcg=="}, None),
        ("GET", "/metrics?format=" + "%00" * 100, {}, None),
        ("GET", "/../../etc/passwd", {}, None),
        ("GET", "/health", {"Content-Type": "application/json"}, b"\x00" * 1000),
    ]
    async with (
        FakeLlmServer(default=conversation_responder()) as llm,
        running_app(app_db_url, llm, auth_url=auth_url, service_key=SERVICE_KEY) as app,
        serve_http(app) as base,
        aiohttp.ClientSession() as http,
    ):
        for method, path, headers, body in requests:
            async with http.request(method, base + path, headers=headers, data=body) as response:
                text = await response.text()
                assert response.status < 500, (method, path[:80], response.status, text[:300])
        async with http.get(base + "/health") as response:
            assert response.status == 200  # and the service is still up
