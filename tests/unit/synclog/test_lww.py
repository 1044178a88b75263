"""The field-level LWW merge: the original's cases plus hypothesis properties."""

from __future__ import annotations

import copy

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mana_ai.synclog.lww import ChangeRow, RecordState, apply_row, merge, next_stamp, write_stamp


def row(op="update", data=None, fm=None, at="2026-04-15T00:00:00.000Z", rid="r1"):
    return ChangeRow(record_id=rid, op=op, data=data, field_meta=fm, created_at=at)


def test_no_rows_is_none():
    assert merge(None, []) is None


def test_single_insert_sets_fields():
    state = merge(None, [row("insert", {"name": "Cashflow Watcher", "state": "active"}, {})])
    assert state is not None and state.is_live()
    assert state.record == {"id": "r1", "name": "Cashflow Watcher", "state": "active"}


def test_newer_update_wins_and_untouched_fields_stay():
    t0, t12 = "2026-04-15T00:00:00.000Z", "2026-04-15T12:00:00.000Z"
    state = merge(
        None,
        [
            row(
                "insert",
                {"name": "A", "role": "old", "state": "active"},
                {"name": t0, "role": t0, "state": t0},
            ),
            row("update", {"role": "new role"}, {"role": t12}, at=t12),
        ],
    )
    assert state is not None
    assert state.record["name"] == "A" and state.record["role"] == "new role"


def test_older_update_loses():
    state = merge(
        None,
        [
            row("insert", {"name": "A"}, {"name": "2026-04-15T12:00:00.000Z"}),
            row("update", {"name": "B"}, {"name": "2026-04-15T00:00:00.000Z"}),
        ],
    )
    assert state is not None and state.record["name"] == "A"


def test_tie_goes_to_incoming_row():
    at = "2026-04-15T12:00:00.000Z"
    state = merge(
        None, [row("update", {"name": "A"}, {"name": at}), row("update", {"name": "B"}, {"name": at})]
    )
    assert state is not None and state.record["name"] == "B"


def test_insert_fields_carry_no_timestamp_so_later_rows_win():
    # An insert row has field_meta {} (mana-sync stores it so): any later update of a field wins.
    state = merge(
        None,
        [
            row("insert", {"title": "old"}, {}, at="2026-04-15T05:00:00.000Z"),
            row("update", {"title": "new"}, {"title": "2026-04-15T01:00:00.000Z"}),
        ],
    )
    assert state is not None and state.record["title"] == "new"


def test_missing_field_meta_falls_back_to_created_at():
    state = merge(
        None,
        [
            row("update", {"a": 1}, {"a": "2026-04-15T03:00:00.000Z"}),
            row("update", {"a": 2}, None, at="2026-04-15T02:00:00.000Z"),
            row("update", {"a": 3}, None, at="2026-04-15T04:00:00.000Z"),
        ],
    )
    assert state is not None and state.record["a"] == 3


def test_soft_delete_and_undo_follow_the_web_apps_replay():
    # WEB/data/sync.ts: a delete carrying deletedAt soft-deletes (stamped with its own value); the app's undo
    # is an update deletedAt: null, which restores the record.
    deleted = merge(
        None,
        [
            row("insert", {"name": "A"}, {}),
            row("delete", {"deletedAt": "2026-04-15T01:00:00.000Z"}),
        ],
    )
    assert deleted is not None and not deleted.is_live() and not deleted.deleted
    assert deleted.field_meta["deletedAt"] == "2026-04-15T01:00:00.000Z"
    restored = merge(deleted, [row("update", {"deletedAt": None}, {"deletedAt": "2026-04-15T02:00:00.000Z"})])
    assert (
        restored is not None
        and restored.is_live()
        and restored.record == {"id": "r1", "name": "A", "deletedAt": None}
    )
    # An undo older than the delete loses, as in the app (serverTime >= local deletedAt time).
    stale = merge(
        None,
        [
            row("insert", {"name": "A"}, {}),
            row("update", {"deletedAt": None}, {"deletedAt": "2026-04-15T00:30:00.000Z"}),
            row("delete", {"deletedAt": "2026-04-15T01:00:00.000Z"}),
        ],
    )
    assert stale is not None and not stale.is_live()


