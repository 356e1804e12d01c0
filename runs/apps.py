from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"

    def ready(self) -> None:
        # agents cannot import runs (apps depend one way): the runs app hands agents its
        # delete, which stops an agent's runs and removes their logs first.
        from agents.services import FullDelete, provide_full_delete
        from runs.services import delete_agents_with_runs, describe_deletion

        provide_full_delete(FullDelete(describe=describe_deletion, delete=delete_agents_with_runs))
