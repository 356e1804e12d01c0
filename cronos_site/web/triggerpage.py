"""What the pages show of the triggers beyond cron (DESIGN.md §7.7): an agent's webhook and git
triggers with their URLs, its delivery log, the form that adds a webhook, the rows of "Run with
variables", and what started a run (its trigger detail) for the run page.

Queries for the pages live here, so the view modules only parse, call and render. No secret
passes through here except the one a view was just given by agents.triggers to show once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from django import forms
from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent, WebhookTrigger
from agents.triggers import live_triggers
from runs.models import Delivery, Run

# The agent page's delivery log: the latest deliveries to any of the agent's triggers.
DELIVERIES_SHOWN = 25
# The overlaps a person may give a rotation: how long the previous secret keeps working.
ROTATION_OVERLAPS = [(0, "none: it stops now"), (3600, "1 hour"), (24 * 3600, "24 hours")]
# "Run with variables" starts with this many empty rows (the page's script adds more).
EMPTY_VARIABLE_ROWS = 2
# A value of a trigger detail key the run page does not know is cut to this many characters.
DETAIL_VALUE_MAX_CHARS = 200


def hook_url(trigger: WebhookTrigger) -> str:
    """Where the sender posts: the site's public address (CRONOS_BASE_URL) and the hook's path."""
    return settings.CRONOS_BASE_URL + reverse("hook", args=[str(trigger.uuid)])


# --- An agent's triggers ---------------------------------------------------------------------


class WebhookForm(forms.Form):
    """A new webhook's settings, as a person types them. agents.triggers.validate_trigger is
    the rule; this form only parses, and shows that rule's errors next to each field."""

    name = forms.CharField(
        max_length=64,
        help_text="Lower-case letters, digits, - and _; e.g. github-push.",
    )
    auth = forms.ChoiceField(
        label="Authentication",
        choices=WebhookTrigger.Auth.choices,
        initial=WebhookTrigger.Auth.BEARER,
        help_text="How a delivery proves its sender. GitHub: the repository's webhook signs "
        "each delivery with the secret.",
    )
    payload = forms.ChoiceField(
        label="Payload",
        choices=WebhookTrigger.Payload.choices,
        initial=WebhookTrigger.Payload.FILE,
        help_text="What the agent is given of the body: never its prompt.",
    )
    filter_path = forms.CharField(
        label="Filter: JSON path",
        max_length=200,
        required=False,
        help_text="Optional: fire only when the value here matches the pattern; e.g. $.ref",
    )
    filter_pattern = forms.CharField(
        label="Filter: pattern",
        max_length=500,
        required=False,
        help_text="A regular expression searched in that value; e.g. ^refs/heads/main$",
    )
    rate_per_minute = forms.IntegerField(
        label="Rate per minute",
        min_value=1,
        max_value=6000,
        initial=60,
        help_text="More deliveries in a minute are answered 429 with Retry-After.",
    )

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("auto_id", "webhook-%s")
        super().__init__(*args, **kwargs)


@dataclass(frozen=True)
class Shown:
    """A secret shown once: just made or rotated, in the answer to that request only."""

    trigger: WebhookTrigger
    secret: str
    url: str
    rotated: bool = False
    previous_until: datetime | None = None


def shown(trigger: WebhookTrigger, secret: str, *, rotated: bool = False) -> Shown:
    return Shown(
        trigger=trigger,
        secret=secret,
        url=hook_url(trigger),
        rotated=rotated,
        previous_until=trigger.previous_valid_until if rotated else None,
    )


def agent_triggers(agent: Agent) -> list[WebhookTrigger]:
    """The agent's triggers (not deleted), each with its `url` and its latest delivery's
    `last_at` and `last_outcome`: one query, whatever the number of deliveries."""
    latest = Delivery.objects.filter(trigger=OuterRef("pk")).order_by("-received_at", "-id")
    triggers = list(
        live_triggers(agent)
        .defer("secret", "previous_secret")
        .annotate(
            last_at=Subquery(latest.values("received_at")[:1]),
            last_outcome=Subquery(latest.values("outcome")[:1]),
        )
    )
    now = timezone.now()
    labels = dict(Delivery.Outcome.choices)
    for trigger in triggers:
        trigger.url = hook_url(trigger)
        trigger.last_outcome_label = labels.get(trigger.last_outcome, "")
        trigger.overlap_until = (
            trigger.previous_valid_until
            if trigger.previous_valid_until and trigger.previous_valid_until > now
            else None
        )
    return triggers


def triggers_context(
    agent: Agent, form: WebhookForm | None = None, secret: Shown | None = None
) -> dict:
    """What the agent page's Triggers section shows."""
    return {
        "triggers": agent_triggers(agent),
        "webhook_form": form if form is not None else WebhookForm(),
        "webhook_form_open": form is not None and bool(form.errors),
        "shown": secret,
        "overlaps": ROTATION_OVERLAPS,
        "default_overlap": 24 * 3600,
    }


# --- The delivery log ------------------------------------------------------------------------

# The colour of an outcome in the log: accepted, answered without a run, or refused.
OUTCOME_TONE: dict[str, str] = {
    Delivery.Outcome.STARTED: "ok",
    Delivery.Outcome.DUPLICATE: "neutral",
    Delivery.Outcome.FILTERED: "neutral",
    Delivery.Outcome.PING: "neutral",
    Delivery.Outcome.RATE_LIMITED: "wait",
}


