"""The startup banner: what this process talks to, in a few lines and without any credential.

``mana-ai serve`` and ``mana-ai worker`` print it to stderr when they are up, so a user sees at once
which database, data directory, LLM, workbench and tick interval the service uses (and whether a
``.env`` file was read). Pure: it only formats what it is given.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from mana_ai.envfile import EnvFile
from mana_ai.settings import Settings

LOOPBACK_NAMES = ("0.0.0.0", "::", "")


def describe_database(url: str | None, *, data_dir: Path | None) -> str:
    """``embedded PostgreSQL in <data_dir>`` or ``PostgreSQL at host:port/dbname`` (no user, no password)."""
    if url is None:
        return "embedded PostgreSQL, data dir " + (str(data_dir) if data_dir else "?")
    host, port, dbname = "?", "", ""
    if "://" in url:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = str(parts.port) if parts.port else ""
        dbname = parts.path.lstrip("/")
    else:
        try:
            from psycopg.conninfo import conninfo_to_dict

            info = conninfo_to_dict(url)
        except Exception:
            info = {}
        host = str(info.get("host") or "?")
        port = str(info.get("port") or "")
        dbname = str(info.get("dbname") or "")
    return "PostgreSQL at " + host + (":" + port if port else "") + ("/" + dbname if dbname else "")


def describe_url(url: str) -> str:
    """A URL without any user or password in it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = (parts.hostname or "") + (":" + str(parts.port) if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def local_url(settings: Settings, port: int, path: str) -> str:
    """``http://host:port/path`` of a port this process listens on (loopback names as 127.0.0.1)."""
    host = "127.0.0.1" if settings.host in LOOPBACK_NAMES else settings.host
    if ":" in host:
        host = "[" + host + "]"
    return "http://" + host + ":" + str(port) + path


def workbench_url(settings: Settings) -> str:
    return local_url(settings, settings.port, "/workbench")


def banner_lines(
    settings: Settings,
    *,
    database_url: str | None,
    data_dir: Path | None,
    env_file: EnvFile | None,
    http: bool,
) -> list[str]:
    """The banner, one setting per line."""
    lines = []
    if env_file is not None:
        line = "config     " + str(env_file.path)
        if env_file.overridden:
            line += " (the environment wins for " + ", ".join(env_file.overridden) + ")"
        lines.append(line)
    else:
        lines.append("config     environment only (no .env file)")
    lines.append("database   " + describe_database(database_url, data_dir=data_dir))
    lines.append(
        "LLM        "
        + describe_url(settings.llm_url)
        + "  model "
        + settings.llm_model
        + f"  (context {settings.llm_context_tokens} tokens, max_tokens {settings.llm_max_tokens or 'unset'})"
    )
    if http:
        lines.append("workbench  " + workbench_url(settings))
    elif settings.worker_metrics_port is not None:
        lines.append("metrics    " + local_url(settings, settings.worker_metrics_port, "/metrics"))
    tick = f"every {settings.tick_every_s} s" if settings.tick_enabled else "off (TICK_ENABLED=false)"
    lines.append("tick       " + tick)
    return lines
