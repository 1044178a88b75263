"""The user's clock (issue 12, finding 3): a daily 07:30 mission runs at 07:30 where the user is.

The web app computes ``nextRunAt`` with the browser's clock; verified under Bun with ``TZ=Europe/Berlin``:
daily 07:30 after 2026-12-02T05:00Z is 2026-12-02T06:30Z. The app stores the browser's zone on the user's
calendars (``calendarsStore.createCalendar``), which is where the runner finds it.
"""

from __future__ import annotations

import datetime as dt

from mana_ai.scheduler.cadence import next_run, parse_cadence
from mana_ai.synclog.store import replay_record
from mana_ai.testing.fake_llm import FakeLlmServer, FakeResponse, completion_body, conversation_responder
from mana_ai.timefmt import parse_iso, to_js_iso, utcnow
from mana_ai.workbench.decide import Decider
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import running_app
from tests.integration.test_tick import latest_rows
from tests.integration.test_workbench_logic import ref, seed, server_iteration

DAILY = {"kind": "daily", "atHour": 7, "atMinute": 30}


def expected(tz: str, before: dt.datetime, after: dt.datetime) -> set[dt.datetime | None]:
    return {next_run(parse_cadence(DAILY), after=t, default_tz=tz) for t in (before, after)}


async def run_once(db, app_db_url, **settings) -> tuple[dt.datetime, dt.datetime]:  # type: ignore[no-untyped-def]
    async with (
        FakeLlmServer(default=conversation_responder()) as llm,
        running_app(app_db_url, llm, **settings) as app,
    ):
        before = utcnow()
        assert (await app.ticker.tick()).decisions == {"ran": 1}
        return before, utcnow()


async def test_a_cadence_without_zone_follows_the_users_calendar_zone(db, app_db_url, admin_db) -> None:
    calendar = {"id": "c1", "name": "Persönlich", "isDefault": True, "timezone": "America/New_York"}
    await put_row(db, "u1", "calendars", "c1", "insert", calendar, app_id="calendar")
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", cadence=DAILY))
    before, after = await run_once(db, app_db_url, default_tz="Europe/Berlin")
    written = parse_iso((await latest_rows(admin_db, "m1"))[0]["data"]["nextRunAt"])
    assert written in expected("America/New_York", before, after)
    assert written not in expected("Europe/Berlin", before, after)


def too_many_steps(request: dict) -> FakeResponse:
    # More steps than a plan may hold: a guardrail failure, which retrying cannot mend.
    if any(isinstance(m, dict) and m.get("role") == "tool" for m in request.get("messages", [])):
        return FakeResponse(body=completion_body(content="done", usage=(10, 10)))
    calls = [(f"c{i}", "create_task", {"title": f"t{i}"}) for i in range(30)]
    return FakeResponse(body=completion_body(tool_calls=calls, finish_reason="tool_calls", usage=(10, 10)))


async def test_a_run_that_fails_for_good_moves_on_in_the_users_zone_too(db, app_db_url, admin_db) -> None:
    # The failed path once scheduled the next occurrence in the deployment's zone.
    calendar = {"id": "c1", "name": "Persönlich", "isDefault": True, "timezone": "America/New_York"}
    await put_row(db, "u1", "calendars", "c1", "insert", calendar, app_id="calendar")
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", cadence=DAILY))
    async with (
        FakeLlmServer(default=too_many_steps) as llm,
        running_app(app_db_url, llm, default_tz="Europe/Berlin") as app,
    ):
        before = utcnow()
        assert (await app.ticker.tick()).decisions == {"failed": 1}
        after = utcnow()
    data = (await latest_rows(admin_db, "m1"))[-1]["data"]
    assert data["iterations"][-1]["errorDetails"]["name"] == "guardrail"
    assert parse_iso(data["nextRunAt"]) in expected("America/New_York", before, after)


async def test_without_a_user_zone_the_deployment_zone_applies(db, app_db_url, admin_db) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", cadence=DAILY))
    before, after = await run_once(db, app_db_url, default_tz="Europe/Berlin")
    written = parse_iso((await latest_rows(admin_db, "m1"))[0]["data"]["nextRunAt"])
    assert written in expected("Europe/Berlin", before, after)
    assert written not in expected("UTC", before, after)  # the hour the old default gave


async def test_workbench_dates_use_the_users_zone(db) -> None:
    # 23:30 UTC on 1 Dec is already 2 Dec in Berlin: a drink logged then belongs to the Berlin day.
    calendar = {"id": "c1", "name": "Persönlich", "isDefault": True, "timezone": "Europe/Berlin"}
    await put_row(db, "u1", "calendars", "c1", "insert", calendar, app_id="calendar")
    it = server_iteration("it1", [("log_drink", {"drinkType": "water", "quantityMl": 250})])
    await seed(db, iterations=[it])
    now = dt.datetime(2026, 12, 1, 23, 30, tzinfo=dt.UTC)
    result = await Decider(db, ttl=dt.timedelta(days=7), tz="UTC").approve("u1", ref(it, 0), now=now)
    assert result.outcome == "done", result.error
    async with db.with_user("u1") as conn:
        drink_id = result.records[0]["id"]
        state = await replay_record(
            conn, user_id="u1", app_id="drink", table="drinkEntries", record_id=drink_id
        )
    assert state is not None and (state.record["date"], state.record["time"]) == ("2026-12-02", "00:30")


async def test_a_plan_for_a_mission_a_phone_ahead_of_us_created_is_stamped_after_its_insert(
    db, app_db_url, admin_db
) -> None:
    # The web app stamps an insert's fields with its updatedAt ?? createdAt (the phone's clock): a plan
    # stamped with our earlier now would lose on every device.
    ahead = to_js_iso(utcnow() + dt.timedelta(minutes=2))
    await put_row(
        db, "u1", "aiMissions", "m1", "insert", {**mission("m1"), "createdAt": ahead, "updatedAt": ahead}
    )
    await run_once(db, app_db_url)
    stamps = (await latest_rows(admin_db, "m1"))[-1]["field_meta"]
    assert stamps["iterations"] > ahead and stamps["nextRunAt"] > ahead


async def test_the_missed_run_grace_window_is_read_on_the_users_clock(db, app_db_url, admin_db) -> None:
    # Tokyo user, UTC deployment, 09:00 and 12:00 Tokyo: the next occurrence after the due one is 21 h
    # away in Tokyo (grace 10.5 h) but 3 h in UTC (1.5 h). Found 100 minutes late, the run was skipped.
    from mana_ai.scheduler.missed import is_missed

    due = (utcnow() - dt.timedelta(minutes=100)).replace(second=0, microsecond=0)
    local = due.astimezone(dt.timezone(dt.timedelta(hours=9)))
    cadence = {"kind": "cron", "expression": f"{local.minute} {local.hour},{(local.hour + 3) % 24} * * *"}
    assert not is_missed(parse_cadence(cadence), due, utcnow(), configured=None, default_tz="Asia/Tokyo")
    assert is_missed(parse_cadence(cadence), due, utcnow(), configured=None, default_tz="UTC")
    calendar = {"id": "c1", "name": "Persönlich", "isDefault": True, "timezone": "Asia/Tokyo"}
    await put_row(db, "u1", "calendars", "c1", "insert", calendar, app_id="calendar")
    await put_row(
        db, "u1", "aiMissions", "m1", "insert", mission("m1", cadence=cadence, nextRunAt=to_js_iso(due))
    )
    await run_once(db, app_db_url, default_tz="UTC")  # asserts {"ran": 1}
