"""Webhook triggers of an agent: made, rotated, changed and deleted here, each audited
(DESIGN.md §7.7). Receiving a delivery is runs.triggers.webhooks.

The secret of a trigger is shown once, when it is made or rotated, and never again: a bearer
token is kept as its SHA-256 only; a signing secret (GitHub, Standard Webhooks) is kept
encrypted with the agent secrets' keys (agents.secrets), since checking a signature needs it.
No secret is ever written to the audit log, a page after the first, an export or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets as random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import regex
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from jsonpath_ng import parse as parse_jsonpath
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError

from agents import secrets
from agents.models import Agent, WebhookTrigger
from audit.actor import Actor
from audit.log import record

PERMISSION = "agents.change_agent"  # who may edit an agent may manage its triggers
# How long a rotated secret keeps working beside the new one, by default (seconds).
ROTATION_OVERLAP_SECONDS = 24 * 3600
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# A filter's pattern runs against text a stranger sent: evaluated with a time limit for the
# whole delivery (the `regex` module's timeout; Python's `re` has none), on at most so many
# values of a document nested at most so deep, so no body can hang a web process.
FILTER_BUDGET_SECONDS = 0.1
FILTER_VALUE_MAX_CHARS = 10_000
FILTER_MAX_VALUES = 100
FILTER_MAX_DEPTH = 32


@dataclass(frozen=True)
class Made:
    """A trigger with its secret in clear, to be shown once."""

    trigger: WebhookTrigger
    secret: str


def new_secret(auth: str) -> str:
    """A fresh secret for `auth`: a bearer token `cronos_wh_<43 chars>`, a GitHub secret of 64
    hex characters, or a Standard Webhooks secret `whsec_<base64 of 32 bytes>` (the spec's
    format: 24 to 64 random bytes)."""
    if auth == WebhookTrigger.Auth.BEARER:
        return "cronos_wh_" + random.token_urlsafe(32)
    if auth == WebhookTrigger.Auth.GITHUB:
        return random.token_hex(32)
    return "whsec_" + base64.b64encode(random.token_bytes(32)).decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _stored(auth: str, secret: str) -> str:
    return token_hash(secret) if auth == WebhookTrigger.Auth.BEARER else secrets.encrypt(secret)


def valid_secrets(trigger: WebhookTrigger, now: datetime) -> list[str]:
    """What a delivery may prove itself with now: the current secret, and the previous one
    until its overlap ends (bearer: SHA-256 hashes; signing modes: the secrets in clear).
    Raises agents.secrets.SecretKeyError when a secret cannot be decrypted."""
    stored = [trigger.secret]
    if (
        trigger.previous_secret
        and trigger.previous_valid_until
        and now < trigger.previous_valid_until
    ):
        stored.append(trigger.previous_secret)
    if trigger.auth == WebhookTrigger.Auth.BEARER:
        return stored
    return [secrets.decrypt(value) for value in stored if value]


def bearer_matches(token: str, hashes: list[str]) -> bool:
    """Whether `token` is one of the tokens behind `hashes`, compared in constant time."""
    given = token_hash(token)
    found = False
    for stored in hashes:
        found |= hmac.compare_digest(given, stored)
    return found


# --- Checking a trigger's settings -----------------------------------------------------------


def validate_trigger(trigger: WebhookTrigger) -> None:
    """Every rule a trigger's settings keep; raises ValidationError naming each field."""
    errors: dict[str, list[str]] = {}
    if not NAME.fullmatch(trigger.name or ""):
        errors.setdefault("name", []).append(
            "a name is 1 to 64 lower-case letters, digits, - and _, starting with a letter or digit"
        )
    if trigger.auth not in WebhookTrigger.Auth.values:
        errors.setdefault("auth", []).append(
            f"auth must be one of {', '.join(WebhookTrigger.Auth.values)}"
        )
    if trigger.payload not in WebhookTrigger.Payload.values:
        errors.setdefault("payload", []).append(
            f"payload must be one of {', '.join(WebhookTrigger.Payload.values)}"
        )
    if not 1 <= (trigger.rate_per_minute or 0) <= 6000:
        errors.setdefault("rate_per_minute", []).append("between 1 and 6000 per minute")
    if bool(trigger.filter_path) != bool(trigger.filter_pattern):
        errors.setdefault("filter_path", []).append(
            "a filter needs both a JSON path and a pattern (or neither)"
        )
    if trigger.filter_path:
        problem = jsonpath_problem(trigger.filter_path)
        if problem:
            errors.setdefault("filter_path", []).append(problem)
    if trigger.filter_pattern:
        problem = pattern_problem(trigger.filter_pattern)
        if problem:
            errors.setdefault("filter_pattern", []).append(problem)
    if errors:
        raise ValidationError(errors)


