"""Keep the planning worker alive through database restarts; make every stop nobody asked for loud.

procrastinate's worker stops as soon as one of its side tasks fails, and its notification listener fails
whenever the database restarts (it reconnects only while the server is up). Before this module the worker
then returned normally and the process exited with status 0, which a systemd unit with
``Restart=on-failure`` reads as "done": after a sub-second Postgres restart whole clusters stayed down.

Two rules now hold:

* :func:`supervise` restarts the worker after any failure or unexpected return, with exponential backoff
  (reset once a run lasted :data:`HEALTHY_AFTER_S`), until the process is asked to stop. The HTTP API keeps
  serving meanwhile (its pool reconnects by itself), and ``/health`` shows the worker as ``restarting``.
* a part of the service that ends while nobody asked the process to stop raises :class:`UnexpectedStop`,
  so the process exits non-zero and the service manager restarts it (the unit also says
  ``Restart=always``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mana_ai.errors import ManaAiError

logger = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0


class UnexpectedStop(ManaAiError):
    """A part of the service stopped although nobody asked the process to stop."""


@dataclass
class Backoff:
    """Exponential backoff: pure, time is passed in."""

    initial_s: float = INITIAL_BACKOFF_S
    maximum_s: float = MAX_BACKOFF_S
    healthy_after_s: float = HEALTHY_AFTER_S
    current_s: float = 0.0

    def next_delay(self, ran_for_s: float) -> float:
        """The wait before the next start, given how long the last run lasted."""
        if ran_for_s >= self.healthy_after_s or self.current_s == 0.0:
            self.current_s = self.initial_s
        else:
            self.current_s = min(self.current_s * 2, self.maximum_s)
        return self.current_s


async def supervise(
    start: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    name: str,
    on_state: Callable[[str], None] | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Run ``start()`` again and again until ``stop`` is set; wait with backoff between runs.

    Cancellation (the caller's shutdown) propagates as usual.
    """
    backoff = backoff or Backoff()
    restarts = 0
    while not stop.is_set():
        if on_state is not None:
            on_state("running")
        started = time.monotonic()
        reason = "returned"
        try:
            await start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"
        if stop.is_set():
            return
        delay = backoff.next_delay(time.monotonic() - started)
        restarts += 1
        if on_state is not None:
            on_state("restarting")
        logger.warning(
            "stopped unexpectedly; restarting",
            extra={
                "action": "service.component_restart",
                "component": name,
                "reason": reason,
                "delay_s": delay,
                "restarts": restarts,
            },
        )
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            pass
