"""The ``mana-ai`` command line. Each command group lives in its own module and registers here."""

from __future__ import annotations

import click

from mana_ai import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mana-ai")
def cli() -> None:
    """mana-ai: plans your mana missions in the background.

    Configuration comes from environment variables (see docs/configuration.md) and from a .env file in the
    current directory (or the file MANA_AI_ENV_FILE names), read by every command; variables already set in
    the environment win. With SYNC_DATABASE_URL unset an embedded PostgreSQL is started under MANA_AI_DATA_DIR.
    """
    from mana_ai.envfile import load_env_file
    from mana_ai.errors import ConfigError

    try:
        load_env_file()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _register() -> None:
    from mana_ai.cli import service

    service.register(cli)
    for name in ("data", "privacy", "ops", "workbench", "llm", "missions_extra"):
        try:
            module = __import__(f"mana_ai.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"mana_ai.cli.{name}":
                raise
            continue
        module.register(cli)


_register()


def main() -> None:
    cli()
