"""The audit log in the admin (readable by those allowed, never editable or deletable), and the
admin's pages for people and roles, audited."""

from __future__ import annotations

import json
from datetime import datetime

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db import router, transaction
from django.utils.html import format_html
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from audit.actor import Actor
from audit.admin_site import stored_password
from audit.log import record
from audit.models import AuditEntry
from audit.sessions import end_sessions


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


# --- People, roles and permissions ----------------------------------------------------------
#
# Every admin path that changes a person or a permission writes its entry in the admin's own
# transaction (the add, change and delete views are atomic; the bulk delete and the password
# page are made so here), naming who, from where and [before, after]; a refused form writes
# nothing. Paths: a user added, changed (is_active, is_staff, is_superuser and the other
# fields), their roles (groups) or direct permissions changed, their password changed or
# password login disabled (UserAdmin's password page; a person's own password page is
# audit/admin_site.py), deleted one at a time or with the bulk action; a role group added,
# renamed, its permissions changed, deleted one at a time or in bulk. Never the password itself.


class AuditedUserAdmin(UserAdmin):
    """People and their roles: every account change is audited (never the password itself)."""

    def save_related(self, request, form, formsets, change):
        """Save the roles and permissions, then audit the whole save: fields, roles, rights."""
        # After save_model (the user's own row) and around the many-to-many fields, so that
        # one place sees the whole save; `before` is read while the roles are still the old.
        user = form.instance
        before = _access(user) if change else {"roles": [], "permissions": []}
        super().save_related(request, form, formsets, change)
        actor = _admin(request)
        fields = {}
        for name in form.changed_data:
            if name in ("groups", "user_permissions") or "password" in name:
                continue  # the roles and permissions below; never a password
            old = _plain(form.initial.get(name)) if change else None
            new = _plain(form.cleaned_data[name])
            if old != new:
                fields[name] = [old, new]
        if not change:
            usable = user.has_usable_password()
            message = "password set" if usable else "password-based login disabled"
            record(actor, "user.create", user, changes=fields, message=message)
        elif fields:
            record(actor, "user.update", user, changes=fields, message=_flags(fields))
        if change and fields.get("is_active") == [True, False]:
            end_sessions(user)  # an old cookie must not work again once reactivated
        after = _access(user)
        for what, action in (("roles", "user.roles"), ("permissions", "user.permissions")):
            if before[what] != after[what]:
                record(actor, action, user, changes={what: [before[what], after[what]]})

    def user_change_password(self, request, id, form_url=""):
        """Django's password page for a user; a password that changed is audited."""
        if request.method != "POST":
            return super().user_change_password(request, id, form_url)
        with transaction.atomic(using=router.db_for_write(self.model)):
            user = self.get_object(request, unquote(id))
            before = stored_password(user) if user is not None else None
            response = super().user_change_password(request, id, form_url)
            if user is not None and stored_password(user) != before:
                user.refresh_from_db(fields=["password"])
                record(
                    _admin(request),
                    "user.password",
                    user,
                    message="password changed"
                    if user.has_usable_password()
                    else "password-based login disabled",
                )
        return response

    def delete_model(self, request, obj):
        """Delete one user (the delete view's transaction), audited with what they held."""
        record(_admin(request), "user.delete", obj, changes=_held(obj))
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        """The bulk "delete selected" action: one entry per user, in the delete's transaction."""
        with transaction.atomic(using=router.db_for_write(self.model)):
            actor = _admin(request)
            for user in queryset:
                record(actor, "user.delete", user, changes=_held(user), message="bulk delete")
            super().delete_queryset(request, queryset)


