"""Install a git hook that starts runs of an agent:
`python manage.py cronos_install_hook AGENT --repo PATH --event post-commit|post-merge|post-receive
[--url BASE_URL] [--rate-per-minute N] [--user NAME] [--force | --remove]`
(runs.triggers.githooks)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import CommandError

from agents.models import Agent
from audit.actor import Actor
from audit.commands import CronosCommand
from runs.triggers import githooks


class Command(CronosCommand):
    help = (
        "Write a git hook into a repository that starts a run of the agent on each commit, "
        "merge or push (a git trigger made for it); an agent's own commits do not."
    )

    def add_arguments(self, parser):
        parser.add_argument("agent")
        parser.add_argument(
            "--repo", required=True, help="The repository (a working tree or bare)."
        )
        parser.add_argument(
            "--event",
            required=True,
            choices=githooks.EVENTS,
            help="post-commit and post-merge in a working tree; post-receive where pushes arrive.",
        )
        parser.add_argument(
            "--url",
            help=f"Cronos's address as the hook reaches it (default CRONOS_BASE_URL, "
            f"{settings.CRONOS_BASE_URL}).",
        )
        parser.add_argument(
            "--rate-per-minute",
            type=int,
            metavar="N",
            help=f"Deliveries the git trigger takes a minute, 1 to 6000 (default "
            f"{githooks.RATE_PER_MINUTE}); past it the hook waits as Cronos asks, for at most "
            f"{githooks.SEND_GIVE_UP_SECONDS // 60} minutes in all.",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Replace a hook Cronos did not write, keeping it as <hook>.cronos-backup.",
        )
        parser.add_argument(
            "--remove",
            action="store_true",
            help="Remove the agent's hook instead (and delete its trigger; a backup is put back).",
        )
        parser.add_argument("--user", help="Act as this Cronos user (default: the shell account).")

    def handle(
        self,
        *args,
        agent: str,
        repo: str,
        event: str,
        url: str | None,
        rate_per_minute: int | None,
        force: bool,
        remove: bool,
        user: str | None,
        **options,
    ):
        target = Agent.objects.filter(name=agent).first()
        if target is None:
            raise CommandError(f"There is no agent named {agent!r}.")
        actor = Actor.cli(user)
        if remove:
            if force or url or rate_per_minute is not None:
                raise CommandError("--remove takes none of --force, --url, --rate-per-minute.")
            removed = githooks.remove(target, actor, repo=repo, event=event)
            self.stdout.write(f"Removed {removed.path}.")
            if removed.trigger is not None:
                self.stdout.write(
                    f"Deleted trigger {removed.trigger.name}: its URL now answers 410 Gone."
                )
            if removed.restored is not None:
                self.stdout.write(f"Put back the hook that was there before ({removed.restored}).")
            return
        installed = githooks.install(
            target,
            actor,
            repo=repo,
            event=event,
            base_url=url or settings.CRONOS_BASE_URL,
            force=force,
            rate_per_minute=(
                githooks.RATE_PER_MINUTE if rate_per_minute is None else rate_per_minute
            ),
        )
        for old in installed.retired:
            self.stdout.write(
                f"Replaced the hook of trigger {old.name} (agent {old.agent.name}), now deleted: "
                "its URL answers 410 Gone."
            )
        if installed.backup is not None:
            self.stdout.write(f"Kept the hook that was there as {installed.backup}.")
        # The token is in the hook file only: never printed.
        self.stdout.write(
            f"Wrote {installed.path} (mode 0700: it holds the trigger's token; keep it private)."
        )
        self.stdout.write(
            f"Trigger {installed.trigger.name} of {target.name}: POST {installed.url}"
        )
