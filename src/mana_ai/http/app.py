"""The HTTP API (SPEC §20): health, Prometheus metrics, the service-key tick endpoint, the runner's public key,
the grant and audit API (:mod:`mana_ai.http.grants_api`).

``create_http_app(app)`` wraps an :class:`~mana_ai.app.App`; the FastAPI lifespan opens and closes it unless
the caller already owns it (``owns_app=False``, e.g. ``mana-ai serve``, which also runs the worker).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from mana_ai import __version__, tracing
from mana_ai.app import App
from mana_ai.http import hardening
from mana_ai.http.auth import JwtVerifier
from mana_ai.http.grants_api import register_grant_api
from mana_ai.metrics import CONTENT_TYPE, Metrics
from mana_ai.web.security import is_loopback

HEALTH_DB_TIMEOUT_S = 2.0
"""How long /health waits for the database: a blackbox probe gives up after a few seconds."""

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The method as a metrics label: any other token becomes ``other`` (clients choose methods freely,
    and each new label value is a new time series: random methods once grew /metrics to 69 MB)."""
    return method if method in KNOWN_METHODS else "other"


def create_http_app(app: App, *, owns_app: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if owns_app:
            await app.open()
        try:
            yield
        finally:
            if owns_app:
                await app.close()

    api = FastAPI(
        title="mana-ai",
        version=__version__,
        description="Background mission runner for mana.",
        lifespan=lifespan,
        redirect_slashes=False,  # Starlette's redirect trusts Host; ours is relative (http/hardening.py)
        # Swagger UI and ReDoc load their scripts from a CDN; the schema itself stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    hardening.wrap(api)
    tracing.instrument_fastapi(api)  # no-op unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    metrics = app.metrics

    @api.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/workbench", status_code=307)

    @api.get("/health", summary="Liveness and dependencies")
    async def health() -> JSONResponse:
        db_ok = await app.db.ping(min(HEALTH_DB_TIMEOUT_S, app.settings.db_timeout_s))
        ticker = app.ticker
        last = ticker.last_tick
        body: dict[str, Any] = {
            "ok": db_ok,
            "service": "mana-ai",
            "version": __version__,
            "database": {"reachable": db_ok, "embedded": app.embedded is not None},
            "tick": {
                "enabled": app.settings.tick_enabled,
                "intervalMs": app.settings.tick_interval_ms,
                # SPEC §2: "interval timer installed", not "a tick is in progress" (set by serve/worker).
                "running": bool(app.extra.get("tick_scheduled", False)),
                "lastScannedAt": last.scanned_at if last else None,
            },
            "worker": app.extra.get("worker_state", {"state": "not-started"}),
        }
        helpers = app.extra.get("plan_processes")
        if helpers is not None:
            body["planProcesses"] = helpers.state()
        return JSONResponse(body, status_code=200 if db_ok else 503)

    @api.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @api.post("/internal/tick", summary="Run one tick now (X-Service-Key)")
    async def tick(x_service_key: str | None = Header(default=None)) -> JSONResponse:
        if not is_loopback(app.settings.host) and app.settings.service_key_problem():
            return JSONResponse({"error": "the service key is too weak for a network address"}, 403)
        expected = app.settings.service_key.get_secret_value().encode()
        given = (x_service_key or "").encode()
        # Constant-time comparison (W20): the time taken does not reveal how much of the key matched.
        if not x_service_key or not hmac.compare_digest(given, expected):
            return JSONResponse({"error": "invalid or missing service key"}, status_code=401)
        stats = await app.ticker.tick(workers=app.extra.get("tick_workers"))
        return JSONResponse(stats.to_json())

    verifier = JwtVerifier(app.settings)

    # The grant API, the audit export and CORS for the web app's origin (issue 13).
    register_grant_api(api, app, verifier)

    public_pem: list[str] = []
    """The public key, derived once: parsing the RSA private key costs ~67 ms of CPU, and this endpoint is
    unauthenticated (40 requests in parallel once held /health for 2.6 s)."""

    @api.get("/api/v1/ai-runner-pubkey", summary="The runner's public key for wrapping mission grants")
    async def runner_pubkey() -> JSONResponse:
        from mana_ai.crypto.grants import load_private_key, public_key_pem_from_private

        if not public_pem:
            key = load_private_key(app.settings.private_key_text())
            if key is None:
                raise HTTPException(
                    503, "mission grants are not configured (MANA_AI_PRIVATE_KEY_PEM is unset)"
                )
            public_pem.append(public_key_pem_from_private(key))
        return JSONResponse({"publicKeyPem": public_pem[0]})

    from mana_ai.web.router import build_workbench_router  # the workbench pages (issue 8)

    api.include_router(build_workbench_router(app))
    measure_requests(api, metrics)  # last, so outermost: CORS preflights and hardening's answers count too
    return api


def measure_requests(api: FastAPI, metrics: Metrics) -> None:
    """Count and time every request by method, route template and status."""

    @api.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            labels = (method_label(request.method), path_label(request), str(status))
            metrics.http_requests.labels(*labels).inc()
            metrics.http_duration.labels(*labels).observe(time.perf_counter() - start)


def path_label(request: Request) -> str:
    """The matched route's template; a CORS preflight (answered before routing) is ``preflight``."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
        return "preflight"
    return "unmatched"
