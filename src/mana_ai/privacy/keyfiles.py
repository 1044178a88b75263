"""Key material on disk: the user's master key (read by the CLI) and the runner's RSA key pair (written).

The master key is only ever read by client commands (``grants create`` / ``grants refresh``); the runner
process never sees it. A master-key file holds the 32 raw bytes, or the same bytes as base64 or hex text.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mana_ai.crypto.derive import MASTER_KEY_LENGTH
from mana_ai.crypto.grants import generate_runner_keypair
from mana_ai.errors import ConfigError

PRIVATE_KEY_FILE: Final = "runner-private.pem"
PUBLIC_KEY_FILE: Final = "runner-public.pem"

_HEX = re.compile(r"[0-9a-fA-F]{64}")


class MasterKeyError(ConfigError):
    """The master key is not 32 bytes (raw, base64 or hex)."""


def parse_master_key(data: bytes) -> bytes:
    """Read a master key given as 32 raw bytes, 64 hex digits or base64 of 32 bytes.

    Raw bytes are recognised by length first: the text forms are 64 or 44 characters, never exactly 32.

    Raises:
        MasterKeyError: for anything else (the message never contains key material).
    """
    if len(data) == MASTER_KEY_LENGTH:
        return bytes(data)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise MasterKeyError() from None
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != MASTER_KEY_LENGTH:
        try:
            decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            decoded = b""
    if len(decoded) == MASTER_KEY_LENGTH:
        return decoded
    raise MasterKeyError()


def read_master_key_file(path: Path) -> bytes:
    """Read and parse a master-key file.

    Raises:
        ConfigError: the file cannot be read, or :class:`MasterKeyError` for bad contents.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            "master key file " + str(path) + " cannot be read: " + (exc.strerror or "error")
        ) from None
    return parse_master_key(data)


def read_text_file(path: Path, what: str) -> str:
    """Read a small text file (a PEM) with a one-line error naming ``what``.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable text"
        raise ConfigError(what + " " + str(path) + " cannot be read: " + reason) from None


@dataclass(frozen=True, slots=True)
class KeyPairFiles:
    """Where :func:`write_runner_keypair` put the two halves."""

    private_path: Path
    public_path: Path
    public_pem: str


def write_runner_keypair(out_dir: Path, *, force: bool = False, bits: int = 2048) -> KeyPairFiles:
    """Generate the runner's RSA key pair and write it as ``runner-private.pem`` (0600) and
    ``runner-public.pem`` (0644) into ``out_dir`` (created 0700 when missing).

    Raises:
        ConfigError: a file exists and ``force`` is false, or the directory is not writable.
    """
    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    if not force:
        for existing in (private_path, public_path):
            if existing.exists():
                raise ConfigError(str(existing) + " exists; pass --force to replace it")
    private_pem, public_pem = generate_runner_keypair(bits)
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the private file with 0600 from the start: a chmod afterwards would leave a window in
        # which the key is readable under the umask's permissions.
        if force:
            private_path.unlink(missing_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(private_pem)
        os.chmod(private_path, 0o600)  # the mode given to os.open is masked by the umask; make it exact
        public_path.write_text(public_pem, encoding="ascii")
        os.chmod(public_path, 0o644)
    except OSError as exc:
        raise ConfigError(
            "cannot write the key pair to " + str(out_dir) + ": " + (exc.strerror or "error")
        ) from None
    return KeyPairFiles(private_path, public_path, public_pem)
