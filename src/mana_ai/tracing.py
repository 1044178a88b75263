"""OpenTelemetry tracing, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (SPEC §22).

When it is set, spans go over OTLP/HTTP to ``<endpoint>/v1/traces`` under the service name ``mana-ai``:

=====================  =================================================================================
span                   attributes
=====================  =================================================================================
``tick``               ``tick.due``, ``tick.written``, ``tick.failed``, ``tick.errors``
``tick.dispatch``      the cluster tick of the queue: ``tick.due``, ``tick.batches``, ``tick.backlog``
``tick.planMission``   ``mission.id``, ``user.id``, ``agent.id`` (or ``legacy``), ``agent.name`` (or ``Mana``),
                       ``mission.decision``; never the title or objective (they may be private, W3)
``llm.chat``           ``gen_ai.request.model``, ``mana_ai.planner.round``, ``gen_ai.usage.input_tokens``,
                       ``gen_ai.usage.output_tokens``, ``gen_ai.response.finish_reasons``
``research.*``         ``mission.id``, ``user.id`` (``research.shallow``, ``research.deep.submit|poll``)
=====================  =================================================================================

Database queries (psycopg), outgoing HTTP (aiohttp) and the HTTP API (FastAPI) are traced by the maintained
OpenTelemetry instrumentation packages. Outgoing URLs are recorded without their query string: a search
backend receives the mission objective as ``?q=``. SQL statements are recorded without their parameters.
Queries and HTTP calls outside traced work (the job queue's polling, pool checks) start no trace of their
own (:class:`RootUnlessClient`); ``OTEL_TRACES_SAMPLER``, when set, replaces that rule.

Our spans go through :func:`span`, which asks this module for the tracer on every use, so a test can install
a provider with an in-memory exporter (:func:`configure_tracing` with ``exporter=``) and remove it again
(:func:`shutdown_tracing`) without touching OpenTelemetry's process-global provider. Failures mark a span
ERROR with the exception's type (and ``kind``) only: exception messages may quote model output. The
instrumentation packages record an exception's message and traceback (a psycopg error quotes row values and
parameters, an aiohttp error the full URL with its query); :class:`Scrubbing` cuts those to the
exception's type before any span is exported, and the values of credential headers when header capture
is switched on (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*``, whose sanitizer list is empty by default).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TraceState
from opentelemetry.util.types import Attributes

from mana_ai import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI
    from yarl import URL

    from mana_ai.planner.types import CompletionResponse
    from mana_ai.settings import Settings
    from mana_ai.synclog.records import ServerAgent, ServerMission

logger = logging.getLogger(__name__)

SERVICE_NAME = "mana-ai"
TRACER_NAME = "mana-ai"
TRACES_PATH = "/v1/traces"
UNTRACED_PATHS = "/health,/metrics"
"""Probes and scrapes: every few seconds, and nothing to see in a trace."""

AttributeValue = str | bool | int | float | tuple[str, ...]


@dataclass
class _State:
    provider: TracerProvider | None = None
    tracer: trace.Tracer | None = None
    uninstrument: list[Any] = field(default_factory=list)


_state = _State()


def traces_endpoint(endpoint: str) -> str:
    """``http://tempo:4318`` → ``http://tempo:4318/v1/traces`` (the OTLP/HTTP convention for the base URL)."""
    base = endpoint.strip().rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def configure_tracing(
    settings: Settings, *, exporter: SpanExporter | None = None, set_global: bool = True
) -> TracerProvider | None:
    """Start tracing for this process if the settings ask for it; idempotent.

    Args:
        settings: ``otel_endpoint`` (OTEL_EXPORTER_OTLP_ENDPOINT) switches tracing on; with
            ``NODE_ENV=development`` spans are exported one by one instead of in batches, as the original did.
        exporter: Export here instead (tests pass an in-memory exporter); tracing is then on regardless of
            the endpoint and spans are exported synchronously.
        set_global: Also install the provider as OpenTelemetry's global one (for libraries that use it).
            Tests pass False: the global provider can be set only once per process.

    Returns:
        The provider, or None when tracing stays off.
    """
    if _state.provider is not None:
        return _state.provider
    if exporter is not None:
        processor: SimpleSpanProcessor | BatchSpanProcessor = SimpleSpanProcessor(exporter)
    elif settings.otel_endpoint and settings.otel_endpoint.strip():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        otlp = OTLPSpanExporter(endpoint=traces_endpoint(settings.otel_endpoint))
        development = settings.node_env == "development"
        processor = SimpleSpanProcessor(otlp) if development else BatchSpanProcessor(otlp)
    else:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME, "service.version": __version__}),
        # OTEL_TRACES_SAMPLER, when set, wins (the SDK reads it when no sampler is given).
        sampler=None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(root=RootUnlessClient()),
    )
    provider.add_span_processor(Scrubbing(processor))
    _state.provider = provider
    _state.tracer = provider.get_tracer(TRACER_NAME, __version__)
    _instrument_libraries(provider)
    if set_global:
        trace.set_tracer_provider(provider)
    logger.info(
        "tracing on",
        extra={"action": "tracing.configured", "exporter": "otlp-http" if exporter is None else "custom"},
    )
    return provider


