"""GET /api/v1/me/ai-audit through real HTTP, JWKS from a real loopback server, as the plain DB role."""

from __future__ import annotations

import base64
import time

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mana_ai.testing.fake_llm import FakeLlmServer
from tests.integration.http_helpers import free_port, serve_http
from tests.integration.runner_helpers import running_app


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
async def auth_server():
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_pub = ed_key.public_key().public_bytes_raw()
    rsa_numbers = rsa_key.public_key().public_numbers()
    jwks = {
        "keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": b64url(ed_pub), "kid": "ed1", "alg": "EdDSA", "use": "sig"},
            {
                "kty": "RSA",
                "kid": "rsa1",
                "alg": "RS256",
                "use": "sig",
                "n": b64url(rsa_numbers.n.to_bytes(256, "big")),
                "e": b64url(rsa_numbers.e.to_bytes(3, "big")),
            },
        ]
    }

    async def serve_jwks(_request: web.Request) -> web.Response:
        return web.json_response(jwks)

    app = web.Application()
    app.router.add_get("/api/v1/auth/jwks", serve_jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    url = f"http://127.0.0.1:{port}"

    def token(
        sub: str | None = "alice", *, alg: str = "EdDSA", aud: str = "mana", iss: str = url, exp_in: int = 600
    ) -> str:
        claims = {"aud": aud, "iss": iss, "exp": int(time.time()) + exp_in, "iat": int(time.time())}
        if sub is not None:
            claims["sub"] = sub
        key, kid = (ed_key, "ed1") if alg == "EdDSA" else (rsa_key, "rsa1")
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

    try:
        yield url, token
    finally:
        await runner.cleanup()


async def seed_audit(db):
    for user, mission, n in (("alice", "m1", 3), ("alice", "m2", 2), ("bob", "m9", 4)):
        async with db.with_user(user) as conn:
            for i in range(n):
                await conn.execute(
                    "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, iteration_id, table_name, record_id,"
                    " status, reason) VALUES (%s, %s, 'it-1', 'notes', %s, 'ok', NULL)",
                    (user, mission, f"n{i}"),
                )


async def test_audit_rows_are_the_callers_only(db, app_db_url, auth_server):
    auth_url, token = auth_server
    await seed_audit(db)
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm, auth_url=auth_url) as app,
        serve_http(app) as base,
        aiohttp.ClientSession() as http,
    ):

        async def get(path: str, tok: str | None):
            headers = {"Authorization": f"Bearer {tok}"} if tok else {}
            async with http.get(base + path, headers=headers) as resp:
                return resp.status, await resp.json()

        status, body = await get("/api/v1/me/ai-audit", token("alice"))
        assert status == 200
        assert len(body["rows"]) == 5 and {r["missionId"] for r in body["rows"]} == {"m1", "m2"}
        row = body["rows"][0]
        assert set(row) == {
            "id",
            "missionId",
            "iterationId",
            "tableName",
            "recordId",
            "status",
            "reason",
            "ts",
        }
        assert isinstance(row["id"], str) and row["ts"].endswith("Z")
        status, body = await get("/api/v1/me/ai-audit?missionId=m1&limit=2", token("alice", alg="RS256"))
        assert status == 200 and len(body["rows"]) == 2 and {r["missionId"] for r in body["rows"]} == {"m1"}
        status, body = await get("/api/v1/me/ai-audit?limit=0", token("alice"))
        assert len(body["rows"]) == 1  # clamped to [1, 1000]
        status, body = await get("/api/v1/me/ai-audit?missionId=m9", token("alice"))
        assert status == 200 and body["rows"] == []  # bob's mission: nothing
        status, body = await get("/api/v1/me/ai-audit", token("bob"))
        assert {r["missionId"] for r in body["rows"]} == {"m9"}

        for bad in (
            None,
            "garbage",
            token("alice", aud="other"),
            token("alice", exp_in=-60),
            token("alice", iss="https://evil.example"),
            token(None),
            token(" "),  # signed, but no user's rows can match a blank subject (once a 500)
            token("al\x00ice"),
        ):
            status, body = await get("/api/v1/me/ai-audit", bad)
            assert status == 401, (bad, body)
        status, body = await get("/api/v1/me/ai-audit", token(None))
        assert body == {"error": "Token missing subject claim"}


async def test_dev_bypass_only_when_explicitly_enabled(db, app_db_url):
    await seed_audit(db)
    async with FakeLlmServer() as llm:
        async with (
            running_app(app_db_url, llm, dev_bypass_auth=True) as app,
            serve_http(app) as base,
            aiohttp.ClientSession() as http,
            http.get(base + "/api/v1/me/ai-audit") as resp,
        ):
            assert resp.status == 401  # NODE_ENV is not development
        async with (
            running_app(
                app_db_url, llm, dev_bypass_auth=True, node_env="development", dev_user_id="bob"
            ) as app,
            serve_http(app) as base,
            aiohttp.ClientSession() as http,
            http.get(base + "/api/v1/me/ai-audit") as resp,
        ):
            assert resp.status == 200
            assert {r["missionId"] for r in (await resp.json())["rows"]} == {"m9"}


async def test_audit_limit_is_parsed_like_parseInt(db, app_db_url, auth_server) -> None:
    auth_url, token = auth_server
    await seed_audit(db)  # alice: 5 rows
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm, auth_url=auth_url) as app,
        serve_http(app) as base,
        aiohttp.ClientSession() as http,
    ):
        counts = {}
        for raw in ("2", "2.5", "3rows", " 4", "1_0", "1e3", "abc", ""):
            headers = {"Authorization": f"Bearer {token('alice')}"}
            async with http.get(base + "/api/v1/me/ai-audit", params={"limit": raw}, headers=headers) as resp:
                assert resp.status == 200
                counts[raw] = len((await resp.json())["rows"])
    # parseInt reads the leading integer and ignores the rest; NaN (nothing to read) means the default 200.
    assert counts == {"2": 2, "2.5": 2, "3rows": 3, " 4": 4, "1_0": 1, "1e3": 1, "abc": 5, "": 5}
