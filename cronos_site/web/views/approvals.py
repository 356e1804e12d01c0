"""The approvals page (`/approvals/`) and the approve/reject actions (DESIGN.md §7.1).

The page lists the runs waiting for approval, oldest first, each with who caused it and how,
what will run (the agent version, and its difference from the version of the agent's last
approved run, prompt included), the timers, and why it was asked again. It refreshes itself
every few seconds and at once when a notification arrives (static/runs.js). Approve and reject
post to one view each, through runs.approvals, which applies four eyes and audits.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from agents.versions import FieldChange, diff_versions, version_number
from cronos_site.web.access import (
    HtmxHttpRequest,
    actor,
    require_perm,
    run_for,
    safe_next,
    wants_fragment,
)
from cronos_site.web.params import id_param
from runs import approvals
from runs.models import Approval, Review, Run
from runs.services import approve_run, reject_run

APPROVE = approvals.PERMISSION
SHOWN = 100  # requests listed at most (oldest first); the rest wait their turn on the page


@dataclass
class Request:
    """One waiting run as the page shows it."""

    run: Run
    approval: Approval
    version: int | None
    compared_with: Run | None  # the agent's last approved run, whose version is diffed
    changes: list[FieldChange]
    refusal: str  # why this person may not approve it ("" if they may)


@dataclass
class ReviewRequest:
    """One run whose changes wait for review, as the page shows it."""

    run: Run
    review: Review
    refusal: str


def waiting_reviews(request: HtmxHttpRequest) -> list[ReviewRequest]:
    """The runs whose changes wait for review, oldest first (the diff is on each run's page)."""
    me = actor(request)
    runs = (
        Run.objects.filter(state=Run.State.AWAITING_REVIEW)
        .select_related("agent", "review")
        .order_by("review__requested_at", "pk")[:SHOWN]
    )
    return [
        ReviewRequest(run=run, review=run.review, refusal=approvals.may_approve(run, me))
        for run in runs
        if hasattr(run, "review")
    ]


def waiting_requests(request: HtmxHttpRequest) -> list[Request]:
    """The runs waiting for approval, oldest request first, with what each person needs to
    decide: the diff against the last approved run's version and whether they may approve."""
    me = actor(request)
    runs = (
        Run.objects.filter(state=Run.State.AWAITING_APPROVAL)
        .select_related("agent", "approval", "approval__agent_version")
        .order_by("approval__requested_at", "pk")[:SHOWN]
    )
    result = []
    for run in runs:
        approval = run.approval
        asked = approval.agent_version
        last = (
            Run.objects.filter(
                agent_id=run.agent_id,
                approval__decision=Approval.Decision.APPROVED,
                agent_version__isnull=False,
            )
            .exclude(pk=run.pk)
            .select_related("agent_version")
            .order_by("-approval__decided_at", "-pk")
            .first()
        )
        changes: list[FieldChange] = []
        if asked is not None and last is not None and last.agent_version is not None:
            changes = diff_versions(last.agent_version, asked)
        result.append(
            Request(
                run=run,
                approval=approval,
                version=version_number(asked) if asked is not None else None,
                compared_with=last,
                changes=changes,
                refusal=approvals.may_approve(run, me),
            )
        )
    return result


@require_GET
@vary_on_headers("HX-Request")
def approval_list(request: HtmxHttpRequest) -> HttpResponse:
    """What waits for approval; the list alone for HTMX (its refresh)."""
    require_perm(request, APPROVE)
    if wants_fragment(request):
        return _list(request)
    context = {
        "requests": waiting_requests(request),
        "reviews": waiting_reviews(request),
        "section": "approvals",
        "shown": SHOWN,
    }
    return render(request, "runs/approvals.html", context)


def _list(request: HtmxHttpRequest) -> HttpResponse:
    context = {
        "requests": waiting_requests(request),
        "reviews": waiting_reviews(request),
        "shown": SHOWN,
    }
    return render(request, "runs/approvals_list.html", context)


@require_POST
def approve(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    return _decide(request, run_id, approve_run, "Approved")


@require_POST
def reject(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    return _decide(request, run_id, reject_run, "Rejected")


def _decide(request: HtmxHttpRequest, run_id: int, decide, done: str) -> HttpResponse:
    run = run_for(request, run_id, APPROVE)
    note = request.POST.get("note", "")
    seen = id_param(request.POST.get("asked", ""))
    try:
        run = decide(run, actor(request), note, seen_asked=seen)
    except approvals.FourEyes as exc:
        messages.error(request, _sentence(str(exc)))
    except PermissionDenied:
        raise
    except approvals.ApprovalError as exc:
        messages.warning(request, _sentence(str(exc)))
    else:
        messages.success(
            request,
            f"{done} run #{run.pk} of {run.agent.name}: it is {run.get_state_display().lower()}.",
        )
    if wants_fragment(request):
        return _list(request)
    return HttpResponseRedirect(safe_next(request, reverse("runs:approvals")))


def _sentence(text: str) -> str:
    # Not capitalised: a message may start with a user name ("opap caused run #3...").
    return text + ("" if text.endswith(".") else ".")