class RootUnlessClient(Sampler):
    """Record every trace except one that would start with a client span: the queue's polling queries and
    the pool's connection checks run outside any tick, mission or request, every few seconds, and would
    bury the traces worth reading. Inside traced work every query and HTTP call is recorded."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        decision = Decision.DROP if kind is SpanKind.CLIENT else Decision.RECORD_AND_SAMPLE
        return SamplingResult(decision, attributes if decision is Decision.RECORD_AND_SAMPLE else None)

    def get_description(self) -> str:
        return "RootUnlessClient"


class Scrubbing(SpanProcessor):
    """Hands every finished span on (:func:`scrubbed`) with its exception events and ERROR description cut to
    the exception's type: the psycopg, aiohttp and FastAPI instrumentation record ``exception.message`` and
    ``exception.stacktrace`` (and dbapi and ASGI put ``<type>: <message>`` into the status), and a psycopg
    error quotes row values and parameters (``DETAIL: Key (…)=(…)``, ``CONTEXT: JSON data, line 1: …``), an
    aiohttp error the request's URL with its query (the search term, an API key). Captured credential
    headers (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*``) are redacted as well."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._inner.on_end(scrubbed(span))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


_EXCEPTION_KEPT = ("exception.type", "exception.escaped")
_TYPE_NAME = re.compile(r"[\w./]+")
"""An ERROR description that is a type name (``UniqueViolation``, ``ProviderError/server_error``)."""
_SECRET_HEADER = re.compile(r"http\.(?:request|response)\.header\..*(?:auth|cookie|key|token|secret|session)")
"""Captured headers (``http.request.header.x_service_key``) whose value is a credential."""
REDACTED = "[REDACTED]"


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """``span`` without exception messages, tracebacks and credential headers (the same object when it has
    none of them)."""
    description = span.status.description
    head = description.split(":", 1)[0].strip() if description else None
    safe_description = head if head and _TYPE_NAME.fullmatch(head) else None
    has_exception = any(event.name == "exception" for event in span.events)
    attributes = span.attributes or {}
    secrets = [name for name in attributes if name.startswith("http.") and _SECRET_HEADER.match(name)]
    if not has_exception and not secrets and description == safe_description:
        return span
    events = [
        Event(
            "exception",
            {k: v for k, v in (event.attributes or {}).items() if k in _EXCEPTION_KEPT},
            event.timestamp,
        )
        if event.name == "exception"
        else event
        for event in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={**attributes, **dict.fromkeys(secrets, (REDACTED,))},
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code, safe_description),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def shutdown_tracing() -> None:
    """Flush and stop the provider and remove the library instrumentation (tests; the SDK flushes at exit)."""
    for undo in reversed(_state.uninstrument):
        undo()
    provider = _state.provider
    _state.provider, _state.tracer, _state.uninstrument = None, None, []
    if provider is not None:
        provider.shutdown()


def tracing_enabled() -> bool:
    return _state.provider is not None


def _instrument_libraries(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    # Only sessions and connections created from now on are traced: call this before App.open().
    psycopg_instrumentor = PsycopgInstrumentor()
    if not psycopg_instrumentor.is_instrumented_by_opentelemetry:
        psycopg_instrumentor.instrument(tracer_provider=provider)
        _state.uninstrument.append(psycopg_instrumentor.uninstrument)
    aiohttp_instrumentor = AioHttpClientInstrumentor()
    if not aiohttp_instrumentor.is_instrumented_by_opentelemetry:
        aiohttp_instrumentor.instrument(tracer_provider=provider, url_filter=_url_without_query)
        _state.uninstrument.append(aiohttp_instrumentor.uninstrument)


def _url_without_query(url: URL) -> str:
    return str(url.with_query(None).with_fragment(None).with_user(None).with_password(None))


def instrument_fastapi(api: FastAPI) -> None:
    """Trace the HTTP API's requests (no-op while tracing is off); probes and scrapes are left out."""
    if _state.provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        api,
        tracer_provider=_state.provider,
        excluded_urls=UNTRACED_PATHS,
        server_request_hook=_drop_query,
    )


