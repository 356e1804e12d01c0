"""First-run setup that `make run` calls: an admin user and the demo agents. Safe to repeat."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import transaction

from audit import roles
from audit.actor import Actor
from audit.commands import CronosCommand
from audit.log import record
from cronos_site.demo import create_demo_agents, move_old_demo_repository


class Command(CronosCommand):
    help = "Create the first admin user (once) and the demo agents (unless --no-demo)."

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="Do not create demo agents.")

    def handle(self, *args, no_demo: bool = False, **options):
        actor = Actor.cli()
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            username = _env("CRONOS_ADMIN_USERNAME") or "admin"
            email = _env("CRONOS_ADMIN_EMAIL") or ""
            password = _env("CRONOS_ADMIN_PASSWORD")
            generated = not password
            password = password or secrets.token_urlsafe(12)
            _check_admin(User(username=username, email=email))
            if not generated:
                _check_password(password, User(username=username))
            with transaction.atomic():
                user = User.objects.create_superuser(username, email, password)
                user.groups.add(Group.objects.get(name=roles.ADMIN))
                record(actor, "user.create", user, message="first admin user")
            self.stdout.write(self.style.SUCCESS(f"Created the admin user {username!r}."))
            if generated:
                # Shown once and stored nowhere else: write it down now.
                self.stdout.write(self.style.WARNING(f"  password: {password}  (shown once)"))
        for name in move_old_demo_repository(actor):
            self.stdout.write(f"Moved the demo repository out of the data folder for {name}.")
        if not no_demo:
            for name in create_demo_agents(actor):
                self.stdout.write(f"Created the demo agent {name}.")


def _env(name: str) -> str | None:
    """A first-run input from the environment; empty means unset, as for every setting."""
    return (os.environ.get(name) or "").strip() or None


def _check_admin(user) -> None:
    """CRONOS_ADMIN_USERNAME and CRONOS_ADMIN_EMAIL keep the rules the admin's form keeps."""
    try:
        user.set_unusable_password()
        user.full_clean(exclude=["password"])
    except ValidationError as exc:
        problems = "; ".join(
            f"CRONOS_ADMIN_{field.upper()} {value!r}: {' '.join(messages)}"
            for field, messages in exc.message_dict.items()
            for value in [getattr(user, field, "")]
        )
        raise CommandError(f"{problems} Nothing was created.") from exc


def _check_password(password: str, user) -> None:
    """CRONOS_ADMIN_PASSWORD passes the site's password rules (AUTH_PASSWORD_VALIDATORS)."""
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise CommandError(
            "CRONOS_ADMIN_PASSWORD was refused: " + " ".join(exc.messages) + " Nothing was "
            "created; set a stronger one, or unset it to have a password generated."
        ) from exc
