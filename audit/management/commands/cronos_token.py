"""Personal access tokens for the JSON API from the command line (audit.tokens):
`cronos_token create --user NAME --name N` prints a new token once (alone on standard output,
for `TOKEN=$(...)`); `cronos_token list --user NAME` lists that person's tokens (never the
tokens themselves: only their first characters); `cronos_token revoke --user NAME --name N`
revokes the active token of that name. Made and revoked as the shell account, audited.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from audit import tokens
from audit.actor import Actor
from audit.commands import CronosCommand


class Command(CronosCommand):
    help = (
        "Make, list or revoke a person's personal access tokens for the JSON API: "
        "cronos_token create --user NAME --name N (the token is printed once), "
        "cronos_token list --user NAME, cronos_token revoke --user NAME --name N."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["create", "list", "revoke"])
        parser.add_argument("--user", required=True, help="Whose tokens (a Cronos user name).")
        parser.add_argument("--name", help="The token's name (create, revoke).")

    def handle(self, *args: Any, action: str, user: str, name: str | None, **options: Any):
        person = get_user_model().objects.filter(username=user).first()
        if person is None:
            raise CommandError(f"There is no Cronos user named {user!r}.")
        actor = Actor.cli()
        if action == "list":
            self._list(person)
            return
        if not name:
            raise CommandError(f"{action} needs --name: the token's name.")
        if action == "create":
            token, secret = tokens.create_token(person, name, actor)
            self.stderr.write(
                f"Made the token {token.name!r} for {user}; it is shown only this once. "
                "Use it as: Authorization: Bearer <token>"
            )
            self.stdout.write(secret)
            return
        active = person.api_tokens.filter(name=name, revoked_at__isnull=True)
        revoked = [token for token in active if tokens.revoke_token(token, actor)]
        if not revoked:
            raise CommandError(f"{user} has no active token named {name!r}.")
        self.stdout.write(f"Revoked {user}'s token {name!r} ({revoked[0].prefix}…).")

    def _list(self, person) -> None:
        found = tokens.tokens_of(person)
        if not found:
            self.stdout.write(f"{person.get_username()} has no tokens.")
        for token in found:
            used = (
                f"last used {timezone.localtime(token.last_used_at):%Y-%m-%d %H:%M}"
                if token.last_used_at
                else "never used"
            )
            state = (
                f"revoked {timezone.localtime(token.revoked_at):%Y-%m-%d %H:%M}"
                if token.revoked_at
                else "active"
            )
            self.stdout.write(
                f"{token.prefix}…  {token.name:<24} made "
                f"{timezone.localtime(token.created_at):%Y-%m-%d %H:%M}  {used}  {state}"
            )
