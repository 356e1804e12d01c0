"""Who is acting and from where: passed to every service that changes something."""

from __future__ import annotations

import getpass
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
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
    """The address a request came from, for the audit log and the login throttle (axes calls
    this too: AXES_CLIENT_IP_CALLABLE), so both name the same client.

    The connection's peer (REMOTE_ADDR), unless that peer is one of CRONOS_TRUSTED_PROXIES: then
    the right-most X-Forwarded-For hop that is not a trusted proxy. Anyone can send an
    X-Forwarded-For, so it counts only on a request a trusted proxy handed over, and only the
    hops trusted proxies appended (right to left) are believed. django-ipware checks the header's
    own hops against its trusted list, never the peer, so a client that reaches Cronos directly
    could still choose its address: hence these few lines instead."""
    peer = request.META.get("REMOTE_ADDR") or None
    proxies = [
        ipaddress.ip_network(proxy, strict=False) for proxy in settings.CRONOS_TRUSTED_PROXIES
    ]
    if peer is None or not _among(peer, proxies):
        return peer
    client = peer
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        address = _address(hop.strip())
        if address is None:
            # Not an address (no proxy writes that): the last trusted hop is the best known origin.
            return client
        client = address
        if not _among(address, proxies):
            return client  # the first hop that no trusted proxy appended: the client
    return client


def _address(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _among(text: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    address = _address(text)
    return address is not None and any(
        ipaddress.ip_address(address) in network for network in networks
    )
