"""Field-level encryption as the mana web app writes it (``@mana/shared-crypto``, SPEC §17.4).

Wire format of one encrypted field value::

    enc:1:<base64(iv)>.<base64(ciphertext || tag)>

AES-GCM-256 with a random 12-byte IV, the 16-byte GCM tag appended to the ciphertext (WebCrypto
layout) and no additional authenticated data. The plaintext is the UTF-8 of ``JSON.stringify(value)``,
so decrypting yields any JSON value, not only strings. ``null``/``undefined`` are never wrapped.

Base64 follows the browser's ``btoa``/``atob``: standard alphabet, padded on output; on input the
"forgiving" decoder of the HTML spec (ASCII whitespace ignored, padding optional).

Everything here is pure: no I/O, no global state. Failures raise :class:`~mana_ai.errors.CryptoError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mana_ai.errors import CryptoError

ENC_PREFIX: Final = "enc:1:"
"""Marks an encrypted field value (format version 1)."""

IV_LENGTH: Final = 12
KEY_LENGTH: Final = 32
TAG_LENGTH: Final = 16

AeadKey = bytes | AESGCM
"""A raw 32-byte AES-256 key, or an ``AESGCM`` object built from one (cache it when decrypting many fields)."""

_ASCII_WHITESPACE = re.compile(r"[\t\n\f\r ]+")
_BASE64_BODY = re.compile(r"[A-Za-z0-9+/]*")


# --- base64 as btoa/atob ---------------------------------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, like ``btoa``."""
    return base64.b64encode(data).decode("ascii")


def b64decode_forgiving(text: str) -> bytes:
    """Decode base64 like the browser's ``atob`` (HTML "forgiving-base64 decode").

    Args:
        text: base64 text; ASCII whitespace anywhere is ignored and padding may be omitted.

    Returns:
        The decoded bytes.

    Raises:
        CryptoError: when the text is not base64.
    """
    body = _ASCII_WHITESPACE.sub("", text)
    if len(body) % 4 == 0 and body.endswith("="):
        # At most two padding characters; a third "=" stays and fails the alphabet check below.
        body = body[:-2] if body.endswith("==") else body[:-1]
    if len(body) % 4 == 1 or not _BASE64_BODY.fullmatch(body):
        raise CryptoError("invalid base64")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - excluded by the checks above
        raise CryptoError("invalid base64") from exc


# --- JSON as JSON.stringify --------------------------------------------------------------------------------


def _js_number(value: float) -> str:
    """Format a float like ECMAScript ``Number::toString`` (both use the shortest round-trip digits)."""
    if not math.isfinite(value):
        return "null"  # JSON.stringify(NaN) === "null"
    if value == 0:
        return "0"  # also for -0
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip; re-layout them by the ECMAScript rules.
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part.rstrip("0")).lstrip("0") or "0"
    # n = position of the decimal point relative to the start of `digits` (ECMAScript's "n").
    leading_zeros = len(int_part + frac_part) - len((int_part + frac_part).lstrip("0"))
    n = len(int_part) - leading_zeros + (int(exp_text) if exp_text else 0)
    k = len(digits)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        exponent = n - 1
        exp_sign = "+" if exponent >= 0 else "-"
        head = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = head + "e" + exp_sign + str(abs(exponent))
    return sign + text


