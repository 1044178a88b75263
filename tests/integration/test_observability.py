"""Operations end to end: spans of a real tick, traced HTTP API, logs without secrets, dashboard and alert
queries against the real /metrics of a running service.

Real App on the plain database role, the fake LLM and research servers on loopback, an in-memory span
exporter; nothing here uses OpenTelemetry's process-global provider.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mana_ai import logs, tracing
from mana_ai.crypto.grants import generate_runner_keypair
from mana_ai.db.connector import Database
from mana_ai.privacy.grant_client import create_grant
from mana_ai.privacy.refs import RecordRef
from mana_ai.settings import Settings
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.testing.fake_research import SEARXNG_PATH, FakeResearchServer
from mana_ai.timefmt import utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.http_helpers import serve_http
from tests.integration.runner_helpers import agent_record, running_app
from tests.integration.test_privacy_e2e import (
    MASTER,
    NOTE_TEXT,
    OBJECTIVE,
    prompt_of,
    push_mission,
    push_note,
)
from tests.integration.test_research_step import DEEP_OBJECTIVE, research_app, serve_news

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRET_TITLE = "Ueberraschungsparty fuer Jonas"
RESEARCH_OBJECTIVE = "Recherchiere die neuesten KI-News"
SERVICE_KEY = "svc-key-4711-must-never-be-logged"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(Settings(), exporter=exporter, set_global=False)
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in (*logs.QUIET_LOGGERS, "mana_ai")}
    logging.getLogger("mana_ai").setLevel(logging.NOTSET)  # CLI tests quieten it; here the root decides
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in quiet.items():
            logging.getLogger(name).setLevel(value)
        logs._payloads = False


def by_name(finished: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ancestors(span: ReadableSpan, finished: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    index = {s.context.span_id: s for s in finished}
    chain = []
    current = index.get(parent_of(span) or 0)
    while current is not None:
        chain.append(current)
        current = index.get(parent_of(current) or 0)
    return chain


# --- tracing ---------------------------------------------------------------------------------------------


async def test_a_tick_is_traced_from_tick_to_sql_and_http(
    db: Database, app_db_url: str, spans: InMemorySpanExporter, restore_logging: None
) -> None:
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", name="Planner"))
    await put_row(
        db,
        "u1",
        "aiMissions",
        "m1",
        "insert",
        mission("m1", agentId="a1", title=SECRET_TITLE, objective=RESEARCH_OBJECTIVE),
    )
    out = io.StringIO()
    responder = conversation_responder(tool_name="create_task", arguments={"title": "Lesen"}, usage=(100, 20))
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=responder) as llm,
        running_app(
            app_db_url, llm, research_backend="searxng", searxng_url=research.url, log_format="json"
        ) as app,
    ):
        research.searxng([])  # no hits: research ends empty, the mission is still planned
        logs.configure_logging(app.settings, stream=out)
        spans.clear()
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}, stats.to_json()
        assert len(research.requests_to(SEARXNG_PATH)) == 1

    finished = spans.get_finished_spans()
    (tick,) = by_name(finished, "tick")
    assert tick.parent is None
    assert dict(tick.attributes or {}) == {
        "tick.due": 1,
        "tick.written": 1,
        "tick.failed": 0,
        "tick.errors": 0,
    }
    (planned,) = by_name(finished, "tick.planMission")
    assert parent_of(planned) == tick.context.span_id
    assert dict(planned.attributes or {}) == {
        "mission.id": "m1",
        "user.id": "u1",
        "agent.id": "a1",
        "agent.name": "Planner",
        "mission.decision": "ran",
        "mission.tokens": 240,
    }

    chats = by_name(finished, "llm.chat")
    assert [(c.attributes or {})["mana_ai.planner.round"] for c in chats] == [1, 2]
    for chat, finish in zip(chats, ("tool_calls", "stop"), strict=True):
        assert parent_of(chat) == planned.context.span_id
        attributes = chat.attributes or {}
        assert attributes["gen_ai.request.model"] == "mana/reasoning"
        assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
            100,
            20,
        )
        assert attributes["gen_ai.response.finish_reasons"] == (finish,)
        (post,) = [s for s in finished if parent_of(s) == chat.context.span_id]
        assert post.kind is SpanKind.CLIENT and (post.attributes or {})["http.method"] == "POST"

    (shallow,) = by_name(finished, "research.shallow")
    assert parent_of(shallow) == planned.context.span_id
    assert dict(shallow.attributes or {}) == {"mission.id": "m1", "user.id": "u1"}
    (search,) = [s for s in finished if parent_of(s) == shallow.context.span_id]
    assert str((search.attributes or {})["http.url"]).endswith(SEARXNG_PATH)  # no ?q=<objective>

    queries = [s for s in finished if (s.attributes or {}).get("db.system") == "postgresql"]
    assert len(queries) >= 5
    assert {q.context.trace_id for q in queries} == {tick.context.trace_id}
    assert any(planned in ancestors(q, finished) for q in queries)  # claim and write-back under the mission

    # Nothing private in any span: neither the title nor the objective (it was also the search query).
    exported = json.dumps([json.loads(s.to_json()) for s in finished])
    assert SECRET_TITLE not in exported and "Recherchiere" not in exported and "KI-News" not in exported

    # Log lines carry the ids of the span they were written in.
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    (planned_line,) = [line for line in lines if line["action"] == "runner.planned"]
    assert planned_line["trace_id"] == format(tick.context.trace_id, "032x")
    assert planned_line["span_id"] == format(planned.context.span_id, "016x")
    (done_line,) = [line for line in lines if line["action"] == "tick.done"]
    assert done_line["span_id"] == format(tick.context.span_id, "016x")


async def test_http_api_requests_are_traced_and_probes_are_not(
    db: Database, app_db_url: str, spans: InMemorySpanExporter
) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    async with (
        FakeLlmServer(default=conversation_responder()) as llm,
        running_app(app_db_url, llm, service_key=SERVICE_KEY) as app,
        serve_http(app) as base,
        aiohttp.ClientSession() as session,
    ):
        spans.clear()
        # The caller's trace continues in the service (W3C traceparent from the instrumented client).
        with tracing.span("caller") as caller:
            async with session.get(base + "/health") as resp:
                assert resp.status == 200
            async with session.post(base + "/internal/tick", headers={"X-Service-Key": SERVICE_KEY}) as resp:
                assert resp.status == 200 and (await resp.json())["plansWrittenBack"] == 1
    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    assert [(s.attributes or {}).get("http.route") for s in servers] == ["/internal/tick"]  # no /health
    (tick,) = by_name(finished, "tick")
    assert servers[0] in ancestors(tick, finished)
    assert ancestors(tick, finished)[-1].context.span_id == caller.get_span_context().span_id
    # The request's headers are not recorded: the service key stays out of the trace.
    assert SERVICE_KEY not in json.dumps([json.loads(s.to_json()) for s in finished])


async def test_captured_headers_keep_no_credentials(
    db: Database, app_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenTelemetry's documented switches for header capture; its sanitizer list is empty unless configured.
    for direction in ("SERVER_REQUEST", "CLIENT_REQUEST"):
        monkeypatch.setenv(f"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{direction}", ".*")
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(Settings(), exporter=exporter, set_global=False)
    try:
        await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
        async with (
            FakeLlmServer(default=conversation_responder()) as llm,
            running_app(app_db_url, llm, service_key=SERVICE_KEY, llm_api_key="llm-key-0815") as app,
            serve_http(app) as base,
            aiohttp.ClientSession() as session,
        ):
            with tracing.span("caller"):
                headers = {"X-Service-Key": SERVICE_KEY}
                async with session.post(base + "/internal/tick", headers=headers) as resp:
                    assert resp.status == 200 and (await resp.json())["plansWrittenBack"] == 1
            assert llm.requests[0].headers["authorization"] == "Bearer llm-key-0815"
    finally:
        tracing.shutdown_tracing()
    finished = exporter.get_finished_spans()
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert (server.attributes or {})["http.request.header.x_service_key"] == ("[REDACTED]",)
    llm_calls = [s for s in finished if "http.request.header.authorization" in (s.attributes or {})]
    assert llm_calls and all(
        (s.attributes or {})["http.request.header.authorization"] == ("[REDACTED]",) for s in llm_calls
    )
    exported = json.dumps([json.loads(s.to_json()) for s in finished])
    assert SERVICE_KEY not in exported and "llm-key-0815" not in exported


# --- logs: a tick with a grant, at DEBUG, leaks neither plaintext nor the service key -------------------


@pytest.fixture(scope="module")
def runner_private_key() -> str:
    return generate_runner_keypair()[0]


async def run_granted_tick(db: Database, app_db_url: str, private_pem: str, **settings: Any) -> str:
    """One tick planning a mission under a grant, with every log record of the process captured."""
    public_pem = await _public_of(private_pem)
    await push_note(db, "n1", NOTE_TEXT)
    await push_mission(db, "m1", ["n1"])
    await create_grant(
        db,
        user_id="u1",
        mission_id="m1",
        records=[RecordRef("notes", "n1")],
        master_key=MASTER,
        public_key_pem=public_pem,
        ttl=dt.timedelta(days=1),
        now=utcnow(),
    )
    out = io.StringIO()
    async with (
        FakeLlmServer(
            default=conversation_responder(tool_name="create_task", arguments={"title": "x"})
        ) as llm,
        running_app(
            app_db_url,
            llm,
            private_key_pem=private_pem,
            service_key=SERVICE_KEY,
            llm_api_key=SERVICE_KEY,  # the service key goes to the LLM only when configured as its key
            log_level="DEBUG",
            **settings,
        ) as app,
    ):
        logs.configure_logging(app.settings, stream=out)
        assert logging.getLogger().isEnabledFor(logging.DEBUG)
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}, stats.to_json()
        prompt = prompt_of(llm, "Einkauf m1")  # the runner really decrypted the mission and the note
        assert NOTE_TEXT in prompt and OBJECTIVE in prompt
        assert llm.requests[0].headers["authorization"] == "Bearer " + SERVICE_KEY
    return out.getvalue()


async def _public_of(private_pem: str) -> str:
    from mana_ai.crypto.grants import load_private_key, public_key_pem_from_private

    key = load_private_key(private_pem)
    assert key is not None
    return public_key_pem_from_private(key)


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.usefixtures("restore_logging")
async def test_debug_logs_of_a_granted_tick_hold_no_plaintext_and_no_service_key(
    db: Database, app_db_url: str, runner_private_key: str, log_format: str
) -> None:
    captured = await run_granted_tick(db, app_db_url, runner_private_key, log_format=log_format)
    assert "runner.planned" in captured and "tick.done" in captured
    if log_format == "json":
        assert all(orjson.loads(line)["action"] for line in captured.splitlines() if line.startswith("{"))
    key_line = runner_private_key.splitlines()[1]  # a line of the runner's private key
    for secret in (
        NOTE_TEXT,
        OBJECTIVE,
        "Einkauf m1",
        "Einkaufszettel n1",
        SERVICE_KEY,
        key_line,
        MASTER.hex(),
    ):
        assert secret not in captured, secret


@pytest.mark.usefixtures("restore_logging")
async def test_payload_logging_is_an_explicit_switch(
    db: Database, app_db_url: str, runner_private_key: str
) -> None:
    # The same tick with MANA_AI_LOG_PAYLOADS=true does log the prompt: the check above can find a leak.
    captured = await run_granted_tick(
        db, app_db_url, runner_private_key, log_format="json", log_payloads=True
    )
    (exchange, *_) = [orjson.loads(x) for x in captured.splitlines() if '"llm.exchange"' in x]
    assert any(NOTE_TEXT in (m.get("content") or "") for m in exchange["messages"])
    assert SERVICE_KEY not in captured


@pytest.mark.parametrize("payloads", [False, True])
@pytest.mark.usefixtures("restore_logging")
async def test_a_failed_deep_research_job_logs_no_provider_text_quoting_the_objective(
    db: Database, app_db_url: str, payloads: bool
) -> None:
    # The objective goes to mana-research as the query; a provider's failure text may quote it.
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective=DEEP_OBJECTIVE))
    out = io.StringIO()
    async with (
        FakeResearchServer() as research,
        FakeLlmServer(default=conversation_responder()) as llm,
        research_app(app_db_url, llm, api_url=research.url, research_url=research.url) as app,
    ):
        logs.configure_logging(app.settings.model_copy(update={"log_payloads": payloads}), stream=out)
        research.deep_research(
            task_id="t-1", statuses=("failed",), error=f"provider refused the query '{DEEP_OBJECTIVE}'"
        )
        serve_news(research)
        assert (await app.ticker.tick()).decisions == {"skipped-research-pending": 1}
        assert (await app.ticker.tick()).decisions == {"ran": 1}
    captured = out.getvalue()
    assert "research.deep.failed" in captured
    assert (DEEP_OBJECTIVE in captured) is payloads, captured


# --- dashboards and alerts only query what /metrics exports ----------------------------------------------

PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
)
PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus writes itself for every target; allowed in alert rules only."""


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and durations removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers (and Grafana variables in them)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries, $__rate_interval
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group(0) not in PROMQL_KEYWORDS:
            names.add(match.group(0))
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(a_total[5m])) * 60", {"a_total"}),
        ('histogram_quantile(0.9, sum by (le) (rate(b_bucket{x=~"$i"}[$__rate_interval])))', {"b_bucket"}),
        ("sum by (t) (c unless c offset 15m) > 0 or d", {"c", "d"}),
        ("(sum(increase(e[30m])) / clamp_min(sum(f), 1e-9)) > 0.25 and sum(e) >= 3", {"e", "f"}),
        ("topk(10, sum by (agent_id) (increase(g[1h])))", {"g"}),
        ('time() - h{instance=~"$instance"}', {"h"}),
        ('absent(up{job="mana-ai"})', {"up"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def exported_names(exposition: str) -> set[str]:
    """Names in a Prometheus text exposition: every sample's name, plus what the TYPE lines declare (a
    labelled series that has not been touched yet has TYPE and HELP but no sample)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
            names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "mana-ai.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        found = re.fullmatch(r"label_values\(([\w:]+),\s*\w+\)", text or "")
        if found:
            exprs.append(found.group(1))
    return exprs


def alert_queries() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


async def test_dashboard_and_alerts_only_use_metric_names_the_service_exports(
    db: Database, app_db_url: str
) -> None:
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1"))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    async with (
        FakeLlmServer(default=conversation_responder(usage=(10, 5))) as llm,
        running_app(app_db_url, llm, service_key=SERVICE_KEY) as app,
        serve_http(app) as base,
        aiohttp.ClientSession() as session,
    ):
        async with session.post(base + "/internal/tick", headers={"X-Service-Key": SERVICE_KEY}) as resp:
            assert (await resp.json())["plansWrittenBack"] == 1
        async with session.get(base + "/metrics") as resp:
            exposition = await resp.text()
    exported = exported_names(exposition)
    # The tick left labelled samples, and histograms count with their suffixes.
    # Every sample carries the original's default label service="mana-ai" (services/mana-ai/src/metrics.ts).
    for sample in (
        'mana_ai_agent_decisions_total{decision="ran",service="mana-ai"} 1.0',
        'mana_ai_tokens_used_total{agent_id="a1",service="mana-ai"} 30.0',
        'mana_ai_tick_duration_seconds_count{service="mana-ai"} 1.0',
        'mana_ai_http_requests_total{method="POST",path="/internal/tick",service="mana-ai",status="200"} 1.0',
    ):
        assert sample in exposition, sample
    samples = [line for line in exposition.splitlines() if line and not line.startswith("#")]
    assert samples and all('service="mana-ai"' in line for line in samples)
    # The original's collectDefaultMetrics({prefix: 'mana_ai_'}) process metrics.
    assert {
        "mana_ai_planner_rounds_bucket",
        "mana_ai_process_start_time_seconds",
        "mana_ai_process_cpu_seconds_total",
        "mana_ai_process_cpu_user_seconds_total",
        "mana_ai_process_cpu_system_seconds_total",
        "mana_ai_process_resident_memory_bytes",
        "mana_ai_process_open_fds",
    } <= exported

    dashboard = dashboard_queries()
    assert len(dashboard) >= 30
    used = set().union(*(promql_metric_names(e) for e in dashboard))
    assert used - exported == set(), "dashboard queries unknown metrics"
    assert not used & PROMETHEUS_OWN
    alerting = set().union(*(promql_metric_names(e) for e in alert_queries()))
    assert alerting - exported - PROMETHEUS_OWN == set(), "alert rules query unknown metrics"
    assert {"mana_ai_grant_scope_violations_total", "mana_ai_grant_skips_total"} <= alerting
