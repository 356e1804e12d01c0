"""Re-encrypt every secret (current agents and all their versions) with the newest key."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.db import transaction

from agents import secrets
from agents.models import Agent
from audit.actor import Actor
from audit.commands import CronosCommand
from audit.log import record


class Command(CronosCommand):
    help = (
        "Rotate the keys of agent secrets. To rotate: put a new key first in CRONOS_SECRET_KEYS "
        "(keep the old ones after it), run this command, then remove the old keys."
    )

    def add_arguments(self, parser):
        parser.add_argument("--new-key", action="store_true", help="Print a new key and exit.")
        parser.add_argument(
            "--check", action="store_true", help="Only check every secret decrypts; change nothing."
        )

    def handle(self, *args, new_key: bool = False, check: bool = False, **options):
        if new_key:
            self.stdout.write(secrets.new_key())
            return
        rows = [*Agent.objects.all(), *Agent.history.all()]
        try:
            if check:
                total = sum(len(secrets.secret_values(row.variables)) for row in rows)
                self.stdout.write(f"All {total} secret value(s) decrypt with the current keys.")
                return
            total = 0
            with transaction.atomic():
                for row in rows:
                    variables, count = secrets.rotate_variables(row.variables)
                    if count:
                        # A queryset update: re-encryption is not a configuration change,
                        # so it must not create a version of its own.
                        type(row)._default_manager.filter(pk=row.pk).update(variables=variables)
                        total += count
                record(Actor.cli(), "secrets.rotate", message=f"re-encrypted {total} value(s)")
        except secrets.SecretKeyError as exc:
            raise CommandError(f"Nothing was changed: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {total} secret value(s)."))
