"""Timestamp checks of incoming sync rows (synclog/validate.py, timefmt.is_js_iso)."""

from __future__ import annotations

import datetime as dt

import pytest

from mana_ai.synclog import validate
from mana_ai.synclog.validate import MAX_ROW_BYTES, check_row, prepare_row, too_long
from mana_ai.timefmt import is_js_iso, to_js_iso

STAMP = "2026-03-04T05:06:07.089Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (STAMP, True),
        ("2026-03-04T05:06:07Z", False),  # no milliseconds
        ("2026-03-04 05:06:07.089Z", False),
        ("2026-03-04T05:06:07.089+", False),
        ("٢٠٢٦-03-04T05:06:07.089Z", False),  # digits, but not ASCII ones: they would not sort as stamps
        ("2026-03-04T05:06:07.08\ud800", False),  # a lone surrogate is just not a stamp
        ("", False),
    ],
)
def test_js_iso_form(value: str, expected: bool) -> None:
    assert is_js_iso(value) is expected


def test_field_meta_in_js_form_is_kept_as_is() -> None:
    meta = {"title": STAMP, "updatedAt": STAMP}
    assert prepare_row("aiMissions", "update", {"title": "x", "updatedAt": STAMP}, meta) == (
        {"title": "x", "updatedAt": STAMP},
        meta,
    )


def test_field_meta_stamps_are_checked_one_by_one_however_many() -> None:
    meta = {f"f{i}": STAMP for i in range(40)}
    assert prepare_row("aiMissions", "update", {"title": "x"}, meta) == ({"title": "x"}, meta)
    meta["f39"] = "2026-03-04T05:06:07Z"  # a valid ISO stamp in another form: normalised
    prepared = prepare_row("aiMissions", "update", {"title": "x"}, meta)
    assert not isinstance(prepared, str) and prepared[1] is not None
    assert prepared[1]["f39"] == "2026-03-04T05:06:07.000Z"
    meta["f20"] = "yesterday"
    assert prepare_row("aiMissions", "update", {"title": "x"}, meta) == (
        "field_meta['f20'] is not a valid timestamp"
    )


@pytest.mark.parametrize(
    "stamp",
    [STAMP + "|" + STAMP, 1234, None, "2026-13-45T00:00:00.000X"],
)
def test_a_field_meta_stamp_that_is_not_one_rejects_the_row(stamp: object) -> None:
    meta = {"updatedAt": STAMP, "title": stamp}
    assert prepare_row("aiMissions", "update", {"title": "x"}, meta) == (
        "field_meta['title'] is not a valid timestamp"
    )


@pytest.mark.parametrize("field", ["nextRunAt", "deletedAt", "createdAt", "updatedAt"])
@pytest.mark.parametrize(
    "value", ["٢٠٢٦-03-04T05:06:07.089Z", "２０２６-03-04T05:06:07.089Z", "2026-03-04T05:06:07.08٩Z"]
)
def test_a_timestamp_field_with_non_ascii_digits_is_a_reason_not_an_error(field: str, value: str) -> None:
    # Python's \d and int() take any script's digits; such a value once passed the field check and then
    # raised while being normalised, which stopped every refresh at that row.
    assert prepare_row("aiMissions", "update", {field: value}, {field: STAMP}) == (
        f"field {field!r} is not a valid timestamp"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2026, 3, 4, 5, 6, 7, 89_999, tzinfo=dt.UTC), "2026-03-04T05:06:07.089Z"),  # truncated
        (dt.datetime(2026, 3, 4, 5, 6, 7), "2026-03-04T05:06:07.000Z"),  # naive: UTC
        (
            dt.datetime(2026, 3, 4, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2026-03-03T23:00:00.000Z",
        ),
        (dt.datetime(999, 1, 2, tzinfo=dt.UTC), "0999-01-02T00:00:00.000Z"),  # as JavaScript pads the year
    ],
)
def test_to_js_iso_writes_what_javascript_writes(value: dt.datetime, expected: str) -> None:
    assert to_js_iso(value) == expected
    assert is_js_iso(expected)


def test_row_size_is_measured_in_utf8_bytes_as_the_write_back_reads_it() -> None:
    # The refresh reads text (characters), the write-back's reader bytes: both must skip the same rows.
    assert not too_long("é" * (MAX_ROW_BYTES // 2))  # exactly the limit in bytes
    assert too_long("é" * (MAX_ROW_BYTES // 2 + 1))  # under the limit in characters, over it in bytes
    assert too_long("a" * (MAX_ROW_BYTES + 1)) and not too_long("a" * MAX_ROW_BYTES)
    assert not too_long("😀" * (MAX_ROW_BYTES // 4))


def test_a_check_that_raises_is_a_reason_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(value: object) -> str | None:
        raise RuntimeError("a check tripped over " + repr(value))

    monkeypatch.setitem(validate.FIELDS_BY_TABLE["aiMissions"], "title", broken)
    assert (
        prepare_row("aiMissions", "update", {"title": "x"}, {"title": STAMP}) == "check failed: RuntimeError"
    )
    assert check_row("aiMissions", "update", {"title": "x"}, {"title": STAMP}) == "check failed: RuntimeError"
