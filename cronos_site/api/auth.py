"""Who an API request acts as: the owner of its personal access token (audit.tokens)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest
from ninja.security import HttpBearer

from audit import tokens
from audit.actor import Actor, client_ip
from audit.models import AuditEntry

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class PersonalToken(HttpBearer):
    """`Authorization: Bearer <personal access token>`; the request's `auth` is its owner."""

    openapi_description = (
        "A personal access token (`cronos_…`), made on the site's API tokens page "
        "(/account/tokens/) or with `manage.py cronos_token create`."
    )

    def __call__(self, request: HttpRequest) -> User | None:
        # ninja's own __call__ logs a header with another scheme at DEBUG, token and all: a
        # token sent as "Token cronos_…" must not land in the logs.
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.authenticate(request, raw.strip())

    def authenticate(self, request: HttpRequest, token: str) -> User | None:
        return tokens.authenticate(token)


def api_actor(request: HttpRequest) -> Actor:
    """The person behind an authenticated API request, for the services and the audit log."""
    user = request.auth  # type: ignore[attr-defined]  # set by ninja from PersonalToken
    return Actor(user=user, source=AuditEntry.Source.API, ip_address=client_ip(request))
