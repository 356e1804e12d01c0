"""Ending a person's sessions when their account is deactivated.

Django refuses an inactive account's session on every request, but keeps the session: once the
account is activated again, an old cookie (from a stolen laptop, the reason it was
deactivated) would work again. Deactivating therefore deletes the person's sessions.
"""

from __future__ import annotations

from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session


def end_sessions(user) -> int:
    """Delete every stored session of `user`; returns how many. Reads each live session once
    (Django's database sessions are not indexed by user), which is fine at a site's size."""
    ended = []
    for session in Session.objects.iterator():
        try:
            data = session.get_decoded()
        except Exception:  # a session that cannot be read is nobody's
            continue
        if data.get(SESSION_KEY) == str(user.pk):
            ended.append(session.pk)
    Session.objects.filter(pk__in=ended).delete()
    return len(ended)
