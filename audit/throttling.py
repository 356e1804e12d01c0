"""Login throttling, audited (DESIGN.md §4 "People").

django-axes does the throttling: it counts failed logins per user name and address
(AXES_LOCKOUT_PARAMETERS), and after AXES_FAILURE_LIMIT of them refuses that pair, without
checking the password, for AXES_COOLOFF_TIME. This module is the thin adapter for what Cronos
adds: the audit entries and the page a refused person sees.

The audit log gets one `login_failed` entry per failed login until the lockout, one
`login.locked` entry for the lockout, and one `login.unlocked` entry when it ends, counting
the attempts refused during it (each of those is not an entry of its own: a guesser at full
speed must not flood the log). A lockout ends when axes removes its record: the first login,
failed login or logout on the site after the cool-off (axes clears every expired record then),
or `cronos_user --unlock`, which names who lifted it. Writing the entry at the removal, whatever
removes it, gives each lockout exactly one end entry, with its final count (nothing can be
refused after the cool-off), and the entry says when the cool-off actually ran out.

The count lives in axes's own record of the lockout (`failures_since_start` beyond the limit:
the number axes itself would keep for the attempts refused during a lockout in its default
mode), so that every process, the web server and `cronos_user` alike, sees one count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from axes.utils import reset
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django.db.models import F, Max, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from audit.actor import Actor, client_ip
from audit.log import record
from audit.models import AuditEntry

LOCKED = "login.locked"
UNLOCKED = "login.unlocked"

# Who is lifting lockouts right now (`cronos_user --unlock`), for the entry the removal writes.
_unlocker: ContextVar[Actor | None] = ContextVar("unlocker", default=None)


def refused_during_lockout(request: HttpRequest) -> bool:
    """Whether this failed login is one axes refused unchecked because its user name and address
    were already locked out. Axes's backend marks such a request before the password is looked
    at; a failure axes counted carries the count instead (and none while axes is off)."""
    return bool(getattr(request, "axes_locked_out", False)) and (
        getattr(request, "axes_failures_since_start", None) is None
    )


def count_refusal(request: HttpRequest, username: str | None) -> None:
    """Count an attempt refused during a lockout on the lockout's record (no entry of its own)."""
    AccessAttempt.objects.filter(username=username, ip_address=_address(request)).update(
        failures_since_start=F("failures_since_start") + 1
    )


def lockout_began(actor: Actor, request: HttpRequest, username: str | None) -> None:
    """Record that the failed login just audited locked its user name and address out."""
    address = _address(request)
    with transaction.atomic():
        attempts = list(
            AccessAttempt.objects.select_for_update()
            .filter(username=username, ip_address=address)
            .order_by("-attempt_time", "-pk")
        )
        if len(attempts) > 1:
            # Axes keeps one record per user agent; the lockout becomes one record (the latest,
            # which expires last) so that its refusals are counted, and it ends, in one place.
            latest, *others = attempts
            AccessAttempt.objects.filter(pk=latest.pk).update(
                failures_since_start=sum(attempt.failures_since_start for attempt in attempts)
            )
            AccessAttempt.objects.filter(pk__in=[attempt.pk for attempt in others]).delete()
        until = locked_until(username, address)
        record(
            actor,
            LOCKED,
            object_name=_name(username),
            message=(
                f"{_name(username)!r} from {address or 'an unknown address'} locked out after "
                f"{settings.AXES_FAILURE_LIMIT} failed logins, until {_when(until)}"
            ),
        )


def lockout_ended(attempt: AccessAttempt) -> None:
    """Record the end of a lockout as axes removes its record; a record of failures that never
    reached the limit is no lockout and ends silently."""
    limit = settings.AXES_FAILURE_LIMIT
    if attempt.failures_since_start < limit:
        return
    refused = attempt.failures_since_start - limit
    name, address = _name(attempt.username), attempt.ip_address or "an unknown address"
    ran_out = attempt.attempt_time + get_cool_off()
    unlocker = _unlocker.get()
    # The system ended it, on the locked address's behalf, unless someone lifted it first.
    actor = Actor(None, AuditEntry.Source.SYSTEM, attempt.ip_address, name="system")
    if ran_out <= timezone.now():
        how = f"its cool-off ran out at {_when(ran_out)}"
    elif unlocker is not None:
        actor, how = unlocker, "lifted with cronos_user --unlock"
    else:
        # `axes_reset` or a database edit: Cronos's own way is `cronos_user --unlock`.
        how = "its record was removed outside Cronos before the cool-off ran out"
    record(
        actor,
        UNLOCKED,
        object_name=name,
        message=(
            f"lockout of {name!r} from {address} ended: {how}; "
            f"{refused} attempt{'s' if refused != 1 else ''} refused during it"
        ),
    )


def unlock(actor: Actor, username: str) -> int:
    """Lift every lockout of `username` (from any address) now, and forget its failed logins;
    returns how many lockouts were in force. Each one ended is an audit entry naming `actor`."""
    now = timezone.now()
    with transaction.atomic(), _lifting(actor):
        active = AccessAttempt.objects.filter(
            username=username,
            failures_since_start__gte=settings.AXES_FAILURE_LIMIT,
            attempt_time__gt=now - get_cool_off(),
        ).count()
        reset(username=username)
    return active


def locked_until(username: str | None, address: str | None) -> datetime | None:
    """When the lockout of this user name and address ends, or None when there is none."""
    latest = AccessAttempt.objects.filter(username=username, ip_address=address).aggregate(
        failures=Sum("failures_since_start"), at=Max("attempt_time")
    )
    if latest["at"] is None or latest["failures"] < settings.AXES_FAILURE_LIMIT:
        return None
    until = latest["at"] + get_cool_off()
    return until if until > timezone.now() else None


def lockout_response(
    request: HttpRequest, original_response: object = None, credentials: object = None
) -> HttpResponse:
    """The login page again, status 429 Too Many Requests, saying until when logins are paused for
    this user name from this address (AXES_LOCKOUT_CALLABLE). The same whatever the password was:
    during a lockout it is not checked. The admin's login page gets it too.

    The arguments after the request are ignored: axes's async middleware passes them shifted."""
    username = request.POST.get("username", "")  # the field of both login forms
    next_page = request.POST.get("next") or request.GET.get("next") or ""
    if not next_page and request.path == reverse("admin:login"):
        next_page = reverse("admin:index")
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "next": next_page,
        "locked": True,
        "locked_until": locked_until(username, _address(request)),
    }
    return render(request, "registration/login.html", context, status=429)


@contextmanager
def _lifting(actor: Actor) -> Iterator[None]:
    token = _unlocker.set(actor)
    try:
        yield
    finally:
        _unlocker.reset(token)


def _address(request: HttpRequest) -> str | None:
    # The address axes keyed its records on (the same function, AXES_CLIENT_IP_CALLABLE).
    return getattr(request, "axes_ip_address", None) or client_ip(request)


def _name(username: str | None) -> str:
    return (username or "")[:150]


def _when(instant: datetime | None) -> str:
    if instant is None:
        return "now"
    return f"{timezone.localtime(instant):%Y-%m-%d %H:%M:%S %Z}"
