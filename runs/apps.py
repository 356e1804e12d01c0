from __future__ import annotations

import sys

from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


class RunsConfig(AppConfig):
    name = "runs"

    def ready(self) -> None:
        # agents cannot import runs (apps depend one way): the runs app hands agents its
        # delete, which stops an agent's runs and removes their logs first.
        from agents.services import FullDelete, provide_full_delete
        from runs.services import delete_agents_with_runs, describe_deletion

        provide_full_delete(FullDelete(describe=describe_deletion, delete=delete_agents_with_runs))

        # Runs waiting for approval are asked again when their agent changes (DESIGN.md §7.1).
        from agents.services import agent_changed

        agent_changed.connect(_agent_changed, dispatch_uid="runs.approvals.agent_changed")

        # The search index's SQLite triggers are made again after a migration that rebuilt
        # their tables (runs.search.restore_triggers).
        post_migrate.connect(_restore_search_triggers, sender=self, dispatch_uid="runs.search")

        # Agents stay out of Cronos (DESIGN.md §4): no Cronos process is dumpable, and
        # Cronos's own files are private; the start-up statement is a system check.
        from runs import checks  # noqa: F401  (registers the check)
        from runs.execution import isolation

        isolation.protect_this_process()
        isolation.make_private(isolation.private_files())
        if "qcluster" in sys.argv[1:2]:
            # The process that runs agents states at start-up how they are kept out of Cronos
            # (isolation.current() logs it); the check above warns on every command.
            isolation.current()


def _agent_changed(sender, agent, actor, changes, **kwargs) -> None:
    from runs import approvals

    approvals.agent_changed(agent, actor, changes)


def _restore_search_triggers(sender, using, **kwargs) -> None:
    from runs import search

    search.restore_triggers(connections[using])
