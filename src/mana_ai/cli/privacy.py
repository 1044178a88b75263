"""``mana-ai grants create|revoke|refresh``, ``mana-ai keys generate`` and ``mana-ai audit``.

The grant commands act as the *user's client* and run the same protocol (v2) as the browser module
``/client/mana-ai-grants.js``: they read the user's master key (``--master-key-file`` or a hidden prompt), seal
the granted records under a fresh random grant data key, store grant and copies in mana-ai's own tables and set
``mission.grant`` through the sync log as the user. Run them where the master key is; the runner process never
needs it. See ``docs/privacy.md``.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from mana_ai.app import App
from mana_ai.cli.common import async_command, console, open_app
from mana_ai.crypto.grants import load_public_key
from mana_ai.errors import ConfigError, CryptoError
from mana_ai.privacy.audit import DEFAULT_LIMIT, clamp_limit, read_audit
from mana_ai.privacy.grant_client import (
    DEFAULT_RUNNER_URL,
    create_grant,
    fetch_runner_public_key,
    refresh_grant,
    revoke_grant,
)
from mana_ai.privacy.keyfiles import (
    PRIVATE_KEY_FILE,
    parse_master_key,
    read_master_key_file,
    read_text_file,
    write_runner_keypair,
)
from mana_ai.privacy.refs import RecordRef, check_record_count, parse_record_ref
from mana_ai.settings import parse_duration
from mana_ai.timefmt import to_js_iso, utcnow

_USER_HELP = "The user who owns the mission (env MANA_AI_USER; default: local)."


def _user(value: str | None) -> str:
    # Like every other data command: the local single user unless --user or MANA_AI_USER says otherwise.
    return value.strip() if value and value.strip() else "local"


async def _mission(app: App, user_id: str, ref: str, *, strict: bool = True) -> str:
    """The mission id ``ref`` names (full id, unique prefix or title); unknown refs pass through unless strict."""
    from mana_ai.cli.data import _missions, _pick
    from mana_ai.cli.records import InvalidOption
    from mana_ai.synclog.snapshots import refresh_snapshots

    await refresh_snapshots(app.db)
    try:
        return str(_pick(await _missions(app, user_id), ref, "mission", "title")["id"])
    except InvalidOption:
        if strict:
            raise
        return ref


def _master_key(path: Path | None) -> bytes:
    if path is not None:
        return read_master_key_file(path)
    text = click.prompt("Master key (base64 or hex)", hide_input=True, err=True)
    return parse_master_key(str(text).encode("utf-8"))


async def _public_key(path: Path | None, runner_url: str) -> str:
    if path is not None:
        pem = read_text_file(path, "public key file")
        try:
            load_public_key(pem)
        except CryptoError:
            raise ConfigError(
                "public key file " + str(path) + " does not hold an RSA public key (SPKI PEM)"
            ) from None
        return pem
    return await fetch_runner_public_key(runner_url)


# --- grants ---------------------------------------------------------------------------------------------


@click.group()
def grants() -> None:
    """Mission key grants: let the runner read chosen encrypted records for one mission."""


@grants.command("create")
@click.option("--user", "user", envvar="MANA_AI_USER", help=_USER_HELP)
@click.option(
    "--mission",
    "mission_id",
    required=True,
    help="The mission to grant access for (id, unique id prefix or title).",
)
@click.option(
    "--record",
    "records",
    multiple=True,
    metavar="TABLE:ID",
    help="A record to grant, e.g. notes:abc (repeatable). Default: the mission's encrypted inputs.",
)
@click.option("--ttl", default="7d", show_default=True, help="Lifetime (e.g. 12h, 7d); clamped to 1h..30d.")
@click.option(
    "--master-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File with the 32-byte master key (raw, base64 or hex). Default: prompt.",
)
@click.option(
    "--public-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The runner's public key PEM. Default: fetched from the runner.",
)
@click.option(
    "--runner-url",
    envvar="MANA_AI_URL",
    default=DEFAULT_RUNNER_URL,
    show_default=True,
    help="Runner base URL for GET /api/v1/ai-runner-pubkey (env MANA_AI_URL).",
)
@async_command
async def grants_create(
    user: str | None,
    mission_id: str,
    records: tuple[str, ...],
    ttl: str,
    master_key_file: Path | None,
    public_key_file: Path | None,
    runner_url: str,
) -> None:
    """Issue a grant, seal the granted records for the runner and store the grant on the mission."""
    user_id = _user(user)
    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        raise ConfigError("invalid --ttl: " + str(exc)) from None
    if lifetime.total_seconds() <= 0:
        raise ConfigError("invalid --ttl: must be positive")
    refs: list[RecordRef] | None = [parse_record_ref(r) for r in records] if records else None
    if refs is not None:
        check_record_count(refs)
    master_key = _master_key(master_key_file)
    public_pem = await _public_key(public_key_file, runner_url)
    async with open_app() as app:
        mission_id = await _mission(app, user_id, mission_id)
        issued = await create_grant(
            app.db,
            user_id=user_id,
            mission_id=mission_id,
            records=refs,
            master_key=master_key,
            public_key_pem=public_pem,
            ttl=lifetime,
            now=utcnow(),
        )
    if issued.ttl != lifetime:
        console.print("[yellow]TTL " + ttl + " was clamped to " + str(issued.ttl) + "[/yellow]")
    console.print(
        "Granted "
        + str(issued.records)
        + " record(s) to mission [bold]"
        + mission_id
        + "[/bold] until "
        + issued.grant.expires_at
        + " ("
        + str(issued.sealed_fields)
        + " field(s) re-sealed"
        + (", " + str(issued.removed_copies) + " old copies removed" if issued.removed_copies else "")
        + ")."
    )


@grants.command("revoke")
@click.option("--user", "user", envvar="MANA_AI_USER", help=_USER_HELP)
@click.option(
    "--mission", "mission_id", required=True, help="The mission whose grant to revoke (id, prefix or title)."
)
@async_command
async def grants_revoke(user: str | None, mission_id: str) -> None:
    """Remove the mission's grant and delete every sealed copy."""
    user_id = _user(user)
    async with open_app() as app:
        mission_id = await _mission(app, user_id, mission_id)
        revoked = await revoke_grant(app.db, user_id=user_id, mission_id=mission_id, now=utcnow())
    what = "Grant revoked" if revoked.had_grant else "The mission had no grant"
    console.print(what + "; " + str(revoked.removed_copies) + " sealed cop(ies) deleted.")


