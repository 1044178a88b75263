"""The process's planning slots and the claims made ahead of them (runner/slots.py)."""

from __future__ import annotations

import asyncio

from mana_ai.runner.slots import PlanningSlot, Slots, claim_ahead


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_an_eighth_of_the_slots_is_claimed_ahead_and_at_least_one() -> None:
    assert [claim_ahead(n) for n in (1, 7, 8, 64, 4096)] == [1, 1, 1, 8, 512]


async def test_size_missions_plan_and_ahead_more_are_admitted() -> None:
    slots = Slots(2)  # one claim ahead
    admitted = [await slots.admit() for _ in range(3)]
    fourth = asyncio.ensure_future(slots.admit())
    await _settled()
    assert not fourth.done()  # two planning + one claimed ahead

    await admitted[0].take()
    await admitted[1].take()
    third = asyncio.ensure_future(admitted[2].take())
    await _settled()
    assert not third.done()  # both slots are planning

    admitted[0].give_back()  # its LLM calls are over: the waiting claim plans, a new mission may claim
    await _settled()
    assert third.done() and fourth.done()
    for slot in (admitted[1], admitted[2], fourth.result()):
        slot.give_back()


async def test_giving_back_twice_or_without_taking_frees_each_once() -> None:
    slots = Slots(1)  # one claim ahead: two admitted
    first, second = await slots.admit(), await slots.admit()
    await first.take()
    first.give_back()
    first.give_back()
    second.give_back()  # never took a slot (its claim was refused)
    second.give_back()
    again = [await slots.admit() for _ in range(2)]
    third = asyncio.ensure_future(slots.admit())
    await _settled()
    assert not third.done()  # still exactly two admitted: nothing was released twice
    await again[0].take()
    waiting = asyncio.ensure_future(again[1].take())
    await _settled()
    assert not waiting.done()  # and still exactly one planning slot
    again[0].give_back()
    await _settled()
    assert waiting.done() and third.done()


async def test_an_unbounded_slot_never_waits() -> None:
    slot = PlanningSlot.unbounded()
    await slot.take()
    await slot.take()
    slot.give_back()


async def test_after_close_a_mission_claimed_ahead_gets_no_slot_and_frees_its_admission() -> None:
    slots = Slots(1)  # one planning, one claimed ahead
    planning, ahead = await slots.admit(), await slots.admit()
    assert await planning.take()
    waiting = asyncio.ensure_future(ahead.take())
    await _settled()
    slots.close()  # shutdown: the mission planning goes on, the one claimed ahead must not start
    await _settled()
    assert waiting.done() and waiting.result() is False  # at once, not when the planning mission ends
    planning.give_back()
    # Both admissions are free again: two new missions are admitted at once (and refused a slot).
    late = [await asyncio.wait_for(slots.admit(), 1) for _ in range(2)]
    assert [await slot.take() for slot in late] == [False, False]
