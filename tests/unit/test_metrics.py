"""Metrics shared by the processes of one service (``shared_metrics``): what the block leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from mana_ai.metrics import SHARED_DIR_ENV, SHARED_DIR_PREFIX, Metrics, shared_dir, shared_metrics


def counted(metrics: Metrics, name: str) -> float:
    text = metrics.render().decode()
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name
    )


def test_a_child_started_in_the_block_counts_in_the_parents_render(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    before = values.ValueClass
    with shared_metrics() as path:
        assert path.parent == tmp_path and shared_dir() == path
        metrics = Metrics(process=False)
        metrics.plans_written_back.inc(2)
        child = "from mana_ai.metrics import Metrics; Metrics(process=False).plans_written_back.inc(3)"
        subprocess.run([sys.executable, "-c", child], check=True, env=dict(os.environ))
        assert counted(metrics, "mana_ai_plans_written_back_total") == 5
    # Nothing leaks into what runs after the block: plain values, the operator's directory, no files.
    assert values.ValueClass is before and shared_dir() is None
    assert os.environ[SHARED_DIR_ENV] == str(tmp_path) and list(tmp_path.iterdir()) == []
    alone = Metrics(process=False)
    alone.plans_written_back.inc()
    assert counted(alone, "mana_ai_plans_written_back_total") == 1


def test_a_killed_services_directory_is_removed_by_the_next_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = tmp_path / f"{SHARED_DIR_PREFIX}{int(ended.stdout)}-x1"
    live = tmp_path / f"{SHARED_DIR_PREFIX}{os.getppid()}-x2"  # a running process's (our parent)
    other = tmp_path / "unrelated"
    for directory in (dead, live, other):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"x")
    with shared_metrics() as path:
        assert path.name.startswith(f"{SHARED_DIR_PREFIX}{os.getpid()}-")
        assert not dead.exists() and live.exists() and other.exists()


def test_a_killed_services_directory_with_our_own_pid_is_removed(tmp_path, monkeypatch) -> None:
    # In a container serve is pid 1 every time: a serve killed there (OOM, SIGKILL) and restarted in the same
    # container (restart: unless-stopped keeps its /tmp) left a directory named with the new serve's own pid.
    # This process has not made its directory yet, so one with its pid is an earlier process's.
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    earlier = tmp_path / f"{SHARED_DIR_PREFIX}{os.getpid()}-x3"
    earlier.mkdir()
    (earlier / "counter_1.db").write_bytes(b"x")
    with shared_metrics() as path:
        assert path != earlier and not earlier.exists()