class AuditedGroupAdmin(GroupAdmin):
    """Roles: a group added, renamed, its permissions changed or deleted is audited."""

    def save_related(self, request, form, formsets, change):
        """Save the permissions, then audit the group's creation, rename or new rights."""
        group = form.instance
        before = _permissions(group.permissions) if change else []
        super().save_related(request, form, formsets, change)
        actor = _admin(request)
        after = _permissions(group.permissions)
        if not change:
            record(actor, "group.create", group, changes={"permissions": [[], after]})
            return
        if "name" in form.changed_data:
            old = form.initial.get("name")
            record(actor, "group.update", group, changes={"name": [old, group.name]})
        if before != after:
            record(actor, "group.permissions", group, changes={"permissions": [before, after]})

    def delete_model(self, request, obj):
        """Delete one role (the delete view's transaction), audited with its rights and members."""
        record(_admin(request), "group.delete", obj, changes=_group_held(obj))
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        """The bulk "delete selected" action: one entry per group, in the delete's transaction."""
        with transaction.atomic(using=router.db_for_write(self.model)):
            actor = _admin(request)
            for group in queryset:
                record(
                    actor, "group.delete", group, changes=_group_held(group), message="bulk delete"
                )
            super().delete_queryset(request, queryset)


def _admin(request) -> Actor:
    return Actor.from_request(request, AuditEntry.Source.ADMIN)


def _permissions(related) -> list[str]:
    """Permissions as "app_label.codename", sorted: what Actor.require names."""
    return sorted(
        f"{app_label}.{codename}"
        for app_label, codename in related.values_list("content_type__app_label", "codename")
    )


def _access(user: User) -> dict[str, list[str]]:
    return {
        "roles": sorted(user.groups.values_list("name", flat=True)),
        "permissions": _permissions(user.user_permissions),
    }


def _held(user: User) -> dict[str, list]:
    """What a deleted user held, as [before, after] changes."""
    held: dict[str, list] = {name: [value, []] for name, value in _access(user).items() if value}
    if user.is_superuser:
        held["is_superuser"] = [True, None]
    return held


def _group_held(group: Group) -> dict[str, list]:
    """What a deleted role gave, and to whom, as [before, after] changes."""
    return {
        "permissions": [_permissions(group.permissions), []],
        "members": [sorted(group.user_set.values_list("username", flat=True)), []],
    }


FLAG_WORDS = {
    "is_active": ("deactivated", "activated"),
    "is_staff": ("admin access removed", "admin access given"),
    "is_superuser": ("superuser status removed", "made superuser"),
}


def _flags(fields: dict[str, list]) -> str:
    return "; ".join(
        words[bool(fields[name][1])] for name, words in FLAG_WORDS.items() if name in fields
    )


def _plain(value):
    if isinstance(value, datetime):
        # To the second, as the admin's form shows and posts a time: the microseconds it drops
        # from a time set in code (date_joined) are no person's change.
        return value.isoformat(timespec="seconds")
    if hasattr(value, "all"):
        return sorted(str(item) for item in value.all())
    if isinstance(value, list | tuple):
        return sorted(str(item) for item in value)
    if isinstance(value, (str, int, bool, type(None))):
        return value
    return str(value)


admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, AuditedGroupAdmin)


# --- The task engine's (django-q) admin ------------------------------------------------------
#
# A django-q Schedule names any importable function for the workers to call, with any
# arguments: its admin is code execution for whoever may add one, and Cronos does not use
# django-q schedules (its scheduler fires agents). It is removed. The task lists stay, read-only
# (useful when the engine misbehaves): without their "resubmit" action (it calls a task's
# function again), and without delete or edit (a queued task deleted is a handed-over run lost,
# unaudited).


class _ReadOnly:
    actions = None

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class SuccessAdmin(_ReadOnly, q_admin.TaskAdmin):
    pass


class FailureAdmin(_ReadOnly, q_admin.FailAdmin):
    pass


class QueuedTaskAdmin(_ReadOnly, q_admin.QueueAdmin):
    pass


admin.site.unregister(Schedule)
for _model, _read_only in (
    (Success, SuccessAdmin),
    (Failure, FailureAdmin),
    (OrmQ, QueuedTaskAdmin),
):
    if admin.site.is_registered(_model):  # django-q lists the ORM broker's queue only when used
        admin.site.unregister(_model)
        admin.site.register(_model, _read_only)