def recent_deliveries(agent: Agent) -> tuple[list[Delivery], bool]:
    """(the latest DELIVERIES_SHOWN deliveries to any of the agent's triggers, newest first,
    deleted triggers included since their log is kept; whether the agent has or had one).

    One query per trigger, each served by the delivery log's index (trigger, -received_at),
    then merged: one query over all of them would sort every delivery the agent ever had, and a
    flood of refused ones is recorded too. The bodies (up to 256 KiB each) are never read."""
    limit = DELIVERIES_SHOWN
    trigger_ids = list(WebhookTrigger.objects.filter(agent=agent).values_list("pk", flat=True))
    deliveries: list[Delivery] = []
    for trigger_id in trigger_ids:
        deliveries.extend(
            Delivery.objects.filter(trigger_id=trigger_id)
            .select_related("trigger")
            .defer("body", "answer", "trigger__secret", "trigger__previous_secret")
            .order_by("-received_at")[:limit]
        )
    deliveries.sort(key=lambda delivery: (delivery.received_at, delivery.pk), reverse=True)
    deliveries = deliveries[:limit]
    for delivery in deliveries:
        delivery.tone = OUTCOME_TONE.get(delivery.outcome, "bad")  # type: ignore[attr-defined]
    return deliveries, bool(trigger_ids)


# --- "Run with variables" --------------------------------------------------------------------


def variable_rows(data) -> list[tuple[str, str]]:
    """The (name, value) rows a person posted (`var_name`, `var_value`), as typed, with the
    rows left wholly empty dropped."""
    names, values = data.getlist("var_name"), data.getlist("var_value")
    values += [""] * (len(names) - len(values))
    return [(name, value) for name, value in zip(names, values, strict=False) if name or value]


def rows_problems(rows: list[tuple[str, str]]) -> list[str]:
    """What the rows themselves get wrong before agents.validation sees the variables: a
    value without a name, a name given twice."""
    problems = []
    seen: set[str] = set()
    for name, _value in rows:
        if not name.strip():
            problems.append("a value was given without a name")
        elif name.strip() in seen:
            problems.append(f"{name.strip()} is given twice")
        seen.add(name.strip())
    return problems


def variables_of(rows: list[tuple[str, str]]) -> dict[str, str]:
    return {name.strip(): value for name, value in rows}


def rows_to_show(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The rows the form draws: those given, then one empty row (at least EMPTY_VARIABLE_ROWS)."""
    empty = max(EMPTY_VARIABLE_ROWS - len(rows), 1)
    return [*rows, *[("", "")] * empty]


# --- What started a run ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One line of a run's trigger detail: a label, a text, and where it links (if anywhere)."""

    label: str
    text: str
    url: str = ""
    code: bool = False


PAYLOAD_WORDS = {
    WebhookTrigger.Payload.FILE: "as a file, $CRONOS_RUN_DIR/webhook.json",
    WebhookTrigger.Payload.ENV: "in the variable CRONOS_WEBHOOK_PAYLOAD",
    WebhookTrigger.Payload.NONE: "not passed to the agent",
}
# Keys of trigger_detail that are drawn from others, or are the database's own ids.
_DRAWN = {"webhook", "delivery", "delivery_id", "payload", "event", "repo", "ref", "sha"}
_DRAWN |= {"rerun_of", "original_trigger"}


def trigger_facts(run: Run) -> list[Fact]:
    """What started `run`, beyond its trigger kind: the webhook and its delivery, the git ref
    and commit, the run it repeats, and any other detail its trigger recorded."""
    detail = run.trigger_detail if isinstance(run.trigger_detail, dict) else {}
    facts: list[Fact] = []
    original = run.rerun_of_id or _int(detail.get("rerun_of"))
    if original:
        kind = dict(Run.Trigger.choices).get(str(detail.get("original_trigger", "")), "")
        facts.append(
            Fact(
                "Re-run of",
                f"run #{original}" + (f" ({kind.lower()} run)" if kind else ""),
                reverse("runs:detail", args=[original]),
            )
        )
    if detail.get("webhook"):
        is_git = run.trigger == Run.Trigger.GIT or detail.get("original_trigger") == "git"
        triggers = reverse("agents:detail", args=[run.agent.name]) + "#triggers"
        facts.append(Fact("Git trigger" if is_git else "Webhook", str(detail["webhook"]), triggers))
    if detail.get("delivery_id"):
        facts.append(Fact("Delivery", str(detail["delivery_id"]), code=True))
    elif detail.get("delivery"):
        facts.append(Fact("Delivery", f"#{detail['delivery']} in the agent's delivery log"))
    if detail.get("event"):
        facts.append(Fact("Event", str(detail["event"]), code=True))
    if detail.get("repo"):
        facts.append(Fact("Repository", str(detail["repo"]), code=True))
    if detail.get("ref"):
        facts.append(Fact("Ref", str(detail["ref"]), code=True))
    if detail.get("sha"):
        facts.append(Fact("Commit", str(detail["sha"]), code=True))
    if detail.get("payload") in PAYLOAD_WORDS and detail.get("delivery"):
        facts.append(Fact("Payload", PAYLOAD_WORDS[detail["payload"]]))
    for key, value in detail.items():
        if key in _DRAWN or value in (None, "", [], {}):
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) > DETAIL_VALUE_MAX_CHARS:
            text = text[: DETAIL_VALUE_MAX_CHARS - 1] + "…"
        facts.append(Fact(str(key).replace("_", " ").capitalize(), text))
    return facts


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