def test_hard_delete_removes_and_a_later_write_starts_the_record_again():
    # A delete without deletedAt is table.delete() in the app; a later update re-creates it from its fields.
    gone = merge(None, [row("insert", {"name": "A", "x": 1}, {}), row("delete", None)])
    assert gone is not None and gone.deleted and not gone.is_live()
    again = merge(gone, [row("update", {"name": "B"}, {"name": "2099-01-01T00:00:00.000Z"})])
    assert again is not None and again.is_live() and again.record == {"id": "r1", "name": "B"}
    # A soft delete of a record never seen changes nothing (the app skips it).
    never = merge(None, [row("delete", {"deletedAt": "2026-04-15T01:00:00.000Z"})])
    assert never is not None and not never.is_live()


def test_deleted_at_field_means_not_live():
    state = merge(None, [row("insert", {"name": "A", "deletedAt": "2026-04-15T00:00:00.000Z"}, {})])
    assert state is not None and not state.is_live()


def test_rows_without_data_change_nothing():
    state = merge(None, [row("insert", {"name": "A"}, {}), row("update", None, None)])
    assert state is not None and state.record == {"id": "r1", "name": "A"}


def test_snapshot_round_trip_keeps_field_meta():
    state = merge(None, [row("update", {"a": 1}, {"a": "2026-04-15T03:00:00.000Z"})])
    assert state is not None
    again = RecordState.from_snapshot(state.to_snapshot())
    assert again.record == state.record and again.field_meta == state.field_meta


# --- properties ------------------------------------------------------------------------------------------
STAMPS = [f"2026-04-15T0{h}:00:00.000Z" for h in range(6)]

rows_strategy = st.lists(
    st.builds(
        ChangeRow,
        record_id=st.just("r1"),
        op=st.sampled_from(["insert", "update", "update", "update", "delete"]),
        data=st.one_of(
            st.none(),
            st.dictionaries(
                st.sampled_from(["a", "b", "c", "deletedAt"]),
                st.one_of(st.integers(0, 3), st.sampled_from(STAMPS), st.none()),
                max_size=3,
            ),
        ),
        field_meta=st.one_of(
            st.none(),
            st.dictionaries(
                st.sampled_from(["a", "b", "c", "deletedAt"]), st.sampled_from(STAMPS), max_size=3
            ),
        ),
        created_at=st.sampled_from(STAMPS),
    ),
    max_size=12,
)


def _snapshot(state: RecordState | None):
    return None if state is None else (state.to_snapshot(), state.deleted)


def _through_storage(state: RecordState | None) -> RecordState | None:
    # What a refresh does between batches: store the snapshot, load it again.
    if state is None:
        return None
    return RecordState.from_snapshot(copy.deepcopy(state.to_snapshot()), deleted=state.deleted)


@settings(max_examples=300, deadline=None)
@given(rows_strategy, st.lists(st.integers(0, 12), max_size=4))
def test_batch_boundaries_do_not_matter(rows, cuts):
    whole = merge(None, rows)
    points = sorted({min(c, len(rows)) for c in cuts})
    state = None
    start = 0
    for point in [*points, len(rows)]:
        state = _through_storage(merge(state, rows[start:point]))
        start = point
    assert _snapshot(state) == _snapshot(whole)


def _soft_delete_after_hard_delete(rows: list[ChangeRow]) -> bool:
    """Whether a soft delete meets a record that a hard delete removed (no insert or update between)."""
    removed = False
    for change in rows:
        deleted_at = (change.data or {}).get("deletedAt")
        soft = change.op == "delete" and isinstance(deleted_at, str) and deleted_at != ""
        if soft and removed:
            return True
        removed = change.op == "delete" and not soft
    return False


