"""Server spans never carry the query string (issue 14, item 8)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mana_ai import tracing
from mana_ai.settings import Settings


async def call(api: FastAPI, path: str, query: bytes) -> int:
    """One GET through the ASGI interface (the app's own middleware stack, instrumentation included)."""
    status: list[int] = []
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:3067")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 3067),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await api(scope, receive, send)
    return status[0]


async def test_query_strings_stay_out_of_server_spans() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(Settings(), exporter=exporter, set_global=False)
    try:
        api = FastAPI()

        @api.get("/api/v1/things")
        async def things() -> dict[str, str]:
            return {"ok": "yes"}

        tracing.instrument_fastapi(api)
        assert await call(api, "/api/v1/things", b"token=s3cret-value&q=anna") == 200
        finished = exporter.get_finished_spans()
        assert finished
        for span in finished:
            for key, value in (span.attributes or {}).items():
                assert "s3cret" not in str(value) and "anna" not in str(value), (span.name, key, value)
            assert "s3cret" not in span.name
    finally:
        tracing.shutdown_tracing()
