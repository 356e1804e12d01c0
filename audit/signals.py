"""Logins, logouts and failed logins: Django's auth signals are the only place they happen."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

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
    # Only the username tried: the password never reaches the log.
    username = str(credentials.get("username", ""))[:150]
    record(
        Actor(None, _source(request), client_ip(request) if request else None),
        "login_failed",
        object_name=username,
        message=f"failed login for {username!r}",
    )
