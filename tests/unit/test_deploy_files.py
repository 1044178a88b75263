"""deploy/ and docs/configuration.md: checked with the tools that run them (promtool, systemd-analyze,
podman where it can build), and against the code they describe (CLI commands, settings, grants)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mana_ai.cli import cli
from mana_ai.cli.ops import render_reference
from mana_ai.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
REQUIRED_ALERTS = {
    "ManaAIGrantScopeViolation",
    "ManaAIGrantSkipsHigh",
    "ManaAIPlannerParseFailures",
    "ManaAITickSlow",
    "ManaAIWorkerDown",
    "ManaAIBudgetSkips",
}
SETTINGS_ENV = {env_name(field) for field in Settings.model_fields}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian: see scripts/system-deps.sh, which `make test` runs)")
    return path


def run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


# --- Prometheus ------------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    result = run(tool("promtool"), "check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    result = run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_passes_promtool_check() -> None:
    result = run(tool("promtool"), "check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout  # the alert rules are wired in
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mana-ai" and job["metrics_path"] == "/metrics"
    workers = [
        f"{name}:{compose()['services'][name]['environment']['MANA_AI_WORKER_METRICS_PORT']}"
        for name in ("worker-1", "worker-2")
    ]
    # serve and every worker of the compose file: a worker's plans are counted on its own endpoint only
    assert job["static_configs"][0]["targets"] == [f"mana-ai:{Settings().port}", *workers]


def test_required_alerts_exist_with_severity_and_summary() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert REQUIRED_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    tested = (PROMETHEUS / "alerts.test.yml").read_text(encoding="utf-8")
    assert all(f"alertname: {name}" in tested for name in REQUIRED_ALERTS)


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "mana-ai.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "mana-ai" and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    # The metric names are checked against a running service in tests/integration/test_observability.py.


# --- systemd ---------------------------------------------------------------------------------------------


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    system_units = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None
    )
    if system_units is None:
        pytest.fail("no systemd unit directory on this machine: install Debian's systemd to verify the unit")
    unit = (DEPLOY / "systemd" / "mana-ai.service").read_text(encoding="utf-8")
    # Verify in a scratch root: the unit exactly as shipped, systemd's own units, and an executable where
    # ExecStart= points (verify insists that it exists).
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "etc" / "systemd" / "system" / "mana-ai.service").write_text(unit, encoding="utf-8")
    exec_start = re.search(r"^ExecStart=(\S+) serve$", unit, re.MULTILINE)
    assert exec_start is not None
    binary = root / exec_start.group(1).lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    result = run(analyze, "verify", "--man=no", f"--root={root}", "mana-ai.service")
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr  # not even a warning


def test_systemd_environment_example_names_real_settings() -> None:
    text = (DEPLOY / "systemd" / "mana-ai.env.example").read_text(encoding="utf-8")
    names = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    assert {"SYNC_DATABASE_URL", "MANA_LLM_URL", "MANA_SERVICE_KEY"} <= names
    assert names - SETTINGS_ENV == set()
    unit = (DEPLOY / "systemd" / "mana-ai.service").read_text(encoding="utf-8")
    assert set(re.findall(r"^Environment=([A-Z0-9_]+)=", unit, re.MULTILINE)) <= SETTINGS_ENV


# --- container image and compose -------------------------------------------------------------------------


def containerfile_lines() -> list[str]:
    return (DEPLOY / "Containerfile").read_text(encoding="utf-8").splitlines()


def test_containerfile_runs_the_cli_on_all_interfaces() -> None:
    lines = containerfile_lines()
    assert 'ENTRYPOINT ["mana-ai"]' in lines and 'CMD ["serve"]' in lines
    text = "\n".join(lines)
    assert "MANA_AI_HOST=0.0.0.0" in text and f"EXPOSE {Settings().port}" in text
    assert re.search(r"^USER mana-ai$", text, re.MULTILINE)  # not root
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert bases and len(set(bases)) == 1


# The image itself is not built by the test suite: no base image can be pulled on the machines this
# project is tested on (see README, Operations). The checks above and below cover what can be checked.


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def test_compose_runs_postgres_serve_and_two_workers_as_the_plain_role() -> None:
    services = compose()["services"]
    assert {"postgres", "migrate", "grants", "mana-ai", "worker-1", "worker-2"} <= set(services)
    assert services["mana-ai"]["command"] == ["serve"]
    assert services["worker-1"]["command"] == services["worker-2"]["command"] == ["worker"]
    assert services["migrate"]["command"] == ["migrate"]
    for name in ("mana-ai", "worker-1", "worker-2", "migrate"):
        assert services[name]["command"][0] in cli.commands, name
        environment = services[name]["environment"]
        assert set(environment) <= SETTINGS_ENV, name
    for name in ("mana-ai", "worker-1", "worker-2"):
        url = services[name]["environment"]["SYNC_DATABASE_URL"]
        assert url.startswith("postgresql://mana_ai_app:"), name  # not the owner
        assert services[name]["depends_on"]["grants"]["condition"] == "service_completed_successfully"
    for name in ("mana-ai", "worker-1", "worker-2"):
        assert services[name]["environment"]["MANA_AI_HOST"] == "0.0.0.0", name
    for name in ("worker-1", "worker-2"):
        assert int(services[name]["environment"]["MANA_AI_WORKER_METRICS_PORT"]) > 0, name
    assert services["migrate"]["environment"]["SYNC_DATABASE_URL"].startswith("postgresql://mana:")


def test_compose_mounts_files_that_exist() -> None:
    services = compose()["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).resolve().exists(), volume
    grants = next(v for v in services["grants"]["volumes"] if v.endswith(":/grants.sql:ro"))
    assert (DEPLOY / grants.split(":")[0]).resolve() == ROOT / "src" / "mana_ai" / "db" / "sql" / "grants.sql"
    init = (DEPLOY / "compose" / "initdb" / "10-mana-ai-role.sh").read_text(encoding="utf-8")
    assert "CREATE ROLE mana_ai_app LOGIN NOSUPERUSER NOBYPASSRLS" in init
    assert compose()["services"]["postgres"]["environment"]["POSTGRES_DB"] == "mana_sync"


# --- configuration reference -----------------------------------------------------------------------------


def test_configuration_reference_matches_the_settings() -> None:
    checked_in = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert checked_in == render_reference(), (
        "docs/configuration.md is out of date: run `mana-ai config docs --output docs/configuration.md`"
    )
    for env in SETTINGS_ENV:
        assert f"| `{env}` |" in checked_in, env
    assert "| `MANA_AI_MISSION_TIMEOUT` | `10m` | duration |" in checked_in
    assert "| `PORT` | `3067` | integer, ≥ 1, ≤ 65535 | HTTP port. |" in checked_in


def test_config_docs_command_writes_and_checks(tmp_path: Path) -> None:
    target = tmp_path / "configuration.md"
    runner = CliRunner()
    stale = runner.invoke(cli, ["config", "docs", "--output", str(target), "--check"])
    assert stale.exit_code == 1 and "out of date" in stale.output
    written = runner.invoke(cli, ["config", "docs", "--output", str(target)])
    assert written.exit_code == 0 and target.read_text(encoding="utf-8") == render_reference()
    assert runner.invoke(cli, ["config", "docs", "--output", str(target), "--check"]).exit_code == 0
    printed = runner.invoke(cli, ["config", "docs"])
    assert printed.exit_code == 0 and printed.output == render_reference()


# --- README ----------------------------------------------------------------------------------------------


def test_readme_operations_section_links_existing_files() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Operations", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(([^)#]+)\)", section)
    for required in (
        "deploy/run-next-to-mana.md",
        "deploy/grafana/mana-ai.json",
        "deploy/prometheus/alerts.yml",
        "docs/configuration.md",
    ):
        assert required in links, required
    for link in links:
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
    assert "not built" in section  # the image was not built in this repository's test runs


def readme_settings_defaults() -> list[tuple[str, str]]:
    """(variable, default as written) of every row of README's configuration table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = [n.strip("` ") for n in cells[0].split(",")]
        defaults = cells[1].split(", ") if len(names) > 1 else [cells[1]]
        assert len(defaults) == len(names), line
        rows += zip(names, defaults, strict=True)
    return rows


def test_readme_settings_table_states_the_real_defaults() -> None:
    # MANA_LLM_API_KEY was documented as defaulting to the service key: nothing is sent without it.
    from mana_ai.cli.ops import format_default

    fields = {env_name(f): info.default for f, info in Settings.model_fields.items()}
    rows = [(name, written) for name, written in readme_settings_defaults() if name in fields]
    wrong = []
    for name, written in rows:
        default = fields[name]
        if default is None or default == "":
            ok = written.startswith("unset")
        elif isinstance(default, bool):
            ok = written in (format_default(default), "on" if default else "off")
        else:
            ok = written.startswith(format_default(default))
        if not ok:
            wrong.append((name, written, format_default(default)))
    assert not wrong
    assert len(rows) >= 20
