"""One configuration for the service and the CLI: a ``.env`` file read by every command.

``mana-ai`` reads ``MANA_AI_ENV_FILE`` if it is set, else ``./.env`` when there is one, before any command
runs, so ``make run`` and a shell next to it plan against the same LLM and database. Variables already in
the environment win over the file (the startup banner names them). ``MANA_AI_ENV_FILE=`` (empty) reads no
file. The values are put into the process environment, so :mod:`mana_ai.settings` stays the one place that
reads configuration.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from mana_ai.errors import ConfigError

ENV_FILE_VARIABLE = "MANA_AI_ENV_FILE"
DEFAULT_ENV_FILE = ".env"


@dataclass(frozen=True)
class EnvFile:
    """What was read: the file, the variables it set, and those the environment kept."""

    path: Path
    applied: tuple[str, ...] = ()
    overridden: tuple[str, ...] = field(default=())
    """Variables in the file that the environment already had (the environment's value is used)."""


_loaded: EnvFile | None = None


def load_env_file(
    environ: MutableMapping[str, str] | None = None, *, cwd: Path | None = None
) -> EnvFile | None:
    """Read the env file into ``environ`` (default ``os.environ``) without overriding what is set.

    Returns:
        What was read, or ``None`` when there is no file to read.

    Raises:
        ConfigError: ``MANA_AI_ENV_FILE`` names a file that cannot be read.
    """
    global _loaded
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_FILE_VARIABLE)
    if explicit is not None and not explicit.strip():
        return None
    path = Path(explicit).expanduser() if explicit else (cwd or Path.cwd()) / DEFAULT_ENV_FILE
    if not path.is_file():
        if explicit:
            raise ConfigError(f"{ENV_FILE_VARIABLE}: {path} is not a readable file")
        return None
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{ENV_FILE_VARIABLE}: {path} cannot be read: {type(exc).__name__}") from None
    applied: list[str] = []
    overridden: list[str] = []
    for name, value in values.items():
        if value is None or name == ENV_FILE_VARIABLE:
            continue
        if name in env:
            overridden.append(name)
            continue
        env[name] = value
        applied.append(name)
    result = EnvFile(path.resolve(), tuple(applied), tuple(overridden))
    if environ is None:
        _loaded = result
    return result


def loaded_env_file() -> EnvFile | None:
    """The file the CLI read at start-up, if any."""
    return _loaded
