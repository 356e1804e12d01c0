"""Approve or reject a run waiting for approval:
`python manage.py cronos_approve RUN_ID [--reject] [--note TEXT] [--user NAME]`.

As `--user NAME` (a Cronos user with the approver role or admin, who did not cause the run:
four eyes, DESIGN.md §7.1); a shell account without `--user` cannot approve. Audited like the
page. Exit status 2 when refused or the run is not waiting; the message says why.
"""

from __future__ import annotations

from django.core.management.base import CommandError

from agents.legacy import printable
from audit.actor import Actor
from audit.commands import CronosCommand
from runs import approvals
from runs.models import Run
from runs.services import approve_run, reject_run


class Command(CronosCommand):
    help = (
        "Approve (or with --reject, reject) a run waiting for approval, as --user NAME: the "
        "person who caused the run cannot approve it."
    )

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int)
        parser.add_argument("--reject", action="store_true", help="Reject: the run is skipped.")
        parser.add_argument("--note", default="", help="Why (kept with the decision, audited).")
        parser.add_argument("--user", help="Decide as this Cronos user (required to approve).")

    def handle(self, *args, run_id: int, reject: bool, note: str, user: str | None, **options):
        run = Run.objects.select_related("agent").filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"There is no run #{run_id}.")
        if len(note) > approvals.NOTE_LIMIT:
            raise CommandError(f"The note is too long: at most {approvals.NOTE_LIMIT} characters.")
        decide = reject_run if reject else approve_run
        try:
            run = decide(run, Actor.cli(user), note)
        except approvals.ApprovalError as exc:
            raise CommandError(str(exc)) from exc
        verb = "Rejected" if reject else "Approved"
        self.stdout.write(
            f"{verb} run #{run.pk} of {run.agent.name}: it is {run.get_state_display().lower()}"
            + (f" ({printable(run.reason)})" if run.reason and run.is_final else "")
            + "."
        )
