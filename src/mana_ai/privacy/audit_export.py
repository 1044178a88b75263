"""The decrypt audit a user can take away: JSON or CSV, with the scope of each current grant (pure).

``GET /api/v1/me/ai-audit?format=json|csv`` and the workbench's download link serve this. The JSON keeps the
original's ``rows`` (SPEC §20) and adds ``grants``; the CSV has one line per granted record (``kind`` =
``grant``: when it was issued, until when, which record) followed by one line per decrypt (``kind`` =
``decrypt``: when, which record, ``ok``/``failed``/``scope-violation`` and the reason).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from mana_ai.privacy.audit import AuditRow

CSV_COLUMNS: Final = (
    "kind", "ts", "missionId", "iterationId", "table", "recordId", "status", "reason", "expiresAt"
)  # fmt: skip
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def grant_scope(mission_id: str, grant: Mapping[str, Any]) -> dict[str, Any]:
    """The scope of one grant as the export shows it (no key material)."""
    derivation = grant.get("derivation")
    derivation = derivation if isinstance(derivation, Mapping) else {}
    ids = derivation.get("recordIds")
    tables = derivation.get("tables")
    return {
        "missionId": mission_id,
        "version": derivation.get("version"),
        "tables": list(tables) if isinstance(tables, list) else [],
        "recordIds": list(ids) if isinstance(ids, list) else [],
        "issuedAt": grant.get("issuedAt"),
        "expiresAt": grant.get("expiresAt"),
    }


def audit_json(rows: Sequence[AuditRow], grants: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"grants": list(grants), "rows": [row.to_json() for row in rows]}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet would run a cell starting with one of these as a formula (CSV injection).
    return "'" + text if text.startswith(_FORMULA_START) else text


def audit_csv(rows: Sequence[AuditRow], grants: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for scope in grants:
        for qualified in scope["recordIds"]:
            table, _, record_id = str(qualified).partition(":")
            line: tuple[Any, ...] = ("grant", scope["issuedAt"], scope["missionId"], "", table, record_id, "granted", "",
                    scope["expiresAt"])  # fmt: skip
            writer.writerow([_cell(v) for v in line])
    for row in rows:
        data = row.to_json()
        entry: tuple[Any, ...] = ("decrypt", data["ts"], row.mission_id, row.iteration_id, row.table_name, row.record_id,
                row.status, row.reason, "")  # fmt: skip
        writer.writerow([_cell(v) for v in entry])
    return out.getvalue()
