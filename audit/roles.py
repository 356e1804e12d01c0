"""Roles are groups with permissions. A person may hold several roles.

The table is applied by a migration (and again by any later migration that changes it), so a
fresh database always has these groups with exactly these permissions.
"""

from __future__ import annotations

VIEWER = "viewer"
OPERATOR = "operator"
EDITOR = "editor"
APPROVER = "approver"
ADMIN = "admin"

_SEE = ["agents.view_agent", "agents.view_historicalagent", "runs.view_run"]

ROLES: dict[str, list[str]] = {
    VIEWER: _SEE,
    OPERATOR: _SEE + ["agents.run_agent", "agents.cancel_run", "agents.toggle_agent"],
    EDITOR: _SEE + ["agents.add_agent", "agents.change_agent", "agents.delete_agent"],
    APPROVER: _SEE + ["agents.approve_run"],
    ADMIN: ["*"],  # every permission, including people and the audit log
}


def sync_roles(apps) -> None:
    """Create the role groups and set their permissions to the table above."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        if perms == ["*"]:
            group.permissions.set(Permission.objects.all())
            continue
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted.extend(
                Permission.objects.filter(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(wanted)
