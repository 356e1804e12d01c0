"""Secret agent variables: encrypted at rest with rotatable keys, masked wherever shown.

Keys come from CRONOS_SECRET_KEYS (Fernet keys, comma separated). The first key encrypts; every
key decrypts, so a new key can be put first, `cronos_rotate_secrets` run, and the old one dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

# The mask is the masking rule's; kept here too for the pages that show a secret as it.
from agents.masking import MASK as MASK
from agents.masking import masker


class SecretKeyError(RuntimeError):
    """A secret cannot be decrypted with any configured key."""


@functools.lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise SecretKeyError(
            "CRONOS_SECRET_KEYS holds a key that is not a Fernet key "
            "(32 url-safe base64 bytes; make one with `manage.py cronos_rotate_secrets --new-key`)"
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.CRONOS_SECRET_KEYS))


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise SecretKeyError(
            "a secret could not be decrypted with any key in CRONOS_SECRET_KEYS "
            "(was a key removed before `cronos_rotate_secrets` ran?)"
        ) from exc


def rotate(ciphertext: str) -> str:
    """The same secret, encrypted again with the first (newest) key."""
    try:
        return fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise SecretKeyError("a secret could not be decrypted with any configured key") from exc


def new_key() -> str:
    return Fernet.generate_key().decode()


# --- Variables as stored on Agent.variables -----------------------------------------------------


def plain(name: str, value: str) -> dict:
    return {"name": name, "value": value}


def secret(name: str, value: str) -> dict:
    return {"name": name, "secret": True, "ciphertext": encrypt(value)}


def masked(variables: Iterable[dict]) -> list[dict]:
    """Variables as a person may see them: secret values replaced by the mask."""
    return [
        {"name": v["name"], "value": MASK, "secret": True}
        if v.get("secret")
        else {"name": v["name"], "value": v.get("value", ""), "secret": False}
        for v in variables
    ]


def environment(variables: Iterable[dict]) -> dict[str, str]:
    """Variables decrypted, for the agent's child process only."""
    return {
        v["name"]: decrypt(v["ciphertext"]) if v.get("secret") else v.get("value", "")
        for v in variables
    }


def secret_values(variables: Iterable[dict]) -> list[str]:
    """The decrypted secret values, so that output can be masked before it is stored
    (agents.masking: the bytes of the output, and `mask_text` for text, by one rule)."""
    return [decrypt(v["ciphertext"]) for v in variables if v.get("secret")]


def mask_text(text: str, values: Iterable[str]) -> str:
    """`text` with the secret `values` masked as agents.masking says (split by escape
    sequences, a line of a multi-line one alone, JSON-escaped...)."""
    return masker(tuple(values)).mask_text(text)


def rotate_variables(variables: list[dict]) -> tuple[list[dict], int]:
    """Re-encrypt every secret of a variables list; returns the new list and how many."""
    out, count = [], 0
    for v in variables:
        if v.get("secret"):
            v = {**v, "ciphertext": rotate(v["ciphertext"])}
            count += 1
        out.append(v)
    return out, count
