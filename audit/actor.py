"""Who is acting and from where: passed to every service that changes something."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError
from django.http import HttpRequest

from audit.models import AuditEntry

if TYPE_CHECKING:
    # The configured user model (settings.AUTH_USER_MODEL), which django-stubs resolves
    # `request.user` and `get_user_model()` to.
    from django.contrib.auth.models import User


@dataclass(frozen=True)
class Actor:
    user: User | None
    source: str
    ip_address: str | None = None
    # Who, when there is no Cronos user: the shell account behind a command, or "system".
    name: str = ""

    @property
    def username(self) -> str:
        return self.user.get_username() if self.user is not None else self.name

    @classmethod
    def from_request(cls, request: HttpRequest, source: str = AuditEntry.Source.WEB) -> Actor:
        user = request.user if not isinstance(request.user, AnonymousUser) else None
        return cls(user=user, source=source, ip_address=client_ip(request))

    @classmethod
    def cli(cls, username: str | None = None) -> Actor:
        """A management command: as the named Cronos user, or as the shell account."""
        if username:
            try:
                user = get_user_model().objects.get(username=username)
            except get_user_model().DoesNotExist as exc:
                raise CommandError(f"There is no Cronos user named {username!r}.") from exc
            return cls(user=user, source=AuditEntry.Source.CLI)
        return cls(user=None, source=AuditEntry.Source.CLI, name=f"{_shell_user()} (shell)")

    @classmethod
    def system(cls) -> Actor:
        return cls(user=None, source=AuditEntry.Source.SYSTEM, name="system")

    def has_perm(self, perm: str) -> bool:
        """People act with their roles' permissions. The system, and a shell account that
        can run manage.py (and so could do anything to the database), act with all of them."""
        if self.user is None:
            return self.source in (AuditEntry.Source.SYSTEM, AuditEntry.Source.CLI)
        return self.user.is_active and self.user.has_perm(perm)

    def require(self, perm: str) -> None:
        """The permission gate every service passes first: raises PermissionDenied, naming
        who and which permission, unless this actor has `perm` ("app_label.codename")."""
        if not self.has_perm(perm):
            raise PermissionDenied(f"{self.username or 'this user'} lacks the permission {perm}.")


def _shell_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is trivially forged unless a known proxy sets it.
    return request.META.get("REMOTE_ADDR") or None
