"""Coalescing concurrent requests into batches: one database round trip for many missions.

Missions run concurrently and each one claims its run and writes back its plan. Sent one by one, every
claim and every write-back is its own transaction with its own round trips; a :class:`Coalescer` hands
whatever has queued up while the previous batch was on its way to one call of a batch function instead.
Nothing waits for a timer: a lone request goes out at once, and batches grow only under load, which is
when they pay off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]
"""Processes a batch; returns one result (or the exception for that item) per item, in order."""


class Coalescer(Generic[T, R]):
    """Submit items one at a time; they are processed in batches of up to ``max_batch``.

    At most ``max_flights`` batches are in flight at once; items submitted meanwhile queue for the next one.
    An item whose caller was cancelled before its batch left is dropped (it never reaches the batch
    function); once its batch has left, it is processed whatever happens to the caller.
    """

    def __init__(self, process: BatchFn[T, R], *, max_batch: int = 64, max_flights: int = 2) -> None:
        self._process = process
        self._max_batch = max(1, max_batch)
        self._max_flights = max(1, max_flights)
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._flights: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._launch()
        return await future

    def _launch(self) -> None:
        while self._queue and len(self._flights) < self._max_flights:
            batch = [(item, fut) for item, fut in self._queue[: self._max_batch] if not fut.done()]
            del self._queue[: self._max_batch]
            if not batch:
                continue
            task = asyncio.create_task(self._fly(batch))
            self._flights.add(task)
            task.add_done_callback(self._landed)

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._flights.discard(task)
        self._launch()

    async def _fly(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._process([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the whole batch failed: every caller gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
