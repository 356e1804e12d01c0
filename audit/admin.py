"""The audit log in the admin: readable by those allowed, never editable or deletable."""

from __future__ import annotations

import json

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.utils.html import format_html

from audit.actor import Actor
from audit.log import record
from audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "actor_username", "source", "ip_address", "action", "object_name"]
    list_filter = ["source", "action", "at"]
    search_fields = ["actor_username", "object_name", "action", "message"]
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEntry._meta.fields if f.name != "changes"] + [
        "changes_readable"
    ]
    exclude = ["changes"]
    actions = None

    @admin.display(description="Changes")
    def changes_readable(self, entry: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(entry.changes, indent=2, ensure_ascii=False))

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AuditedUserAdmin(UserAdmin):
    """People and their roles: every account change is audited (never the password itself)."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        changed = [name for name in form.changed_data if "password" not in name]
        message = "password changed" if any("password" in n for n in form.changed_data) else ""
        record(
            Actor.from_request(request, AuditEntry.Source.ADMIN),
            "user.update" if change else "user.create",
            obj,
            changes={name: [None, _plain(form.cleaned_data.get(name))] for name in changed},
            message=message,
        )

    def save_related(self, request, form, formsets, change):
        before = set(form.instance.groups.values_list("name", flat=True)) if change else set()
        super().save_related(request, form, formsets, change)
        after = set(form.instance.groups.values_list("name", flat=True))
        if before != after:
            record(
                Actor.from_request(request, AuditEntry.Source.ADMIN),
                "user.roles",
                form.instance,
                changes={"roles": [sorted(before), sorted(after)]},
            )

    def delete_model(self, request, obj):
        record(Actor.from_request(request, AuditEntry.Source.ADMIN), "user.delete", obj)
        super().delete_model(request, obj)


def _plain(value):
    if hasattr(value, "all"):
        return sorted(str(item) for item in value.all())
    if isinstance(value, (str, int, bool, type(None))):
        return value
    return str(value)


admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