def js_json_stringify(value: Any) -> str:
    """Serialise like JavaScript ``JSON.stringify``: compact, non-ASCII kept, JS number formatting.

    Tuples are arrays; mapping keys are converted with ``str``. Values JSON cannot represent raise.

    Raises:
        CryptoError: for values that have no JSON form (sets, bytes, objects ...).
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, Mapping):
        items = (
            json.dumps(str(k), ensure_ascii=False) + ":" + js_json_stringify(v) for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(js_json_stringify(v) for v in value) + "]"
    raise CryptoError("value of type " + type(value).__name__ + " is not JSON-serialisable")


# --- keys and raw sealing ---------------------------------------------------------------------------------


def aead_for(key: AeadKey) -> AESGCM:
    """Return an ``AESGCM`` for ``key`` (raw keys must be exactly 32 bytes)."""
    if isinstance(key, AESGCM):
        return key
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != KEY_LENGTH:
        raise CryptoError("expected a 32-byte AES-256 key")
    return AESGCM(bytes(key))


def is_encrypted(value: object) -> bool:
    """True when ``value`` is a string in the ``enc:1:`` wire format (by prefix, like the original)."""
    return isinstance(value, str) and value.startswith(ENC_PREFIX)


def seal_bytes(plaintext: bytes, key: AeadKey, *, iv: bytes | None = None) -> str:
    """Encrypt raw bytes into the wire format.

    Args:
        plaintext: the bytes to encrypt.
        key: the AES-256 key.
        iv: a fixed 12-byte IV for known-answer tests only; by default a random one.

    Returns:
        ``enc:1:<iv>.<ct||tag>``.
    """
    if iv is None:
        iv = os.urandom(IV_LENGTH)
    elif len(iv) != IV_LENGTH:
        raise CryptoError("expected a 12-byte IV")
    sealed = aead_for(key).encrypt(iv, plaintext, None)
    return ENC_PREFIX + b64encode(iv) + "." + b64encode(sealed)


def open_bytes(blob: str, key: AeadKey) -> bytes:
    """Decrypt a wire-format string to the raw plaintext bytes.

    Raises:
        CryptoError: for a malformed blob or a GCM failure (wrong key or tampered data).
    """
    if not is_encrypted(blob):
        raise CryptoError("malformed encrypted blob (missing enc:1: prefix)")
    body = blob[len(ENC_PREFIX) :]
    iv_text, dot, ct_text = body.partition(".")
    if not dot:
        raise CryptoError("malformed encrypted blob (missing iv/ct separator)")
    try:
        iv = b64decode_forgiving(iv_text)
        sealed = b64decode_forgiving(ct_text)
    except CryptoError as exc:
        raise CryptoError("malformed encrypted blob (invalid base64)") from exc
    if len(iv) != IV_LENGTH:
        raise CryptoError("malformed encrypted blob (iv must be 12 bytes)")
    if len(sealed) < TAG_LENGTH:
        # Cannot even hold the tag; AESGCM would fail the same way, but say why.
        raise CryptoError("decrypt failed: ciphertext shorter than the GCM tag")
    try:
        return aead_for(key).decrypt(iv, sealed, None)
    except InvalidTag as exc:
        raise CryptoError("decrypt failed: ciphertext tampered or wrong key") from exc


# --- values and records -----------------------------------------------------------------------------------


@overload
def encrypt_value(value: None, key: AeadKey, *, iv: bytes | None = None) -> None: ...
@overload
def encrypt_value(value: object, key: AeadKey, *, iv: bytes | None = None) -> str: ...


def encrypt_value(value: object, key: AeadKey, *, iv: bytes | None = None) -> str | None:
    """Encrypt any JSON value into the wire format; ``None`` is returned unwrapped.

    Args:
        value: a JSON-serialisable value.
        key: the AES-256 key.
        iv: a fixed 12-byte IV for known-answer tests only.

    Returns:
        The wire string, or ``None`` for ``None``.
    """
    if value is None:
        return None
    return seal_bytes(js_json_stringify(value).encode("utf-8"), key, iv=iv)


def decrypt_value(value: Any, key: AeadKey) -> Any:
    """Decrypt one field value; values that are not ``enc:1:`` strings pass through unchanged.

    Raises:
        CryptoError: for a malformed blob, a GCM failure, or a plaintext that is not UTF-8 JSON.
    """
    if not is_encrypted(value):
        return value
    plaintext = open_bytes(value, key)
    try:
        return json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CryptoError("decrypt failed: plaintext is not UTF-8 JSON") from exc


def decrypt_record_fields(record: Mapping[str, Any], key: AeadKey) -> tuple[dict[str, Any], list[str]]:
    """Decrypt every ``enc:1:`` string field of a record.

    Args:
        record: field name → value; not modified.
        key: the AES-256 key.

    Returns:
        A new dict with the encrypted fields decrypted, and the sorted names of those fields.

    Raises:
        CryptoError: when any encrypted field fails to decrypt (all or nothing).
    """
    aead = aead_for(key)  # build the cipher once for all fields
    out = dict(record)
    names: list[str] = []
    for name, value in record.items():
        if is_encrypted(value):
            out[name] = decrypt_value(value, aead)
            names.append(name)
    return out, sorted(names)


def encrypt_record_fields(record: Mapping[str, Any], key: AeadKey, fields: Iterable[str]) -> dict[str, Any]:
    """Encrypt the named fields of a record (the web app's write path; used by tests and fixtures).

    Missing fields and ``None`` values stay as they are; already encrypted values are not wrapped twice.

    Returns:
        A new dict; ``record`` is not modified.
    """
    aead = aead_for(key)
    out = dict(record)
    for name in fields:
        value = out.get(name)
        if value is None or is_encrypted(value):
            continue
        out[name] = encrypt_value(value, aead)
    return out