def jsonpath_problem(path: str) -> str:
    if len(path) > 200:
        return "a JSON path is at most 200 characters"
    if ".." in path:
        # Recursive descent over a stranger's document costs as much as the stranger likes
        # (`$..*..*..*`): a filter names the place it looks at.
        return "recursive descent (..) is not allowed: name the place, e.g. $.ref or $.commits[*].message"
    try:
        parse_jsonpath(path)
    except (
        JsonPathLexerError,
        JsonPathParserError,
        Exception,
    ) as exc:  # the parser raises bare Exception
        return f"not a JSON path ({str(exc).splitlines()[0][:120]}); for example $.ref"
    return ""


def pattern_problem(pattern: str) -> str:
    try:
        regex.compile(pattern)
    except regex.error as exc:
        return f"not a regular expression: {exc}"
    return ""


def filter_matches(trigger: WebhookTrigger, document: object) -> tuple[bool, str]:
    """(whether the delivery passes the trigger's filter, why not). Values found at the path
    are tried in order (as JSON text unless a string), at most FILTER_MAX_VALUES of them, all
    within FILTER_BUDGET_SECONDS of pattern time; a document nested deeper than
    FILTER_MAX_DEPTH is not looked into. Whatever runs out counts as not matching, and says so:
    a stranger's body cannot make a filter take longer than its budget."""
    if not trigger.filter_path:
        return True, ""
    problem = jsonpath_problem(trigger.filter_path)
    if problem:  # saved before the rule
        return False, f"the filter's path cannot be used: {problem}"
    if nesting_depth(document, FILTER_MAX_DEPTH) > FILTER_MAX_DEPTH:
        return False, f"the body is nested deeper than {FILTER_MAX_DEPTH} levels"
    found = parse_jsonpath(trigger.filter_path).find(document)
    values = [match.value for match in found[:FILTER_MAX_VALUES]]
    if not values:
        return False, f"nothing at {trigger.filter_path}"
    compiled = regex.compile(trigger.filter_pattern)
    deadline = time.monotonic() + FILTER_BUDGET_SECONDS
    for value in values:
        text = value if isinstance(value, str) else _json_text(value)
        left = deadline - time.monotonic()
        if left <= 0:
            return False, f"the pattern took too long on the values at {trigger.filter_path}"
        try:
            if compiled.search(text[:FILTER_VALUE_MAX_CHARS], timeout=left):
                return True, ""
        except TimeoutError:
            return False, f"the pattern took too long on the values at {trigger.filter_path}"
    shown = _json_text(values[0])[:80]
    return False, f"{trigger.filter_path} is {shown}, which does not match {trigger.filter_pattern}"