@grants.command("refresh")
@click.option("--user", "user", envvar="MANA_AI_USER", help=_USER_HELP)
@click.option(
    "--mission", "mission_id", required=True, help="The mission whose grant to refresh (id, prefix or title)."
)
@click.option(
    "--master-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File with the 32-byte master key (raw, base64 or hex). Default: prompt.",
)
@async_command
async def grants_refresh(user: str | None, mission_id: str, master_key_file: Path | None) -> None:
    """Re-seal the granted records that changed since the grant was made."""
    user_id = _user(user)
    master_key = _master_key(master_key_file)
    async with open_app() as app:
        mission_id = await _mission(app, user_id, mission_id)
        result = await refresh_grant(
            app.db, user_id=user_id, mission_id=mission_id, master_key=master_key, now=utcnow()
        )
    console.print(
        "Re-sealed "
        + str(result.updated)
        + ", unchanged "
        + str(result.unchanged)
        + ", removed "
        + str(result.removed)
        + "."
    )


# --- keys -----------------------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """The runner's key pair for mission grants."""


@keys.command("generate")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for runner-private.pem (mode 0600) and runner-public.pem.",
)
@click.option("--force", is_flag=True, help="Replace existing key files.")
def keys_generate(out_dir: Path, force: bool) -> None:
    """Create an RSA-2048 key pair: the private half for MANA_AI_PRIVATE_KEY_FILE / _PEM."""
    try:
        files = write_runner_keypair(out_dir, force=force)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    console.print("Wrote " + str(files.private_path) + " (0600) and " + str(files.public_path) + ".")
    console.print("Run the runner with MANA_AI_PRIVATE_KEY_FILE=" + str(out_dir / PRIVATE_KEY_FILE) + ".")


# --- audit ----------------------------------------------------------------------------------------------


@click.command("audit")
@click.option(
    "--user", "user", envvar="MANA_AI_USER", help="Whose audit rows (env MANA_AI_USER; default: local)."
)
@click.option("--mission", "mission_id", default=None, help="Only this mission's rows (id, prefix or title).")
@click.option("--limit", default=DEFAULT_LIMIT, show_default=True, type=int, help="Rows to show (1..1000).")
@async_command
async def audit(user: str | None, mission_id: str | None, limit: int) -> None:
    """Show the decrypt audit: every server-side decrypt attempt, newest first."""
    user_id = _user(user)
    async with open_app() as app:
        if mission_id is not None:
            mission_id = await _mission(app, user_id, mission_id, strict=False)
        rows = await read_audit(app.db, user_id=user_id, mission_id=mission_id, limit=clamp_limit(limit))
    if not rows:
        console.print("No audit rows.")
        return
    table = Table("time", "mission", "iteration", "record", "status", "reason")
    for row in rows:
        style = {"ok": "green", "failed": "red", "scope-violation": "yellow"}.get(row.status, "")
        table.add_row(
            to_js_iso(row.ts),
            row.mission_id,
            row.iteration_id or "-",
            row.table_name + ":" + row.record_id,
            "[" + style + "]" + row.status + "[/" + style + "]" if style else row.status,
            row.reason or "",
        )
    console.print(table)


def register(cli: click.Group) -> None:
    """Add ``grants``, ``keys`` and ``audit`` to the ``mana-ai`` command group."""
    cli.add_command(grants)
    cli.add_command(keys)
    cli.add_command(audit)
