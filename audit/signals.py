"""Logins, logouts and failed logins: Django's auth signals are the only place they happen.

Failed logins are throttled by django-axes; audit/throttling.py says which entries a lockout
makes (one per failed login until it, one for it, one when it ends with the refusals counted).
"""

from __future__ import annotations

# Imported before the receivers below are connected, so that axes's receivers of the same
# signals run first whatever the order of INSTALLED_APPS: by the time a failed login is audited
# here, axes has counted it and marked whether it caused or met a lockout.
import axes.signals  # noqa: F401  isort: skip
from axes.models import AccessAttempt
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_delete
from django.dispatch import receiver

from audit import throttling
from audit.actor import Actor, client_ip
from audit.log import record
from audit.models import AuditEntry


def _source(request) -> str:
    if request is not None and request.path.startswith("/admin/"):
        return AuditEntry.Source.ADMIN
    return AuditEntry.Source.WEB


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    record(Actor(user, _source(request), client_ip(request) if request else None), "login")


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        record(Actor(user, _source(request), client_ip(request) if request else None), "logout")


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    username = credentials.get("username")
    if request is not None and throttling.refused_during_lockout(request):
        # Not an entry each: counted into the one written when the lockout ends.
        throttling.count_refusal(request, username)
        return
    actor = Actor(None, _source(request), client_ip(request) if request else None)
    # Only the username tried: the password never reaches the log.
    name = str(username or "")[:150]
    record(actor, "login_failed", object_name=name, message=f"failed login for {name!r}")
    if request is not None and getattr(request, "axes_locked_out", False):
        throttling.lockout_began(actor, request, username)


@receiver(post_delete, sender=AccessAttempt)
def on_throttle_record_removed(sender, instance, **kwargs):
    # Axes removes a lockout's record when its cool-off has run out, or on an unlock.
    throttling.lockout_ended(instance)