def test_a_soft_delete_after_a_hard_delete_is_skipped_and_a_later_insert_recreates_the_record():
    # The web app's replay: the hard delete removes the record, the soft delete finds nothing and is skipped,
    # the insert creates the record again, live. Re-delivered from the soft delete onwards, the soft delete
    # would meet the re-created record instead, so the property below leaves this order out: the refresh
    # reads every row exactly once (disjoint transaction-id windows) and never re-delivers it.
    stamp = "2026-04-15T01:00:00.000Z"
    rows = [
        row("insert", {"a": 1}, {}),
        row("delete", None),
        row("delete", {"deletedAt": stamp}),
        row("insert", {"b": 2}, {}),
    ]
    once = merge(None, rows)
    assert once is not None and once.is_live() and once.record == {"id": "r1", "b": 2}
    assert _soft_delete_after_hard_delete(rows)


@settings(max_examples=300, deadline=None)
@given(rows_strategy, st.integers(0, 12))
def test_redelivering_a_suffix_changes_nothing(rows, k):
    assume(not _soft_delete_after_hard_delete(rows))
    once = merge(None, rows)
    again = merge(_through_storage(once), rows[min(k, len(rows)) :])
    assert _snapshot(again) == _snapshot(once)


@settings(max_examples=200, deadline=None)
@given(rows_strategy)
def test_redelivering_everything_changes_nothing(rows):
    once = merge(None, rows)
    assert _snapshot(merge(_through_storage(once), rows)) == _snapshot(once)


def test_apply_row_on_none_with_delete_gives_tombstone():
    state = apply_row(None, row("delete"))
    assert state.deleted and state.record == {"id": "r1"}


def test_soft_delete_before_a_re_creation_survives_redelivery():
    # Found by hypothesis: a soft delete of a record never seen, then an insert of it. Re-delivered from the
    # stored state, the soft delete meets an existing record; both deliveries must agree.
    rows = [row("delete", {"deletedAt": "2026-04-15T00:00:00.000Z"}), row("insert", None)]
    once = merge(None, rows)
    assert once is not None and not once.is_live()
    again = merge(RecordState.from_snapshot(once.to_snapshot(), deleted=once.deleted), rows)
    assert again is not None and again.to_snapshot() == once.to_snapshot() and not again.is_live()


def test_a_write_after_the_last_instant_javascript_writes_ties_and_so_wins() -> None:
    # A device may stamp a field 9999-12-31T23:59:59.999Z (valid JS-ISO); 1 ms later overflows, and falling
    # back to now made every later write of ours lose.
    last = "9999-12-31T23:59:59.999Z"
    now = "2026-04-15T00:00:00.000Z"
    stamp = next_stamp({"iterations": last}, ["iterations"], now)
    assert stamp == last
    ours = merge(
        None,
        [
            row("update", {"iterations": []}, {"iterations": last}),
            row("update", {"iterations": [1]}, {"iterations": stamp}),
        ],
    )
    assert ours is not None and ours.record["iterations"] == [1]
    assert (
        next_stamp({"iterations": "2026-04-15T00:00:00.000Z"}, ["iterations"], now)
        == "2026-04-15T00:00:00.001Z"
    )


def test_our_write_comes_after_the_time_the_web_app_gives_an_inserts_fields() -> None:
    # The app stamps an insert's fields with its updatedAt ?? createdAt (a device clock, maybe ahead).
    ahead, now = "2026-04-15T00:02:00.000Z", "2026-04-15T00:00:00.000Z"
    inserted = merge(
        None, [row("insert", {"isCompleted": False, "createdAt": ahead, "updatedAt": ahead}, {})]
    )
    assert write_stamp(inserted, ["isCompleted"], now) == "2026-04-15T00:02:00.001Z"
    # Once an update has stamped updatedAt, the insert's time is its createdAt; stamped fields keep theirs.
    later = merge(
        inserted, [row("update", {"updatedAt": now, "title": "x"}, {"updatedAt": now, "title": now})]
    )
    assert write_stamp(later, ["isCompleted"], now) == "2026-04-15T00:02:00.001Z"
    assert write_stamp(later, ["title"], "2026-04-15T00:01:00.000Z") == "2026-04-15T00:01:00.000Z"
    assert write_stamp(None, ["title"], now) == now
    assert write_stamp(inserted, ["completedAt"], now) == now  # never set: nothing to come after
