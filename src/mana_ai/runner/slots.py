"""The process's planning slots (``MANA_AI_MAX_CONCURRENCY``) and the claims made ahead of them.

A mission holds a slot only while it plans: from just after its claim to the end of its LLM calls. The
claim before it and the write-back after it are database work, bounded by the pool, so they overlap other
missions' planning instead of keeping a slot idle. A few missions (one eighth of the slots) may be claimed
ahead, so that a freed slot starts the next mission at once instead of after a claim's round trip.
"""

from __future__ import annotations

import asyncio


def claim_ahead(max_concurrency: int) -> int:
    """How many missions may be claimed while waiting for a slot."""
    return max(1, max_concurrency // 8)


class Slots:
    """Planning slots plus admission: at most ``size`` missions plan, ``size + ahead`` are claimed at once."""

    def __init__(self, size: int) -> None:
        self._planning = asyncio.Semaphore(size)
        self._admitted = asyncio.Semaphore(size + claim_ahead(size))
        self.closed = False
        """Shutting down: missions claimed ahead get no slot any more (they give their claims back)."""
        self.waiting = 0
        """Missions waiting for a planning slot."""

    async def admit(self) -> PlanningSlot:
        """Wait until this mission may claim; the returned slot is taken after its claim."""
        await self._admitted.acquire()
        return PlanningSlot(self._planning, self._admitted, self)

    def close(self) -> None:
        """Refuse every slot from now on, and wake the missions waiting for one at once (each sees the refusal
        and gives back what it took; the count no longer matters once closed) rather than after a mission
        ends its LLM calls."""
        self.closed = True
        for _ in range(self.waiting):
            self._planning.release()


class PlanningSlot:
    """One mission's hold: :meth:`take` after the claim, :meth:`give_back` once the LLM calls are over (or
    whenever the mission ends; a second call does nothing)."""

    def __init__(
        self,
        planning: asyncio.Semaphore | None,
        admitted: asyncio.Semaphore | None,
        slots: Slots | None = None,
    ) -> None:
        self._planning = planning
        self._admitted = admitted
        self._slots = slots
        self._taken = False

    @classmethod
    def unbounded(cls) -> PlanningSlot:
        """For a mission planned on its own (``mana-ai missions run``)."""
        return cls(None, None)

    async def take(self) -> bool:
        """Wait for a planning slot; False (and no slot) once the process is shutting down: a mission
        claimed ahead must not start planning then."""
        slots = self._slots
        if self._planning is not None and not self._taken and not (slots is not None and slots.closed):
            if slots is not None:
                slots.waiting += 1
            try:
                await self._planning.acquire()
            finally:
                if slots is not None:
                    slots.waiting -= 1
            self._taken = True
        if slots is not None and slots.closed:
            self.give_back()
            return False
        return True

    def give_back(self) -> None:
        if self._taken and self._planning is not None:
            self._planning.release()
        self._taken = False
        self._planning = None
        if self._admitted is not None:
            self._admitted.release()
            self._admitted = None
