from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit and people"
    # Two configs in this module: this one is the audit app's.
    default = True

    def ready(self) -> None:
        from audit import signals  # noqa: F401  (login / logout / failed login entries)


class CronosAdminConfig(admin_apps.AdminConfig):
    """Django's admin app, whose default site audits a person's own password change
    (audit/admin_site.py). Named in INSTALLED_APPS instead of "django.contrib.admin"."""

    default = False
    default_site = "audit.admin_site.CronosAdminSite"
