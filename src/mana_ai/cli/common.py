"""Shared plumbing for CLI commands: settings, the event loop, one-line errors, rich output."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import click
from rich.console import Console

from mana_ai.app import App
from mana_ai.errors import ManaAiError
from mana_ai.settings import Settings, load_settings

P = ParamSpec("P")
T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


def settings_from_env() -> Settings:
    return load_settings()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; our errors end as one line on stderr and exit code 1 (no traceback)."""
    try:
        return asyncio.run(coro)
    except ManaAiError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def async_command(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Decorator: a click command whose body is a coroutine."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run(func(*args, **kwargs))

    return wrapper


@asynccontextmanager
async def open_app(*, migrate: bool = True) -> AsyncIterator[App]:
    """An open App for a short CLI command (database, LLM client), closed afterwards."""
    logging.getLogger("mana_ai").setLevel(logging.WARNING)
    async with App(settings_from_env(), run_migrations=migrate) as app:
        yield app