def nesting_depth(document: object, stop_after: int) -> int:
    """How deep lists and mappings nest in `document` (0 for a scalar), counted without
    recursion and given up past `stop_after` (returns stop_after + 1)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(document, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: list = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        if depth > stop_after:
            return stop_after + 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def _json_text(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True)


# --- Services: each checks permission and is audited ----------------------------------------


def create_trigger(
    agent: Agent,
    actor: Actor,
    *,
    name: str,
    auth: str = WebhookTrigger.Auth.BEARER,
    payload: str = WebhookTrigger.Payload.FILE,
    filter_path: str = "",
    filter_pattern: str = "",
    rate_per_minute: int = 60,
    enabled: bool = True,
    kind: str = WebhookTrigger.Kind.WEBHOOK,
    repo: str = "",
    event: str = "",
) -> Made:
    """Make a trigger for `agent` with a fresh secret; returns it with the secret in clear (to
    show once). Raises PermissionDenied, or ValidationError (a bad setting, or a name the
    agent's triggers already use)."""
    actor.require(PERMISSION)
    secret = new_secret(auth)
    trigger = WebhookTrigger(
        agent=agent,
        uuid=uuid.uuid4(),
        name=name,
        kind=kind,
        auth=auth,
        payload=payload,
        filter_path=filter_path,
        filter_pattern=filter_pattern,
        rate_per_minute=rate_per_minute,
        enabled=enabled,
        repo=repo,
        event=event,
        created_by_name=actor.username,
    )
    validate_trigger(trigger)
    trigger.secret = _stored(auth, secret)
    try:
        with transaction.atomic():
            trigger.save()
            record(
                actor,
                "webhook.create",
                agent,
                object_name=agent.name,
                changes={"webhook": [None, _described(trigger)]},
                message=f"{trigger.get_kind_display().lower()} trigger {trigger.name} made",
            )
    except IntegrityError as exc:
        raise ValidationError(
            {"name": [f"{agent.name} already has a trigger named {name}"]}
        ) from exc
    return Made(trigger, secret)


def rotate_secret(
    trigger: WebhookTrigger, actor: Actor, *, overlap_seconds: int = ROTATION_OVERLAP_SECONDS
) -> str:
    """Give `trigger` a new secret (returned in clear, to show once); the current one keeps
    working for `overlap_seconds` (0: not at all), so senders can be moved over."""
    actor.require(PERMISSION)
    if trigger.is_deleted:
        raise ValidationError("this trigger was deleted")
    if not 0 <= overlap_seconds <= 30 * 24 * 3600:
        raise ValidationError("the overlap is between 0 seconds and 30 days")
    secret = new_secret(trigger.auth)
    now = timezone.now()
    with transaction.atomic():
        trigger.previous_secret = trigger.secret if overlap_seconds else ""
        trigger.previous_valid_until = (
            now + timedelta(seconds=overlap_seconds) if overlap_seconds else None
        )
        trigger.secret = _stored(trigger.auth, secret)
        trigger.save(update_fields=["secret", "previous_secret", "previous_valid_until"])
        record(
            actor,
            "webhook.rotate",
            trigger.agent,
            object_name=trigger.agent.name,
            message=(
                f"secret of trigger {trigger.name} rotated; the previous one works for "
                f"{overlap_seconds} s more"
            ),
        )
    return secret


EDITABLE = ("name", "payload", "filter_path", "filter_pattern", "rate_per_minute", "enabled")


def update_trigger(trigger: WebhookTrigger, actor: Actor, **values: object) -> dict:
    """Change a trigger's settings (EDITABLE; the auth mode is fixed: make a new trigger);
    returns {field: [old, new]} of what changed. Raises PermissionDenied, ValidationError."""
    actor.require(PERMISSION)
    if trigger.is_deleted:
        raise ValidationError("this trigger was deleted")
    unknown = set(values) - set(EDITABLE)
    if unknown:
        raise ValidationError(f"cannot change {', '.join(sorted(unknown))}")
    changes = {}
    for field, value in values.items():
        old = getattr(trigger, field)
        if old != value:
            changes[field] = [old, value]
            setattr(trigger, field, value)
    if not changes:
        return {}
    validate_trigger(trigger)
    try:
        with transaction.atomic():
            trigger.save(update_fields=list(changes))
            record(
                actor,
                "webhook.change",
                trigger.agent,
                object_name=trigger.agent.name,
                changes={f"webhook {trigger.name}: {k}": v for k, v in changes.items()},
                message=f"trigger {trigger.name} changed",
            )
    except IntegrityError as exc:
        raise ValidationError({"name": ["another trigger of this agent has that name"]}) from exc
    return changes


def delete_trigger(trigger: WebhookTrigger, actor: Actor) -> None:
    """Delete a trigger: its URL answers 410 Gone from now on, its secrets are erased, its
    delivery log is kept."""
    actor.require(PERMISSION)
    if trigger.is_deleted:
        return
    with transaction.atomic():
        trigger.deleted_at = timezone.now()
        trigger.enabled = False
        trigger.secret = ""
        trigger.previous_secret = ""
        trigger.previous_valid_until = None
        trigger.save(
            update_fields=[
                "deleted_at",
                "enabled",
                "secret",
                "previous_secret",
                "previous_valid_until",
            ]
        )
        record(
            actor,
            "webhook.delete",
            trigger.agent,
            object_name=trigger.agent.name,
            changes={"webhook": [_described(trigger), None]},
            message=f"trigger {trigger.name} deleted; its URL now answers 410 Gone",
        )


def _described(trigger: WebhookTrigger) -> dict:
    """A trigger's settings for the audit log and exports: never a secret."""
    described: dict[str, object] = {
        "name": trigger.name,
        "kind": trigger.kind,
        "auth": trigger.auth,
        "payload": trigger.payload,
        "rate_per_minute": trigger.rate_per_minute,
        "enabled": trigger.enabled,
    }
    if trigger.filter_path:
        described["filter"] = {"path": trigger.filter_path, "pattern": trigger.filter_pattern}
    if trigger.repo:
        described["repo"] = trigger.repo
        described["event"] = trigger.event
    return described


def live_triggers(agent: Agent):
    """The agent's triggers that are not deleted, by name."""
    return agent.webhooks.filter(deleted_at__isnull=True).order_by("name")
