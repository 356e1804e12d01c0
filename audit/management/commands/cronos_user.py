"""Add a person or change their roles from the command line."""

from __future__ import annotations

import getpass
import sys

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import transaction

from audit import roles, throttling
from audit.actor import Actor
from audit.commands import CronosCommand
from audit.log import record
from audit.sessions import end_sessions


class Command(CronosCommand):
    help = (
        "Create a user or set their roles: cronos_user NAME --role operator --role approver. "
        "A password is asked on the terminal (--password) or read as one line from standard "
        "input (--password-stdin), and must pass the site's password rules. --deactivate and "
        "--activate stop and allow their logins; --unlock lifts a login lockout."
    )
    # call_command(..., stdin=...) in tests, as Django's createsuperuser allows.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--role",
            action="append",
            default=[],
            choices=list(roles.ROLES),
            help="A role to hold (repeat for several). Replaces current roles.",
        )
        given = parser.add_mutually_exclusive_group()
        given.add_argument(
            "--password",
            action="store_true",
            help="Ask for a password on the terminal (twice).",
        )
        given.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from the first line of standard input (for scripts: "
            "printf '%%s\\n' \"$PASSWORD\" | manage.py cronos_user NAME --password-stdin).",
        )
        active = parser.add_mutually_exclusive_group()
        active.add_argument(
            "--deactivate", action="store_true", help="Stop an existing user logging in."
        )
        active.add_argument(
            "--activate", action="store_true", help="Let a deactivated user log in again."
        )
        parser.add_argument(
            "--unlock",
            action="store_true",
            help="Lift the lockout that too many failed logins put on this user name (from any "
            "address) and forget its failed logins; used alone.",
        )

    def handle(
        self,
        *args,
        username: str,
        role: list[str],
        password: bool,
        password_stdin: bool,
        deactivate: bool,
        activate: bool,
        unlock: bool,
        **options,
    ):
        stdin = options.get("stdin") or sys.stdin
        User = get_user_model()
        actor = Actor.cli()
        if unlock:
            if role or password or password_stdin or deactivate or activate:
                raise CommandError("--unlock is used alone; nothing was changed.")
            self._unlock(actor, username)
            return
        existing = User.objects.filter(username=username).first()
        if existing is None and (deactivate or activate):
            raise CommandError(f"There is no Cronos user named {username!r}.")
        user = existing or User(username=username, is_staff=True)
        if existing is None:
            # The rules the admin's form keeps (the characters of a username, its length).
            user.set_unusable_password()
            user.full_clean(exclude=["password"])
        # Asked before anything is written, and checked against the site's rules
        # (AUTH_PASSWORD_VALIDATORS): a refused password changes nothing.
        new_password = None
        if password:
            new_password = _ask_password(stdin)
        elif password_stdin:
            new_password = _read_password(stdin)
        if new_password == "":
            raise CommandError("The password is empty; nothing was changed.")
        if new_password is not None:
            try:
                password_validation.validate_password(new_password, user)
            except ValidationError as exc:
                raise CommandError(
                    "The password was refused: " + " ".join(exc.messages) + " Nothing was changed."
                ) from exc
        with transaction.atomic():
            created = existing is None
            if not created:
                user = User.objects.select_for_update().get(pk=user.pk)
            before = sorted(user.groups.values_list("name", flat=True)) if not created else []
            was_active = user.is_active
            if new_password is not None:
                user.set_password(new_password)
            if deactivate or activate:
                user.is_active = activate
            user.save()
            if role:
                user.groups.set(Group.objects.filter(name__in=role))
            after = sorted(user.groups.values_list("name", flat=True))
            changes: dict[str, list] = {}
            if before != after:
                changes["roles"] = [before, after]
            if not created and was_active != user.is_active:
                changes["is_active"] = [was_active, user.is_active]
                if not user.is_active:
                    end_sessions(user)  # an old cookie must not work again once reactivated
            what = []
            if "is_active" in changes:
                what.append("activated" if user.is_active else "deactivated")
            if new_password is not None:
                what.append("password set")
            record(
                actor,
                "user.create" if created else "user.update",
                user,
                changes=changes,
                message="; ".join(what),
            )
        notes = []
        if deactivate:
            notes.append("deactivated")
        if activate:
            notes.append("active")
        if new_password is not None:
            notes.append("password set")
        elif created:
            notes.append("no password yet: set one with --password or --password-stdin")
        self.stdout.write(
            f"{'Created' if created else 'Updated'} {username}: "
            f"roles {', '.join(after) or 'none'}"
            f"{' (' + '; '.join(notes) + ')' if notes else ''}."
        )

    def _unlock(self, actor: Actor, username: str) -> None:
        lifted = throttling.unlock(actor, username)
        if lifted:
            self.stdout.write(
                f"Unlocked {username}: {lifted} lockout{'s' if lifted != 1 else ''} lifted."
            )
        else:
            self.stdout.write(f"{username} was not locked out; its failed logins are forgotten.")


def _ask_password(stdin) -> str:
    if not (hasattr(stdin, "isatty") and stdin.isatty()):
        raise CommandError(
            "--password asks on a terminal, and standard input is not one: give the password "
            "on standard input with --password-stdin instead. Nothing was changed."
        )
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Again: ")
    except EOFError:
        raise CommandError("No password was entered; nothing was changed.") from None
    if first != again:
        raise CommandError("The two passwords differ; nothing was changed.")
    return first


def _read_password(stdin) -> str:
    line = stdin.readline()
    if not line:
        raise CommandError("--password-stdin found nothing on standard input; nothing was changed.")
    # Only the line's end is not part of it: spaces are characters of a password.
    return line.rstrip("\r\n")