_QUERY_ATTRIBUTES = ("http.target", "http.url", "url.full", "url.query")


def _drop_query(span: trace.Span, _scope: Mapping[str, Any]) -> None:
    """Server spans keep the path only: a query string can carry tokens, search terms or ids (the
    instrumentation records it as ``http.target``/``http.url``, or ``url.query``/``url.full``)."""
    attributes = getattr(span, "attributes", None) or {}
    for name in _QUERY_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str) and ("?" in value or name == "url.query"):
            span.set_attribute(name, "" if name == "url.query" else value.split("?", 1)[0])


# --- spans -----------------------------------------------------------------------------------------------


def tracer() -> trace.Tracer:
    """This module's provider's tracer while configured, else OpenTelemetry's global one (a no-op by default)."""
    return _state.tracer or trace.get_tracer(TRACER_NAME)


def span(name: str, attributes: Mapping[str, AttributeValue] | None = None) -> SpanScope | _NoSpan:
    """A span around a block (``with`` or ``async with``); an exception leaving it marks the span ERROR.

    With no tracer provider anywhere (neither ours nor a global one) every span would be a no-op: then no
    span object, context switch or attribute dict is made at all (a few percent of the CPU per mission)."""
    if _state.tracer is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return _NO_SPAN
    return SpanScope(name, attributes)


class _NoSpan:
    """The span scope while tracing is off: enters as OpenTelemetry's invalid (non-recording) span."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> Span:
        return trace.INVALID_SPAN

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class SpanScope:
    """The current span for the duration of a block. Usable as ``with`` and as ``async with`` (so it can share
    one ``async with`` statement with a lock); either way it is entered and left synchronously.

    An exception leaving the block marks the span ERROR with the exception's type only and propagates.
    """

    def __init__(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        self._name = name
        self._attributes = attributes
        self._scope: AbstractContextManager[Span] | None = None
        self._span: Span | None = None

    def __enter__(self) -> Span:
        self._scope = tracer().start_as_current_span(
            self._name, attributes=self._attributes, record_exception=False, set_status_on_exception=False
        )
        self._span = self._scope.__enter__()
        return self._span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        scope, current = self._scope, self._span
        self._scope = self._span = None
        if scope is None or current is None:
            return
        if isinstance(exc, Exception):
            mark_error(current, exc)
        scope.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def mark_error(current: Span, exc: BaseException) -> None:
    """Set ERROR with the exception's type and ``kind`` (ProviderError) but not its message."""
    kind = getattr(exc, "kind", None)
    error_type = type(exc).__name__ + ("/" + kind if isinstance(kind, str) and kind else "")
    current.set_attribute("error.type", error_type)
    current.set_status(Status(StatusCode.ERROR, error_type))


def mission_attributes(mission: ServerMission, agent: ServerAgent | None) -> dict[str, AttributeValue]:
    """Who the mission belongs to, SPEC §3 step 6c without ``mission.title`` (it may be private)."""
    attributes: dict[str, AttributeValue] = {"mission.id": mission.id, "user.id": mission.user_id}
    if agent is not None:
        attributes["agent.id"] = agent.id
        attributes["agent.name"] = agent.name
    elif mission.agent_id is not None:
        attributes["agent.id"] = mission.agent_id  # an unknown agent: no name to show
    else:
        attributes["agent.id"] = "legacy"
        attributes["agent.name"] = "Mana"
    return attributes


def llm_request_attributes(model: str, round_: int) -> dict[str, AttributeValue]:
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "mana_ai.planner.round": round_}


def record_llm_response(current: Span, response: CompletionResponse) -> None:
    """Token counts, finish reason and the number of tool calls of one completion (never its content)."""
    current.set_attribute("gen_ai.response.finish_reasons", (response.finish_reason,))
    current.set_attribute("mana_ai.llm.tool_calls", len(response.tool_calls))
    if response.usage is not None:
        current.set_attribute("gen_ai.usage.input_tokens", response.usage.prompt_tokens)
        current.set_attribute("gen_ai.usage.output_tokens", response.usage.completion_tokens)


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) in W3C hex of the active span, for log lines; None outside a valid span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
