"""The agent page's Triggers section: add a webhook, rotate its secret, disable or enable it,
delete it. agents.triggers does each one, checks the permission (agents.change_agent) and
audits; these views parse the form, call it and render.

A trigger's secret is shown once, in the answer to the request that made or rotated it, and is
kept nowhere else: not in the session, not in a message, not on a later page (DESIGN.md §7.7).
So those answers are rendered, never redirected: an HTMX request gets the Triggers section, a
plain form post the whole agent page. (Reloading that page posts the form again, which makes no
second webhook: the name is taken.)
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from agents.models import Agent, WebhookTrigger
from agents.triggers import create_trigger, delete_trigger, rotate_secret, update_trigger
from cronos_site.web import triggerpage
from cronos_site.web.access import (
    CHANGE,
    HtmxHttpRequest,
    actor,
    agent_for,
    refused_status,
    wants_fragment,
)
from cronos_site.web.triggerpage import Shown, WebhookForm
from cronos_site.web.views.agents import agent_page, agent_url


def _section(
    request: HtmxHttpRequest,
    agent: Agent,
    *,
    form: WebhookForm | None = None,
    secret: Shown | None = None,
    status: int = 200,
) -> HttpResponse:
    """The Triggers section for HTMX, else the whole agent page, showing `form` (with its
    errors) and `secret` (once)."""
    context = triggerpage.triggers_context(agent, form, secret)
    if wants_fragment(request):
        return render(request, "agents/triggers.html", {"agent": agent, **context}, status=status)
    return agent_page(request, agent, status=status, **context)


def _back(request: HtmxHttpRequest, agent: Agent) -> HttpResponse:
    """After an action that shows no secret: the section (HTMX), else the page, redirected."""
    if wants_fragment(request):
        return _section(request, agent)
    return HttpResponseRedirect(agent_url(agent) + "#triggers")


def _trigger(agent: Agent, trigger_id: int) -> WebhookTrigger:
    """One of the agent's triggers that is not deleted (404 otherwise: it is gone)."""
    return get_object_or_404(
        WebhookTrigger.objects.select_related("agent"),
        pk=trigger_id,
        agent=agent,
        deleted_at__isnull=True,
    )


def _kind(trigger: WebhookTrigger) -> str:
    return "git trigger" if trigger.kind == WebhookTrigger.Kind.GIT else "webhook"


@require_POST
@vary_on_headers("HX-Request")
def trigger_add(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Add a webhook; the answer shows its secret, once."""
    agent = agent_for(request, name, CHANGE)
    form = WebhookForm(request.POST)
    if form.is_valid():
        try:
            made = create_trigger(agent, actor(request), **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)  # validate_trigger names the form's own fields
        else:
            messages.success(request, f"Added the webhook {made.trigger.name}.")
            return _section(request, agent, secret=triggerpage.shown(made.trigger, made.secret))
    return _section(request, agent, form=form, status=refused_status(request, True))


@require_POST
@vary_on_headers("HX-Request")
def trigger_rotate(request: HtmxHttpRequest, name: str, trigger_id: int) -> HttpResponse:
    """Give a trigger a new secret (shown once); the previous one keeps working for the chosen
    overlap, so that its sender can be moved over without a lost delivery."""
    agent = agent_for(request, name, CHANGE)
    trigger = _trigger(agent, trigger_id)
    overlaps = dict(triggerpage.ROTATION_OVERLAPS)
    raw = request.POST.get("overlap", "")
    overlap = int(raw) if raw.isdigit() and int(raw) in overlaps else None
    if overlap is None:
        messages.error(request, "Pick how long the previous secret keeps working.")
        return _section(request, agent, status=refused_status(request, True))
    try:
        secret = rotate_secret(trigger, actor(request), overlap_seconds=overlap)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return _section(request, agent, status=refused_status(request, True))
    until = trigger.previous_valid_until
    messages.success(
        request,
        f"Rotated the secret of the {_kind(trigger)} {trigger.name}; "
        + (
            f"the previous one works until {timezone.localtime(until):%Y-%m-%d %H:%M %Z}."
            if until
            else "the previous one no longer works."
        ),
    )
    return _section(request, agent, secret=triggerpage.shown(trigger, secret, rotated=True))


@require_POST
@vary_on_headers("HX-Request")
def trigger_enabled(request: HtmxHttpRequest, name: str, trigger_id: int) -> HttpResponse:
    """Enable or disable a trigger (a disabled one answers 403 and starts nothing)."""
    agent = agent_for(request, name, CHANGE)
    trigger = _trigger(agent, trigger_id)
    enabled = request.POST.get("enabled") == "1"
    try:
        changed = update_trigger(trigger, actor(request), enabled=enabled)
    except ValidationError as exc:  # settings saved before a rule they now break
        messages.error(request, f"{trigger.name} was not changed: {' '.join(exc.messages)}")
        return _back(request, agent)
    if changed:
        if enabled:
            messages.success(request, f"Enabled the {_kind(trigger)} {trigger.name}.")
        else:
            messages.success(
                request,
                f"Disabled the {_kind(trigger)} {trigger.name}: its URL answers 403 and starts "
                "nothing until it is enabled again.",
            )
    else:
        state = "enabled" if enabled else "disabled"
        messages.info(request, f"The {_kind(trigger)} {trigger.name} was already {state}.")
    return _back(request, agent)


@require_POST
@vary_on_headers("HX-Request")
def trigger_delete(request: HtmxHttpRequest, name: str, trigger_id: int) -> HttpResponse:
    """Delete a trigger: its URL answers 410 Gone from now on; its delivery log is kept."""
    agent = agent_for(request, name, CHANGE)
    trigger = _trigger(agent, trigger_id)
    delete_trigger(trigger, actor(request))
    messages.success(
        request,
        f"Deleted the {_kind(trigger)} {trigger.name}: its URL now answers 410 Gone. Its "
        "deliveries stay in the log.",
    )
    return _back(request, agent)
