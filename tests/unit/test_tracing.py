"""Tracing: off by default, OTLP/HTTP to <endpoint>/v1/traces when configured, spans with safe attributes."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import aiohttp
import psycopg
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from yarl import URL

from mana_ai import tracing
from mana_ai.db.connector import Database
from mana_ai.errors import ProviderError, ResearchError, StorageError
from mana_ai.planner.types import CompletionResponse, ToolCall, Usage
from mana_ai.research.base import fetch
from mana_ai.settings import Settings
from mana_ai.synclog.records import ServerAgent, ServerMission

SECRET_TITLE = "Geburtstagsgeschenk fuer Anna"
SECRET_OBJECTIVE = "Finde heraus, was Anna sich wuenscht"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(Settings(), exporter=exporter, set_global=False)
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()


def mission(agent_id: str | None = "a1") -> ServerMission:
    record = {
        "id": "m1",
        "title": SECRET_TITLE,
        "objective": SECRET_OBJECTIVE,
        "state": "active",
        "agentId": agent_id,
    }
    return ServerMission.from_record("u1", record)


def agent() -> ServerAgent:
    return ServerAgent.from_record("u1", {"id": "a1", "name": "Planer", "state": "active"})


def test_tracing_is_off_without_an_endpoint() -> None:
    assert tracing.configure_tracing(Settings(), set_global=False) is None
    assert not tracing.tracing_enabled()
    with tracing.span("tick") as current:
        assert not current.is_recording()
        assert tracing.current_trace_ids() is None
    assert not hasattr(psycopg.AsyncConnection.connect, "__wrapped__")  # no library instrumentation


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://tempo:4318", "http://tempo:4318/v1/traces"),
        ("http://tempo:4318/", "http://tempo:4318/v1/traces"),
        (" https://otel.example/collector ", "https://otel.example/collector/v1/traces"),
        ("http://tempo:4318/v1/traces", "http://tempo:4318/v1/traces"),
    ],
)
def test_traces_endpoint(endpoint: str, expected: str) -> None:
    assert tracing.traces_endpoint(endpoint) == expected


async def test_spans_reach_the_otlp_endpoint_as_service_mana_ai() -> None:
    received: list[tuple[str, str, bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append((request.path, request.content_type, await request.read()))
        return web.Response(status=200)

    server = web.Application()
    server.router.add_post("/{tail:.*}", collect)
    runner = web.AppRunner(server)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        settings = Settings(otel_endpoint=f"http://127.0.0.1:{port}/")
        provider = tracing.configure_tracing(settings, set_global=False)
        assert provider is not None and tracing.tracing_enabled()
        try:
            with tracing.span("tick.planMission", tracing.mission_attributes(mission(), agent())):
                assert tracing.current_trace_ids() is not None
            # The batch processor exports from its own thread; the collector answers on this loop.
            assert await asyncio.to_thread(provider.force_flush, 10_000)
        finally:
            await asyncio.to_thread(tracing.shutdown_tracing)
    finally:
        await runner.cleanup()

    assert len(received) == 1
    path, content_type, body = received[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    resource = request.resource_spans[0].resource
    attributes = {a.key: a.value.string_value for a in resource.attributes}
    assert attributes["service.name"] == "mana-ai"
    exported = request.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in exported] == ["tick.planMission"]
    span_attributes = {a.key: a.value.string_value for a in exported[0].attributes}
    assert span_attributes == {"mission.id": "m1", "user.id": "u1", "agent.id": "a1", "agent.name": "Planer"}
    assert SECRET_TITLE.encode() not in body and SECRET_OBJECTIVE.encode() not in body


def test_mission_attributes_for_agent_legacy_and_unknown_agent() -> None:
    assert tracing.mission_attributes(mission(), agent()) == {
        "mission.id": "m1",
        "user.id": "u1",
        "agent.id": "a1",
        "agent.name": "Planer",
    }
    legacy = tracing.mission_attributes(mission(agent_id=None), None)
    assert legacy["agent.id"] == "legacy" and legacy["agent.name"] == "Mana"
    unknown = tracing.mission_attributes(mission(agent_id="ghost"), None)
    assert unknown["agent.id"] == "ghost" and "agent.name" not in unknown
    values = " ".join(str(v) for v in tracing.mission_attributes(mission(), agent()).values())
    assert SECRET_TITLE not in values and SECRET_OBJECTIVE not in values


def test_span_nesting_and_llm_attributes(spans: InMemorySpanExporter) -> None:
    response = CompletionResponse(
        content="geheime Antwort",
        tool_calls=(ToolCall("c1", "create_task", '{"title": "x"}', {"title": "x"}),),
        finish_reason="tool_calls",
        usage=Usage(100, 20),
    )
    with tracing.span("tick") as tick_span:
        with tracing.span("llm.chat", tracing.llm_request_attributes("mana/reasoning", 2)) as llm_span:
            tracing.record_llm_response(llm_span, response)
            ids = tracing.current_trace_ids()
    tick, llm = sorted(spans.get_finished_spans(), key=lambda s: s.name != "tick")
    assert llm.parent is not None and llm.parent.span_id == tick.context.span_id
    assert ids == (format(llm.context.trace_id, "032x"), format(llm.context.span_id, "016x"))
    assert dict(llm.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "mana/reasoning",
        "mana_ai.planner.round": 2,
        "gen_ai.response.finish_reasons": ("tool_calls",),
        "mana_ai.llm.tool_calls": 1,
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
    }
    assert tick_span.get_span_context().trace_id == llm.context.trace_id


def test_an_exception_marks_the_span_error_with_its_type_only(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ProviderError), tracing.span("llm.chat"):
        raise ProviderError("mana 500: the model said something private", kind="server_error", status=500)
    (failed,) = spans.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ProviderError/server_error"
    assert (failed.attributes or {})["error.type"] == "ProviderError/server_error"
    assert not failed.events  # no exception event: its message could quote model output
    assert "private" not in repr(failed.to_json())


async def test_span_works_in_async_with_beside_a_lock(spans: InMemorySpanExporter) -> None:
    lock = asyncio.Lock()
    async with lock, tracing.span("tick") as current:
        assert current.is_recording()
        await asyncio.sleep(0)
        assert tracing.current_trace_ids() is not None
    assert tracing.current_trace_ids() is None
    assert [s.name for s in spans.get_finished_spans()] == ["tick"]


def test_library_instrumentation_is_installed_and_removed() -> None:
    exporter = InMemorySpanExporter()
    first = tracing.configure_tracing(Settings(), exporter=exporter, set_global=False)
    try:
        assert (
            tracing.configure_tracing(Settings(), exporter=InMemorySpanExporter(), set_global=False) is first
        )
        assert hasattr(psycopg.AsyncConnection.connect, "__wrapped__")
    finally:
        tracing.shutdown_tracing()
    assert not hasattr(psycopg.AsyncConnection.connect, "__wrapped__")
    assert not tracing.tracing_enabled()


def test_outgoing_urls_lose_query_and_credentials() -> None:
    url = URL("https://user:pw@search.example/search?q=Geheimes+Ziel&format=json#frag")
    assert tracing._url_without_query(url) == "https://search.example/search"


def test_client_spans_are_recorded_inside_traced_work_only(spans: InMemorySpanExporter) -> None:
    client = tracing.tracer()
    with client.start_as_current_span("SELECT", kind=SpanKind.CLIENT):  # e.g. the queue polling
        pass
    with tracing.span("tick"), client.start_as_current_span("INSERT", kind=SpanKind.CLIENT):
        pass
    assert sorted(s.name for s in spans.get_finished_spans()) == ["INSERT", "tick"]


def exported_text(exporter: InMemorySpanExporter) -> str:
    return json.dumps([json.loads(s.to_json()) for s in exporter.get_finished_spans()])


async def test_a_failed_query_leaves_no_row_values_in_its_span(
    spans: InMemorySpanExporter, app_db_url: str
) -> None:
    # psycopg's message quotes the value it could not take (and DETAIL/CONTEXT lines quote rows and JSON).
    database = Database(app_db_url, min_size=1, max_size=1)  # opened after the instrumentation: traced
    await database.open()
    try:
        with tracing.span("tick"):
            with pytest.raises(StorageError):
                async with database.transaction() as conn:
                    await conn.execute("SELECT %s::int", (SECRET_TITLE,))
            with pytest.raises(StorageError):
                async with database.transaction() as conn:
                    await conn.execute("SELECT %s::jsonb", ('{"objective": "' + SECRET_OBJECTIVE + '", x}',))
    finally:
        await database.close()
    failed = [s for s in spans.get_finished_spans() if s.name == "SELECT"]
    assert len(failed) == 2
    for query in failed:
        assert query.status.status_code is StatusCode.ERROR
        assert query.status.description == "InvalidTextRepresentation"
        (event,) = query.events
        assert dict(event.attributes or {}) == {
            "exception.type": "psycopg.errors.InvalidTextRepresentation",
            "exception.escaped": "False",
        }
    exported = exported_text(spans)
    assert SECRET_TITLE not in exported and "Anna" not in exported, exported


async def test_a_failed_http_call_leaves_no_query_in_its_span(spans: InMemorySpanExporter) -> None:
    # A backend (or a proxy in front of it) that answers with garbage: aiohttp's error names the full URL.
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"not http at all\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, aiohttp.ClientSession() as session:
        with tracing.span("research.shallow"), pytest.raises(ResearchError, match="invalid HTTP response"):
            await fetch(
                session,
                "GET",
                f"http://127.0.0.1:{port}/search",
                stage="search",
                timeout_s=5,
                params={"q": SECRET_OBJECTIVE, "api_key": "k-0815-secret"},
            )
    (call,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert (call.attributes or {})["http.url"] == f"http://127.0.0.1:{port}/search"
    assert call.status.status_code is StatusCode.ERROR and call.status.description == "ClientResponseError"
    (event,) = call.events
    assert (event.attributes or {})["exception.type"] == "aiohttp.client_exceptions.ClientResponseError"
    exported = exported_text(spans)
    assert "k-0815-secret" not in exported and "Anna" not in exported, exported
