"""Personal access tokens for the JSON API (`/api/v1/`, DESIGN.md §7.7): made, revoked and
checked here, and only here.

A token is `cronos_` and 32 random bytes in URL-safe base64. Only its SHA-256 is kept (a random
secret of that length needs no slow hash: nobody can guess it, and a stolen table of hashes
gives no token), with its first characters to tell tokens apart in a list. Checking a token is a
lookup by its hash, so the time it takes says nothing about how much of a guess was right.

The API acts as the token's owner with that person's roles as they are at each request: a
deactivated account or a revoked token is refused at once. Making and revoking are audited; the
token itself is never written anywhere but to the person who made it, once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.actor import Actor
from audit.log import record
from audit.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

TOKEN_PREFIX = "cronos_"
PREFIX_CHARS = 12  # kept and shown: `cronos_` and 5 random characters
NAME_MAX = ApiToken._meta.get_field("name").max_length or 100
# A token is 50 characters; anything much longer is not one, and is not hashed.
TOKEN_MAX_CHARS = 200
# last_used_at is written at most this often per token: a script polling a run every second
# must not turn each read into a write.
USED_EVERY = timedelta(minutes=1)
# Revoking another person's token: admins (the admin role holds every permission).
REVOKE_ANY = "audit.change_apitoken"


def hash_token(raw: str) -> str:
    """The stored form of a token: its SHA-256, in hex."""
    return hashlib.sha256(raw.encode()).hexdigest()


def clean_name(name: str) -> str:
    """A token's name as kept: one line of printable characters, at most NAME_MAX; raises
    ValidationError for an empty or too long one."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in (name or "")).split())
    if not text:
        raise ValidationError({"name": ["Give the token a name, to tell it apart later."]})
    if len(text) > NAME_MAX:
        raise ValidationError({"name": [f"A token's name has at most {NAME_MAX} characters."]})
    return text


def create_token(user: User, name: str, actor: Actor) -> tuple[ApiToken, str]:
    """Make a token for `user` named `name` (a person for themselves; the shell account for
    anyone): returns the row and the token in clear, which is shown once and never stored.
    Raises PermissionDenied, and ValidationError for a bad name or one already in use."""
    # A person makes their own; only the shell account (with every permission) makes one for
    # somebody else. Nobody else may: a token shown to one person, acting as another.
    owner = actor.user is not None and actor.user.pk == user.pk
    if not owner and (actor.user is not None or not actor.has_perm(REVOKE_ANY)):
        raise PermissionDenied(
            f"{actor.username} cannot make a token for {user.get_username()}: people make "
            "their own tokens"
        )
    if not user.is_active:
        raise PermissionDenied(f"{user.get_username()} is deactivated and cannot have tokens.")
    name = clean_name(name)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        if user.api_tokens.filter(name=name, revoked_at__isnull=True).exists():
            raise ValidationError(
                {"name": [f"{user.get_username()} already has a token named {name!r}."]}
            )
        token = ApiToken.objects.create(
            user=user, name=name, prefix=raw[:PREFIX_CHARS], token_hash=hash_token(raw)
        )
        record(
            actor,
            "api_token.create",
            token,
            object_name=f"{user.get_username()}: {token}",
            message=f"API token {name!r} made for {user.get_username()}",
        )
    log.info("api token created", extra={"token_id": token.pk, "user": user.get_username()})
    return token, raw


def revoke_token(token: ApiToken, actor: Actor) -> bool:
    """Revoke `token` (its owner, or an admin): it is refused from then on. Returns False if
    it was revoked already. Raises PermissionDenied."""
    owner = actor.user is not None and actor.user.pk == token.user_id
    if not owner and not actor.has_perm(REVOKE_ANY):
        raise PermissionDenied(
            f"{actor.username or 'this user'} cannot revoke another person's token: it needs "
            f"the permission {REVOKE_ANY}."
        )
    with transaction.atomic():
        now = timezone.now()
        if not ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now):
            return False
        token.revoked_at = now
        who = token.user.get_username()
        record(
            actor,
            "api_token.revoke",
            token,
            object_name=f"{who}: {token}",
            message=f"API token {token.name!r} of {who} revoked",
        )
    log.info("api token revoked", extra={"token_id": token.pk, "user": who})
    return True


def authenticate(raw: str) -> User | None:
    """The person a token acts for, or None: an unknown or revoked token, or a deactivated
    account. Notes when the token was used (at most once a minute)."""
    if not raw or len(raw) > TOKEN_MAX_CHARS or not raw.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=hash_token(raw), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at <= now - USED_EVERY:
        # Conditional: of two requests at once, one writes.
        ApiToken.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - USED_EVERY), pk=token.pk
        ).update(last_used_at=now)
    return token.user


def tokens_of(user: User) -> list[ApiToken]:
    """A person's tokens, newest first, revoked ones included (with when)."""
    return list(user.api_tokens.order_by("-created_at", "-id"))
