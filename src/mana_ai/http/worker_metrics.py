"""``/metrics`` of a ``mana-ai worker`` (``MANA_AI_WORKER_METRICS_PORT``).

A worker has no HTTP API, and its instruments are its own: without this endpoint the missions it planned,
its LLM failures and its grants' scope violations reached no dashboard and no alert. Workers that ``serve``
starts do not need it (their counts are part of ``serve``'s ``/metrics``); workers started by hand or in
other containers are scraped here, each as its own target.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from mana_ai.metrics import CONTENT_TYPE, Metrics


@asynccontextmanager
async def metrics_endpoint(metrics: Metrics, host: str, port: int | None) -> AsyncIterator[None]:
    """Serve ``GET /metrics`` on ``host:port`` while the block runs (nothing when ``port`` is None)."""
    if port is None:
        yield
        return

    async def scrape(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
