"""Whose clock a cadence follows: the mission's zone, the user's zone, or the deployment's (issue 12).

The web app computes ``nextRunAt`` with the browser's local clock (``WEB/data/ai/missions/cadence.ts`` uses
``Date.setHours``), and the original service ran with ``TZ=Europe/Berlin`` (``docker-compose.macmini.yml``).
A cadence without a zone therefore means wall-clock time *somewhere*; we pick, in this order:

1. the cadence's own ``timezone`` (our extension of the app's JSON; :mod:`mana_ai.scheduler.cadence`);
2. the user's zone as the app stores it: the ``timezone`` of the user's default calendar
   (``calendar/calendars``; ``calendarsStore.createCalendar`` and the calendar seed stamp
   ``Intl.DateTimeFormat().resolvedOptions().timeZone``, the browser's zone, on every calendar) — the app
   keeps no other per-user zone (``userSettings`` and the auth user have none);
3. the deployment's zone: ``MANA_AI_DEFAULT_TZ``, else the ``TZ`` variable, else the system zone
   (``/etc/timezone`` or the ``/etc/localtime`` link), UTC only as the last resort.

Pure apart from :func:`system_zone`, which reads two files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FALLBACK: Final = "UTC"


def known_zone(name: Any) -> str | None:
    """``name`` when it is an IANA zone this machine knows (a leading ``:`` as in ``TZ=:Europe/Berlin`` is
    dropped), else ``None``."""
    if not isinstance(name, str):
        return None
    text = name.strip().removeprefix(":")
    if not text or len(text) > 64 or text.startswith(("/", ".")) or ".." in text:
        return None
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return text


def system_zone(etc: Path = Path("/etc")) -> str | None:
    """The system's zone from ``/etc/timezone`` or the target of the ``/etc/localtime`` link."""
    try:
        named = known_zone((etc / "timezone").read_text(encoding="utf-8").strip())
    except OSError:
        named = None
    if named:
        return named
    try:
        target = os.readlink(etc / "localtime")
    except OSError:
        return None
    marker = "zoneinfo/"
    at = target.find(marker)
    return known_zone(target[at + len(marker) :]) if at >= 0 else None


def deployment_zone(env: Mapping[str, str], etc: Path = Path("/etc")) -> str:
    """``TZ`` when it names a known zone, else the system zone, else UTC."""
    return known_zone(env.get("TZ")) or system_zone(etc) or FALLBACK


def user_zone(calendars: Iterable[Mapping[str, Any]]) -> str | None:
    """The zone the app stored for the user: the ``timezone`` of the default calendar (the app's own choice
    of calendar: ``isDefault``, else the first), among live calendars that name a known zone."""
    live = [c for c in calendars if isinstance(c, Mapping) and not c.get("deletedAt")]
    ordered = [c for c in live if c.get("isDefault") is True] + [
        c for c in live if c.get("isDefault") is not True
    ]
    for calendar in ordered:
        zone = known_zone(calendar.get("timezone"))
        if zone:
            return zone
    return None
