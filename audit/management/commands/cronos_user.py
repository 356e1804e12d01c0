"""Add a person or change their roles from the command line."""

from __future__ import annotations

import getpass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from audit import roles
from audit.actor import Actor
from audit.log import record


class Command(BaseCommand):
    help = "Create a user or set their roles: cronos_user NAME --role operator --role approver"

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--role",
            action="append",
            default=[],
            choices=list(roles.ROLES),
            help="A role to hold (repeat for several). Replaces current roles.",
        )
        parser.add_argument(
            "--password", action="store_true", help="Ask for a password (interactive)."
        )
        parser.add_argument("--deactivate", action="store_true", help="Stop the user logging in.")

    def handle(
        self, *args, username: str, role: list[str], password: bool, deactivate: bool, **options
    ):
        User = get_user_model()
        actor = Actor.cli()
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": True}
            )
            before = sorted(user.groups.values_list("name", flat=True))
            if password:
                first = getpass.getpass("Password: ")
                if first != getpass.getpass("Again: "):
                    raise CommandError("The two passwords differ; nothing was changed.")
                user.set_password(first)
            if deactivate:
                user.is_active = False
            user.save()
            if role:
                user.groups.set(Group.objects.filter(name__in=role))
            after = sorted(user.groups.values_list("name", flat=True))
            record(
                actor,
                "user.create" if created else "user.update",
                user,
                changes={"roles": [before, after]} if before != after else {},
                message="password set" if password else "",
            )
        self.stdout.write(
            f"{'Created' if created else 'Updated'} {username}: "
            f"roles {', '.join(after) or 'none'}"
            f"{' (deactivated)' if deactivate else ''}."
        )
