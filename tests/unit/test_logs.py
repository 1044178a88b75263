"""Log rendering: one line per event with a stable action key, text or JSON, payloads hidden, trace ids."""

from __future__ import annotations

import ast
import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mana_ai import logs, tracing
from mana_ai.settings import Settings

SRC = Path(__file__).resolve().parents[2] / "src" / "mana_ai"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def record(msg: str = "mission planned", level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("mana_ai.runner.process")
    return logger.makeRecord(logger.name, level, __file__, 1, msg, (), None, extra=extra)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LOGGERS}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in quiet.items():
            logging.getLogger(name).setLevel(value)
        logs._payloads = False
        tracing.shutdown_tracing()


def test_text_line_has_action_fields_and_quoting() -> None:
    line = logs.TextFormatter().format(
        record(
            "mission\nplanned",
            action="runner.planned",
            mission_id="m1",
            steps=2,
            note="two words",
            empty="",
            ok=True,
            missing=None,
            ids=["a", "b"],
        )
    )
    assert "\n" not in line
    head, rest = line.split(" [runner.planned] ", 1)
    assert head.endswith(" info mana_ai.runner.process")
    assert rest == (
        'mission\\nplanned mission_id=m1 steps=2 note="two words" empty="" ok=true missing=null ids=["a","b"]'
    )


def test_a_record_without_action_uses_its_logger_name() -> None:
    foreign = logging.getLogger("uvicorn.error").makeRecord(
        "uvicorn.error", logging.INFO, "x", 1, "Started", (), None
    )
    assert " [uvicorn.error] Started" in logs.TextFormatter().format(foreign)
    assert orjson.loads(logs.JsonFormatter().format(foreign))["action"] == "uvicorn.error"


def test_json_line() -> None:
    line = logs.JsonFormatter().format(record(action="runner.planned", mission_id="m1", steps=2))
    assert "\n" not in line
    body = orjson.loads(line)
    assert body.pop("ts").endswith("Z")
    assert body == {
        "level": "info",
        "logger": "mana_ai.runner.process",
        "action": "runner.planned",
        "msg": "mission planned",
        "mission_id": "m1",
        "steps": 2,
    }


def test_exceptions_follow_the_event_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failing = record("tick failed", logging.ERROR, action="tick.failed")
        failing.exc_info = sys.exc_info()
    text = logs.TextFormatter().format(failing).splitlines()
    assert "[tick.failed] tick failed" in text[0]
    assert all(line.startswith("  ") for line in text[1:]) and "ValueError: boom" in text[-1]
    body = orjson.loads(logs.JsonFormatter().format(failing))
    assert "ValueError: boom" in body["exc"]


@pytest.mark.parametrize("formatter", [logs.TextFormatter, logs.JsonFormatter])
def test_payload_fields_are_hidden_unless_enabled(formatter: type[logs.TextFormatter]) -> None:
    secret = "Milch, Eier, Mehl"
    event = record(
        "LLM exchange",
        action="llm.exchange",
        messages=[{"role": "user", "content": secret}],
        content=secret,
        arguments={"title": secret},
        model="m",
    )
    hidden = formatter().format(event)
    assert secret not in hidden and logs.HIDDEN in hidden and "llm.exchange" in hidden
    assert secret in formatter(payloads=True).format(event)


def test_trace_ids_inside_a_span_only() -> None:
    tracing.configure_tracing(Settings(), exporter=InMemorySpanExporter(), set_global=False)
    try:
        outside = logs.JsonFormatter().format(record(action="a"))
        with tracing.span("tick.planMission"):
            trace_id, span_id = tracing.current_trace_ids() or ("", "")
            as_json = orjson.loads(logs.JsonFormatter().format(record(action="a")))
            as_text = logs.TextFormatter().format(record(action="a"))
    finally:
        tracing.shutdown_tracing()
    assert "trace_id" not in orjson.loads(outside)
    assert len(trace_id) == 32 and len(span_id) == 16
    assert (as_json["trace_id"], as_json["span_id"]) == (trace_id, span_id)
    assert as_text.endswith(f"trace_id={trace_id} span_id={span_id}")


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_json_to_a_stream() -> None:
    out = io.StringIO()
    settings = Settings(log_format="json", log_level="debug", log_payloads="true")
    handler = logs.configure_logging(settings, stream=out)
    assert logging.getLogger().handlers == [handler] and logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("procrastinate").level == logging.WARNING
    assert logs.payloads_enabled() and not tracing.tracing_enabled()
    logging.getLogger("mana_ai.test").debug("hello", extra={"action": "test.hello", "n": 1})
    lines = out.getvalue().splitlines()
    assert [orjson.loads(line)["action"] for line in lines] == ["test.hello"]


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_defaults_text_without_payloads() -> None:
    out = io.StringIO()
    logs.configure_logging(Settings(), stream=out)
    assert not logs.payloads_enabled()
    logging.getLogger("mana_ai.test").info("hi", extra={"action": "test.hi", "prompt": "secret"})
    logging.getLogger("mana_ai.test").debug("not at INFO", extra={"action": "test.debug"})
    assert out.getvalue().count("\n") == 1
    assert "[test.hi] hi prompt=<hidden>" in out.getvalue()


def _extra_has_action(call: ast.Call, function: ast.AST | None) -> bool:
    extra = next((k.value for k in call.keywords if k.arg == "extra"), None)
    if extra is None:
        return False
    if isinstance(extra, ast.Name) and function is not None:
        # extra=extra: a dict literal assigned to that name in the same function.
        values = [
            node.value
            for node in ast.walk(function)
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == extra.id for t in node.targets)
        ]
        return any(_dict_has_action(value) for value in values)
    return _dict_has_action(extra)


def _dict_has_action(node: ast.AST) -> bool:
    return isinstance(node, ast.Dict) and any(
        isinstance(key, ast.Constant) and key.value == "action" for key in node.keys
    )


def test_every_log_call_in_the_service_names_its_action() -> None:
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "logger"
            ):
                continue
            owner = next(
                (
                    f
                    for f in functions
                    if f.lineno <= node.lineno <= (f.end_lineno or f.lineno)
                    and not any(
                        g is not f and f.lineno < g.lineno <= node.lineno <= (g.end_lineno or g.lineno)
                        for g in functions
                    )
                ),
                None,
            )
            if not _extra_has_action(node, owner):
                missing.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert missing == [], "log calls without extra={'action': ...}: " + ", ".join(missing)
