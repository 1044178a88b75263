"""The HTTP surface under hostile requests (issue 14, items 5-8), over real HTTP on loopback.

* slowloris: a request head that never ends is closed by the server;
* the runner's public key is derived once, not per unauthenticated request;
* made-up HTTP methods share one metrics label;
* the trailing-slash redirect is relative, whatever the Host header says;
* local mode refuses a non-loopback Host (DNS rebinding);
* a weak service key never opens /internal/tick off loopback, and `serve` refuses to start with it;
* the CSRF token is bound to the user it was issued for;
* cookies are Secure behind a TLS proxy.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mana_ai.app import App
from mana_ai.crypto import grants
from mana_ai.db.connector import Database
from mana_ai.errors import ConfigError
from mana_ai.http.app import create_http_app
from mana_ai.http.hardening import refuse_weak_service_key, server_config
from mana_ai.settings import Settings
from mana_ai.testing.fake_llm import FakeLlmServer
from tests.integration.http_helpers import free_port
from tests.integration.runner_helpers import running_app
from tests.integration.test_workbench_logic import seed, server_iteration
from tests.integration.test_workbench_web import action, jwks_server, page, workbench

STRONG_KEY = "k" * 40


@asynccontextmanager
async def hardened(app: App, **config: Any) -> AsyncIterator[tuple[str, int]]:
    """The app behind exactly the uvicorn configuration `mana-ai serve` uses."""
    port = free_port()
    settings = app.settings.model_copy(update=config)
    server = uvicorn.Server(server_config(create_http_app(app), settings, port=port))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        await task


async def test_a_request_head_that_never_ends_is_closed(db: Database, app_db_url: str) -> None:
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm) as app,
        hardened(app, http_header_timeout_s=0.5) as (base, port),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        await writer.drain()
        # The server closes the connection: EOF, no response. (Before: the connection stayed open.)
        assert await asyncio.wait_for(reader.read(), timeout=30) == b""
        writer.close()
        async with aiohttp.ClientSession() as http, http.get(base + "/health") as response:
            assert response.status == 200  # complete requests are served as before


async def test_the_public_key_is_parsed_once(
    db: Database, app_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    parsed: list[str] = []
    real = grants.load_private_key

    def counting(text: str | None) -> Any:
        parsed.append("x")
        return real(text)

    monkeypatch.setattr(grants, "load_private_key", counting)
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm, private_key_pem=pem) as app,
        hardened(app) as (base, _port),
        aiohttp.ClientSession() as http,
    ):
        bodies = []
        for _ in range(5):
            async with http.get(base + "/api/v1/ai-runner-pubkey") as response:
                assert response.status == 200
                bodies.append((await response.json())["publicKeyPem"])
    assert len(set(bodies)) == 1 and "BEGIN PUBLIC KEY" in bodies[0]
    assert len(parsed) == 1


async def test_made_up_methods_share_one_metrics_label(db: Database, app_db_url: str) -> None:
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm) as app,
        hardened(app) as (base, _port),
        aiohttp.ClientSession() as http,
    ):
        for i in range(20):
            async with http.request(f"X{i}RANDOM", base + "/health"):
                pass
        async with http.get(base + "/metrics") as response:
            text = await response.text()
    methods = set(re.findall(r'mana_ai_http_requests_total\{method="([^"]+)"', text))
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert "other" in methods


async def test_trailing_slash_redirect_is_relative(db: Database, app_db_url: str) -> None:
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm) as app,
        hardened(app) as (base, _port),
        aiohttp.ClientSession() as http,
    ):
        headers = {"Host": "evil.example"}
        async with http.get(base + "/health/?x=1", headers=headers, allow_redirects=False) as response:
            assert response.status == 307
            assert response.headers["location"] == "/health?x=1"
        async with http.get(base + "//evil.example/", headers=headers, allow_redirects=False) as response:
            assert response.status == 404  # never a protocol-relative "//evil.example"


async def test_local_mode_refuses_a_foreign_host_header(db: Database, app_db_url: str) -> None:
    async with workbench(app_db_url) as (_app, _base, client):
        async with client.get("/workbench/inbox", headers={"Host": "rebind.attacker.example"}) as response:
            assert response.status == 403 and "loopback host" in await response.text()
        for host in ("localhost:3067", "127.0.0.1", "[::1]:3067", "app.localhost"):
            async with client.get("/workbench/inbox", headers={"Host": host}) as response:
                assert response.status == 200, host


async def test_weak_service_key_never_opens_the_tick_off_loopback(db: Database, app_db_url: str) -> None:
    with pytest.raises(ConfigError, match="MANA_SERVICE_KEY"):
        refuse_weak_service_key(Settings(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="shorter"):
        refuse_weak_service_key(Settings(host="0.0.0.0", service_key="short-key"))
    refuse_weak_service_key(Settings(host="0.0.0.0", service_key=STRONG_KEY))
    refuse_weak_service_key(Settings())  # loopback: the default is fine for a local user
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm, host="0.0.0.0") as app,
        hardened(app) as (base, _port),
        aiohttp.ClientSession() as http,
    ):
        headers = {"X-Service-Key": "dev-service-key"}
        async with http.post(base + "/internal/tick", headers=headers) as response:
            assert response.status == 403


async def test_the_service_key_is_never_the_llm_credential() -> None:
    assert Settings(service_key=STRONG_KEY).llm_credential is None
    assert Settings(service_key=STRONG_KEY, llm_api_key="llm-key").llm_credential == "llm-key"


def test_a_bad_llm_url_is_not_echoed() -> None:
    from mana_ai.settings import load_settings

    with pytest.raises(ConfigError) as info:
        load_settings(llm_url="ftp://user:hunter2-token@llm.example")
    assert "hunter2" not in str(info.value) and "MANA_LLM_URL" in str(info.value)


async def test_csrf_token_is_bound_to_its_user(db: Database, app_db_url: str) -> None:
    alice = server_iteration("ia", [("create_task", {"title": "Alice-Aufgabe"})])
    await seed(db, user="alice", iterations=[alice])
    async with (
        jwks_server() as (auth_url, token),
        workbench(app_db_url, auth_url=auth_url) as (_app, _base, client),
    ):
        as_bob = {"Authorization": "Bearer " + token("bob")}
        async with client.get("/workbench/inbox", headers=as_bob) as response:
            bob_csrf = response.cookies["mana_ai_csrf"].value
        # Bob's cookie and token, planted on Alice's browser, do not act for Alice.
        as_alice = {"Authorization": "Bearer " + token("alice"), "X-CSRF-Token": bob_csrf}
        async with client.post(action(alice, 0, "approve"), headers=as_alice) as response:
            assert response.status == 403 and "another user" in await response.text()
        # Her own page gives her a token of her own, which works.
        async with client.get("/workbench/inbox", headers={"Authorization": as_alice["Authorization"]}) as r:
            assert r.status == 200
        own = next(c.value for c in client.cookie_jar if c.key == "mana_ai_csrf")
        assert own != bob_csrf
        as_alice["X-CSRF-Token"] = own
        async with client.post(action(alice, 0, "approve"), headers=as_alice) as response:
            assert response.status == 200


async def test_cookies_are_secure_behind_a_tls_proxy(db: Database, app_db_url: str) -> None:
    async with workbench(app_db_url) as (_app, _base, client):
        client.cookie_jar.clear()
        async with client.get("/workbench/inbox", headers={"Forwarded": "for=10.0.0.1;proto=https"}) as r:
            assert r.status == 200 and "Secure" in r.headers["set-cookie"]
    async with workbench(app_db_url, secure_cookies=True) as (_app, _base, client):
        status, _html, _token = await page(client, "/workbench/inbox")
        assert status == 200
    async with workbench(app_db_url, secure_cookies=True) as (_app, base, _client):
        async with aiohttp.ClientSession() as http, http.get(base + "/workbench/inbox") as r:
            assert "Secure" in r.headers["set-cookie"]
