"""The background loops of a worker process: the lease heartbeat and the due-mission dispatcher.

**Heartbeat.** A claim's lease is short (``MANA_AI_CLAIM_LEASE``, 30 s) whatever the mission timeout; every
third of it, one statement renews the leases of all runs this process has in flight and the dispatch marks of
the missions its planning jobs hold. A killed worker stops renewing, so another takes its missions over
within about one lease.

**Due dispatcher.** Every ``MANA_AI_DUE_POLL_MS`` (1 s) — or sooner, when the earliest upcoming ``nextRunAt`` is
nearer — each worker refreshes the snapshots (a no-op costing two small queries when nothing changed) and,
when no planning job is waiting, hands the due missions to planning jobs in fair order. Dispatch marks make
this safe with any number of processes. Options measured for issue 15 (docs/scheduling.md): jobs scheduled
at ``nextRunAt`` still need the refresh to see edits made in the app, and a NOTIFY in the feed trigger puts
a cluster-wide commit lock on every write of the app's sync log; a short tick costs ~1 ms of database time
per second when idle and bounds the delay by its interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from mana_ai.runner.tick import Ticker
from mana_ai.timefmt import parse_iso, to_js_iso, utcnow

logger = logging.getLogger(__name__)

BACKLOG_RECHECK_S = 0.2


async def heartbeat_loop(ticker: Ticker) -> None:
    """Renew this process's leases every third of ``claim_lease`` until cancelled; bring the budget gauges it
    shows up to date on the way (:mod:`mana_ai.runner.budget_gauge`)."""
    lease = ticker.ctx.settings.claim_lease
    period = lease.total_seconds() / 3
    while True:
        await asyncio.sleep(period)
        try:
            await ticker.store.heartbeat(lease)
        except Exception:
            logger.warning("heartbeat failed", extra={"action": "runner.heartbeat_failed"}, exc_info=True)
        await update_budget_gauges(ticker)


async def update_budget_gauges(ticker: Ticker) -> None:
    """Re-read the 24 h usage of the agents this process shows on the budget gauge (none shown: no query)."""
    gauges = ticker.ctx.budget_gauges
    shown = gauges.shown()
    if not shown:
        return
    try:
        gauges.update(await ticker.store.agents_usage_24h(shown))
    except Exception:
        logger.warning(
            "budget gauges not updated", extra={"action": "runner.budget_gauges_failed"}, exc_info=True
        )


async def due_loop(
    ticker: Ticker,
    defer: Callable[[list[list[tuple[str, str]]]], Awaitable[Any]],
    *,
    backlog: Callable[[], Awaitable[int]],
    batch_size: int,
) -> None:
    """Dispatch due missions every ``due_poll_ms`` (earlier when a mission falls due sooner) until cancelled."""
    interval = ticker.ctx.settings.due_poll_ms / 1000
    # Processes started together should not poll in lockstep.
    await asyncio.sleep(random.uniform(0, interval))
    while True:
        wait = interval
        try:
            result = await ticker.dispatch_due(defer, backlog=backlog, batch_size=batch_size)
            wait = await _until_next_due(ticker, interval)
            if result.get("backlog"):
                # Jobs still wait to be picked up: look again soon rather than a whole interval later.
                wait = min(wait, BACKLOG_RECHECK_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("dispatch failed", extra={"action": "runner.dispatch_failed"}, exc_info=True)
        await asyncio.sleep(wait)


async def _until_next_due(ticker: Ticker, interval: float) -> float:
    now = utcnow()
    upcoming = await ticker.store.next_due_at(to_js_iso(now))
    if upcoming is None:
        return interval
    try:
        seconds = (parse_iso(upcoming) - now).total_seconds()
    except ValueError:
        return interval
    # Wake just after the due time (nextRunAt has millisecond precision).
    return min(max(seconds + 0.005, 0.01), interval)
