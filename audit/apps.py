from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit and people"

    def ready(self) -> None:
        from audit import signals  # noqa: F401  (login / logout / failed login entries)
