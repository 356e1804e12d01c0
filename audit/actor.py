"""Who is acting and from where: passed to every service that changes something."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest

from audit.models import AuditEntry


@dataclass(frozen=True)
class Actor:
    user: AbstractBaseUser | None
    source: str
    ip_address: str | None = None

    @property
    def username(self) -> str:
        return self.user.get_username() if self.user is not None else ""

    @classmethod
    def from_request(cls, request: HttpRequest, source: str = AuditEntry.Source.WEB) -> Actor:
        user = request.user if not isinstance(request.user, AnonymousUser) else None
        return cls(user=user, source=source, ip_address=client_ip(request))

    @classmethod
    def cli(cls, user: AbstractBaseUser | None) -> Actor:
        return cls(user=user, source=AuditEntry.Source.CLI)

    @classmethod
    def system(cls) -> Actor:
        return cls(user=None, source=AuditEntry.Source.SYSTEM)

    def has_perm(self, perm: str) -> bool:
        """The system acts with every permission; people with their roles'."""
        if self.source == AuditEntry.Source.SYSTEM and self.user is None:
            return True
        return self.user is not None and self.user.has_perm(perm)


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is trivially forged unless a known proxy sets it,
    # and SECURE_PROXY_SSL_HEADER deployments put the proxy's address here anyway.
    return request.META.get("REMOTE_ADDR") or None
