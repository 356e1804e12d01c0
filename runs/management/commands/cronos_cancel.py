"""Cancel a run: `python manage.py cronos_cancel RUN_ID [--user NAME]`."""

from __future__ import annotations

from django.core.management.base import CommandError

from audit.actor import Actor
from audit.commands import CronosCommand
from runs.models import Run
from runs.services import cancel_run, cancel_words


class Command(CronosCommand):
    help = "Cancel a waiting run at once, or ask a running one to stop."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int)
        parser.add_argument("--user", help="Act as this Cronos user (default: the shell account).")

    def handle(self, *args, run_id: int, user: str | None, **options):
        run = Run.objects.select_related("agent").filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"There is no run #{run_id}.")
        was = run.state
        if not cancel_run(run, Actor.cli(user)):
            raise CommandError(f"Run #{run_id} has already ended ({run.state}).")
        run.refresh_from_db()
        if run.is_final:
            self.stdout.write(f"Run #{run_id} {cancel_words(was, run)}.")
        else:
            self.stdout.write(f"Run #{run_id} is running: asked it to stop.")
