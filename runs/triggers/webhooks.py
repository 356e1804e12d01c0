"""Receiving a delivery at `POST /hooks/<uuid>` (DESIGN.md §7.7; research/wave2.md §2).

`receive` decides the whole answer from the request's headers and raw body bytes, so the
view, the ASGI size guard and the tests all go through one function:

- 404 no such trigger; 410 deleted; 403 disabled (or its agent paused); 413 too large;
- 401 with one generic body for every authentication failure (a bad or missing token or
  signature, a stale or future timestamp): the reason is kept in the delivery log only;
- 200 for GitHub's `ping` (no run); a replay of an *authenticated* delivery id gets the first
  answer again and starts nothing;
- 429 with Retry-After past the trigger's rate; 202 `{"skipped": "filter"}` when its filter
  does not match; 202 `{"run_id": N, ...}` when a run was made.

Every request that names a trigger is recorded as a Delivery with its outcome. Signatures are
checked over the exact bytes received, compared in constant time; GitHub's by hand (one HMAC,
docs.github.com "Validating webhook deliveries"), Standard Webhooks' with the spec's reference
library (`standardwebhooks`, which also checks the ±5 minute timestamp).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from agents import secrets
from agents.models import WebhookTrigger
from agents.triggers import bearer_matches, filter_matches, valid_secrets
from audit.actor import Actor
from audit.models import AuditEntry
from runs.dependencies import MAX_DEPTH
from runs.models import Delivery, Run
from runs.services import hand_over, make_run

log = logging.getLogger(__name__)

GENERIC_UNAUTHORIZED = {"error": "unauthorized"}
# Outcomes that count against a trigger's rate: authenticated deliveries that were acted on.
RATED = [Delivery.Outcome.STARTED, Delivery.Outcome.FILTERED, Delivery.Outcome.PING]
RATE_WINDOW = timedelta(seconds=60)
DELIVERY_ID_MAX = 200
# What a git hook may send (cronos_install_hook): a ref and a commit id, nothing else is kept.
GIT_FIELDS = {"ref": 250, "sha": 64, "event": 20}


@dataclass
class Answer:
    """An HTTP answer: status, JSON body and extra headers."""

    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Request:
    trigger: WebhookTrigger
    headers: Mapping[str, str]
    body: bytes
    remote_addr: str | None


def max_body_bytes() -> int:
    return int(settings.CRONOS_WEBHOOK_MAX_BYTES)


def find(uuid_text: str) -> WebhookTrigger | None:
    """The trigger a URL names, deleted or not; None for anything else."""
    try:
        key = uuid.UUID(str(uuid_text))
    except ValueError:
        return None
    return WebhookTrigger.objects.select_related("agent").filter(uuid=key).first()


def receive(
    uuid_text: str, headers: Mapping[str, str], body: bytes, remote_addr: str | None = None
) -> Answer:
    """Answer one delivery (see the module's docstring); `headers` keyed in lower case."""
    trigger = find(uuid_text)
    if trigger is None:
        return Answer(404, {"error": "no such webhook"})
    request = _Request(trigger, headers, body, remote_addr)
    if trigger.is_deleted:
        return _refuse(request, Delivery.Outcome.DELETED, 410, "this webhook was deleted")
    if not trigger.enabled:
        return _refuse(request, Delivery.Outcome.DISABLED, 403, "this webhook is disabled")
    if len(body) > max_body_bytes():
        return too_large(trigger, len(body), remote_addr)

    problem = _authentication_problem(request)
    if problem:
        log.info(
            "webhook delivery refused",
            extra={"trigger": str(trigger.uuid), "reason": problem, "remote_addr": remote_addr},
        )
        return _record(
            request, Delivery.Outcome.UNAUTHORIZED, Answer(401, GENERIC_UNAUTHORIZED), problem
        )

    event = _event(request)
    if trigger.auth == WebhookTrigger.Auth.GITHUB and event == "ping":
        return _record(request, Delivery.Outcome.PING, Answer(200, {"pong": True}), "GitHub ping")
    if not trigger.agent.enabled:
        return _refuse(
            request, Delivery.Outcome.REFUSED, 403, f"agent {trigger.agent.name} is paused"
        )

    delivery_id = _delivery_id(request)
    document, parse_problem = _json(body)
    # The filter looks at a stranger's body: decided before the transaction, so that its
    # (bounded) time never holds the database.
    passed, why = True, ""
    if trigger.filter_path:
        passed, why = (False, parse_problem) if parse_problem else filter_matches(trigger, document)
    with transaction.atomic():
        # One delivery of a trigger at a time: the replay check, the rate and the run are
        # decided together (SQLite: its write lock; PostgreSQL: the trigger's row lock).
        WebhookTrigger.objects.select_for_update().filter(pk=trigger.pk).exists()
        if delivery_id:
            first = (
                Delivery.objects.filter(trigger=trigger, dedupe_key=delivery_id)
                .values("status_code", "answer")
                .first()
            )
            if first is not None:
                answer = Answer(
                    first["status_code"], dict(first["answer"]), {"X-Cronos-Duplicate": "true"}
                )
                return _record(
                    request,
                    Delivery.Outcome.DUPLICATE,
                    answer,
                    f"delivery {delivery_id} was received before: answered as then",
                    delivery_id=delivery_id,
                )
        retry_after = _rate_limited(trigger)
        if retry_after:
            return _record(
                request,
                Delivery.Outcome.RATE_LIMITED,
                Answer(
                    429,
                    {"error": "rate limit", "retry_after_seconds": retry_after},
                    {"Retry-After": str(retry_after)},
                ),
                f"over {trigger.rate_per_minute} deliveries per minute",
                delivery_id=delivery_id,
            )
        if not passed:
            return _record(
                request,
                Delivery.Outcome.FILTERED,
                Answer(202, {"skipped": "filter"}),
                f"filter: {why}",
                delivery_id=delivery_id,
                dedupe=True,
            )
        run, delivery = _start(request, delivery_id, event, document)
    run = hand_over(run)
    return Answer(202, delivery.answer | {"state": run.state})


def too_large(trigger: WebhookTrigger, length: int, remote_addr: str | None) -> Answer:
    """The 413 for a body of `length` bytes (read from Content-Length before the body itself,
    by the ASGI guard, cronos_site.web.hooks), recorded."""
    limit = max_body_bytes()
    return _record(
        _Request(trigger, {}, b"", remote_addr),
        Delivery.Outcome.TOO_LARGE,
        Answer(413, {"error": f"the body is larger than {limit} bytes"}),
        f"{length} bytes, over the limit of {limit}",
        body_bytes=length,
    )


# --- Authentication --------------------------------------------------------------------------


def _authentication_problem(request: _Request) -> str:
    """Why the delivery does not prove it comes from the trigger's sender ("" when it does)."""
    trigger = request.trigger
    try:
        valid = valid_secrets(trigger, timezone.now())
    except secrets.SecretKeyError as exc:
        log.error("webhook secret cannot be decrypted", extra={"trigger": str(trigger.uuid)})
        return str(exc)
    if trigger.auth == WebhookTrigger.Auth.BEARER:
        token = _bearer(request.headers)
        if not token:
            return "no token (Authorization: Bearer ... or X-Cronos-Token)"
        return "" if bearer_matches(token, valid) else "wrong token"
    if trigger.auth == WebhookTrigger.Auth.GITHUB:
        return github_problem(request.headers.get("x-hub-signature-256", ""), request.body, valid)
    return standard_problem(dict(request.headers), request.body, valid)


def _bearer(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-cronos-token", "").strip()


def github_signature(secret: str, body: bytes) -> str:
    """GitHub's `X-Hub-Signature-256` value for `body`: `sha256=` + hex HMAC-SHA256 keyed with
    the secret's UTF-8 bytes (docs.github.com, "Validating webhook deliveries")."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_problem(header: str, body: bytes, valid: list[str]) -> str:
    """Why `header` is not a valid GitHub signature of `body` under any of `valid` secrets."""
    if not header:
        return "no X-Hub-Signature-256 header"
    if not header.startswith("sha256="):
        return "X-Hub-Signature-256 is not sha256=<hex>"
    found = False
    for secret in valid:
        found |= hmac.compare_digest(
            github_signature(secret, body).encode(), header.strip().encode()
        )
    return "" if found else "signature does not match the body"


def standard_problem(headers: dict[str, str], body: bytes, valid: list[str]) -> str:
    """Why the Standard Webhooks headers do not sign `body` under any of `valid` secrets, with
    a timestamp within 5 minutes of now (the reference library's rule)."""
    if not all(
        headers.get(name) for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    ):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8 (Standard Webhooks signs text)"
    problem = "signature does not match the body"
    for secret in valid:
        try:
            Webhook(secret).verify(text, headers, json_parse=False)
            return ""
        except WebhookVerificationError as exc:
            message = str(exc)
            if "timestamp" in message.lower():
                return f"timestamp refused: {message}"
        except (ValueError, TypeError) as exc:  # a malformed header the library chokes on
            problem = f"malformed signature header ({type(exc).__name__})"
    return problem


# --- The rest of the answer ------------------------------------------------------------------


def _event(request: _Request) -> str:
    headers = request.headers
    return (headers.get("x-github-event") or headers.get("x-cronos-event") or "")[:100]


def _delivery_id(request: _Request) -> str:
    """The sender's id of this delivery, the replay key (empty: none given), at most
    DELIVERY_ID_MAX characters: a longer one is kept as its start and a hash of the whole, so
    two ids that differ only past the limit stay two ids."""
    headers = request.headers
    auth = request.trigger.auth
    if auth == WebhookTrigger.Auth.GITHUB:
        given = headers.get("x-github-delivery", "")
    elif auth == WebhookTrigger.Auth.STANDARD:
        given = headers.get("webhook-id", "")
    else:
        given = headers.get("idempotency-key", "")
    given = given.strip()
    if len(given) <= DELIVERY_ID_MAX:
        return given
    digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{given[: DELIVERY_ID_MAX - 65]}~{digest}"


def _rate_limited(trigger: WebhookTrigger) -> int:
    """Seconds until the trigger may take another delivery (0: now), counting the deliveries
    acted on in the last minute. Counted from the delivery log, so that every web process of
    a site shares one count without a shared cache (the embedded shape has none)."""
    now = timezone.now()
    recent = list(
        Delivery.objects.filter(
            trigger=trigger, outcome__in=RATED, received_at__gt=now - RATE_WINDOW
        )
        .order_by("-received_at")
        .values_list("received_at", flat=True)[: trigger.rate_per_minute]
    )
    if len(recent) < trigger.rate_per_minute:
        return 0
    oldest = recent[-1]
    return max(1, math.ceil((oldest + RATE_WINDOW - now).total_seconds()))


def _json(body: bytes) -> tuple[object, str]:
    if not body:
        return None, "the body is empty"
    try:
        return json.loads(body), ""
    except (UnicodeDecodeError, ValueError):
        return None, "the body is not JSON"
    except RecursionError:
        return None, "the body is JSON nested too deeply to read"


def _start(
    request: _Request, delivery_id: str, event: str, document: object
) -> tuple[Run, Delivery]:
    """Make the run and its delivery row (inside the caller's transaction)."""
    trigger = request.trigger
    is_git = trigger.kind == WebhookTrigger.Kind.GIT
    detail: dict[str, object] = {"webhook": trigger.name, "payload": trigger.payload}
    if delivery_id:
        detail["delivery_id"] = delivery_id
    if event:
        detail["event"] = event
    if is_git:
        detail.update(_git_detail(document, trigger))
    actor = Actor(
        user=None,
        source=AuditEntry.Source.SYSTEM,
        ip_address=request.remote_addr,
        name=f"{trigger.get_kind_display().lower()} {trigger.name}",
    )
    run = make_run(
        trigger.agent,
        actor,
        trigger=Run.Trigger.GIT if is_git else Run.Trigger.WEBHOOK,
        detail=detail,
        message=f"{'git hook' if is_git else 'webhook'} {trigger.name}"
        + (f", delivery {delivery_id}" if delivery_id else ""),
    )
    depth = _chain_depth(request.headers)
    if depth:
        Run.objects.filter(pk=run.pk).update(chain_depth=depth)
        run.chain_depth = depth
        if depth > MAX_DEPTH:
            run.skip(
                f"trigger chain deeper than {MAX_DEPTH} runs (a loop through webhooks or "
                "dependencies?): not started"
            )
    keep_body = trigger.payload != WebhookTrigger.Payload.NONE
    delivery = Delivery.objects.create(
        trigger=trigger,
        delivery_id=delivery_id,
        dedupe_key=delivery_id or None,
        event=event,
        outcome=Delivery.Outcome.STARTED,
        status_code=202,
        reason="",
        answer={"run_id": run.pk},
        run=run,
        remote_addr=request.remote_addr,
        body_bytes=len(request.body),
        body=request.body if keep_body else None,
    )
    # The run finds its payload through its delivery (runs.execution: webhook.json).
    Run.objects.filter(pk=run.pk).update(trigger_detail=detail | {"delivery": delivery.pk})
    run.trigger_detail = detail | {"delivery": delivery.pk}
    return run, delivery


def _chain_depth(headers: Mapping[str, str]) -> int:
    """How deep in a chain of runs this delivery is: one more than the run that sent it, when
    it says so with `X-Cronos-Parent-Run: $CRONOS_RUN_ID` (an agent calling a webhook), else 0.
    A sender can only make its own chain look deeper, never shallower."""
    try:
        parent = int(headers.get("x-cronos-parent-run", "").strip())
    except ValueError:
        return 0
    depth = Run.objects.filter(pk=parent).values_list("chain_depth", flat=True).first()
    return 0 if depth is None else depth + 1


def _git_detail(document: object, trigger: WebhookTrigger) -> dict[str, str]:
    """The ref and commit a git hook sent, each a short printable string (else left out)."""
    detail = {"repo": trigger.repo} if trigger.repo else {}
    if isinstance(document, dict):
        for name, limit in GIT_FIELDS.items():
            value = document.get(name)
            if isinstance(value, str) and value.isprintable() and 0 < len(value) <= limit:
                detail[name] = value
    return detail


# Answers that start nothing and may come in floods: kept at most REFUSALS_KEPT_PER_MINUTE a
# minute per trigger (those that proved nothing, and an authenticated sender's too many).
UNPROVEN = [
    Delivery.Outcome.UNAUTHORIZED,
    Delivery.Outcome.DISABLED,
    Delivery.Outcome.DELETED,
    Delivery.Outcome.TOO_LARGE,
    Delivery.Outcome.RATE_LIMITED,
    Delivery.Outcome.DUPLICATE,
]
REFUSALS_KEPT_PER_MINUTE = 60
# Deliveries that started no run are kept this long (the ones that did stay with their run).
KEEP_REFUSED = timedelta(days=7)


def _refusals_last_minute(trigger: WebhookTrigger) -> int:
    since = timezone.now() - RATE_WINDOW
    return Delivery.objects.filter(
        trigger=trigger, outcome__in=UNPROVEN, received_at__gt=since
    ).count()


def prune(now, engine=None) -> list[int]:
    """Housekeeping: forget deliveries older than KEEP_REFUSED that started no run (a run's
    own delivery stays: its payload is what an exact re-run is given). Returns no run ids."""
    Delivery.objects.filter(run__isnull=True, received_at__lt=now - KEEP_REFUSED).delete()
    return []


def _refuse(request: _Request, outcome: str, status: int, reason: str) -> Answer:
    return _record(request, outcome, Answer(status, {"error": reason}), reason)


def _record(
    request: _Request,
    outcome: str,
    answer: Answer,
    reason: str,
    *,
    delivery_id: str = "",
    dedupe: bool = False,
    body_bytes: int | None = None,
) -> Answer:
    """Write the delivery log's row for a delivery that started no run. Refusals of requests
    that proved nothing are kept at most REFUSALS_KEPT_PER_MINUTE a minute per trigger: a
    stranger who knows a URL must not be able to fill the database."""
    if outcome in UNPROVEN and _refusals_last_minute(request.trigger) >= REFUSALS_KEPT_PER_MINUTE:
        log.warning(
            "webhook refusal not logged: too many this minute",
            extra={"trigger": str(request.trigger.uuid), "outcome": outcome},
        )
        return answer
    Delivery.objects.create(
        trigger=request.trigger,
        delivery_id=delivery_id or _delivery_id(request),
        dedupe_key=(delivery_id or None) if dedupe else None,
        event=_event(request),
        outcome=outcome,
        status_code=answer.status,
        reason=reason[:500],
        answer=answer.body,
        remote_addr=request.remote_addr,
        # A Content-Length can claim any number of digits: the column holds 32 bits.
        body_bytes=min(len(request.body) if body_bytes is None else body_bytes, 2**31 - 1),
    )
    return answer
