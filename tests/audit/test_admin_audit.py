"""Every admin path that changes a person, a role or a permission leaves its audit entry, naming
who, from where and [before, after]; django-q's schedules are not in the admin at all."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.forms import SplitDateTimeWidget
from django.urls import reverse
from django_q.models import Success

from audit.models import AuditEntry

pytestmark = pytest.mark.django_db

ADDRESS = "203.0.113.7"


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    client.defaults["REMOTE_ADDR"] = ADDRESS
    return client


def the_entry(action: str) -> AuditEntry:
    [entry] = AuditEntry.objects.filter(action=action)
    return entry


def by_the_admin(entry: AuditEntry, admin_user: User) -> bool:
    return (entry.actor, entry.actor_username, entry.source, entry.ip_address) == (
        admin_user,
        "ada",
        AuditEntry.Source.ADMIN,
        ADDRESS,
    )


def form_data(client, url: str, **changed) -> dict:
    """What the admin's change form at `url` posts back as it stands, with `changed` applied."""
    form = client.get(url).context["adminform"].form
    data: dict = {}
    for name, field in form.fields.items():
        if field.disabled:
            continue
        value = changed.pop(name) if name in changed else form[name].value()
        if isinstance(field.widget, SplitDateTimeWidget):
            if isinstance(value, datetime):
                data[f"{name}_0"], data[f"{name}_1"] = f"{value:%Y-%m-%d}", f"{value:%H:%M:%S}"
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, list | tuple):
            data[name] = [str(getattr(item, "pk", item)) for item in value]
        elif value is not None:
            data[name] = value
    assert not changed, f"not fields of the form: {changed}"
    return data


def permission(label: str) -> Permission:
    app_label, codename = label.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


# --- Users ----------------------------------------------------------------------------------


def test_a_user_added_in_the_admin_is_audited_without_the_password(admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "nina",
            "usable_password": "true",
            "password1": "a long and fine phrase",
            "password2": "a long and fine phrase",
        },
    )
    assert response.status_code == 302
    entry = the_entry("user.create")
    assert by_the_admin(entry, admin_user)
    assert (entry.object_name, entry.message) == ("nina", "password set")
    assert entry.changes == {"username": [None, "nina"]}
    assert "a long and fine phrase" not in str(entry.__dict__)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("is_active", False, "deactivated"),
        ("is_staff", False, "admin access removed"),
        ("is_superuser", True, "made superuser"),
    ],
)
def test_a_users_flags_changed_in_the_admin_are_audited_before_and_after(
    admin_client, admin_user, operator, field, value, message
):
    url = reverse("admin:auth_user_change", args=[operator.pk])
    response = admin_client.post(url, form_data(admin_client, url, **{field: value}))
    assert response.status_code == 302
    entry = the_entry("user.update")
    assert by_the_admin(entry, admin_user)
    assert (entry.object_name, entry.changes, entry.message) == (
        "otto",
        {field: [not value, value]},
        message,
    )


def test_a_users_roles_and_permissions_changed_in_the_admin_are_audited(
    admin_client, admin_user, operator
):
    url = reverse("admin:auth_user_change", args=[operator.pk])
    data = form_data(
        admin_client,
        url,
        groups=[Group.objects.get(name="approver")],
        user_permissions=[permission("agents.change_agent")],
    )
    assert admin_client.post(url, data).status_code == 302
    roles, permissions = the_entry("user.roles"), the_entry("user.permissions")
    assert by_the_admin(roles, admin_user) and by_the_admin(permissions, admin_user)
    assert roles.changes == {"roles": [["operator"], ["approver"]]}
    assert permissions.changes == {"permissions": [[], ["agents.change_agent"]]}
    assert not AuditEntry.objects.filter(action="user.update").exists()


def test_a_form_the_admin_refuses_writes_no_entry(admin_client, operator):
    url = reverse("admin:auth_user_change", args=[operator.pk])
    response = admin_client.post(url, form_data(admin_client, url, username="not a name!"))
    assert response.status_code == 200
    assert not AuditEntry.objects.filter(action__startswith="user.").exists()


def test_a_password_set_in_the_admin_is_audited(admin_client, admin_user, operator):
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[operator.pk]),
        {"password1": "another fine phrase", "password2": "another fine phrase"},
    )
    assert response.status_code == 302
    entry = the_entry("user.password")
    assert by_the_admin(entry, admin_user)
    assert (entry.object_name, entry.message) == ("otto", "password changed")
    assert "another fine phrase" not in str(entry.__dict__)


def test_password_login_disabled_in_the_admin_is_audited(admin_client, admin_user, operator):
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[operator.pk]),
        {"usable_password": "false", "unset-password": "1"},
    )
    assert response.status_code == 302
    operator.refresh_from_db()
    assert not operator.has_usable_password()
    entry = the_entry("user.password")
    assert by_the_admin(entry, admin_user)
    assert entry.message == "password-based login disabled"


def test_a_password_the_admin_refuses_writes_no_entry(admin_client, operator):
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[operator.pk]),
        {"password1": "another fine phrase", "password2": "a different one"},
    )
    assert response.status_code == 200
    assert not AuditEntry.objects.filter(action="user.password").exists()


def test_a_persons_own_password_change_is_audited(admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:password_change"),
        {
            "old_password": "correct horse battery",
            "new_password1": "my new fine phrase",
            "new_password2": "my new fine phrase",
        },
    )
    assert response.status_code == 302
    entry = the_entry("user.password")
    assert by_the_admin(entry, admin_user)
    assert (entry.object_name, entry.message) == ("ada", "changed their own password")


def test_a_wrong_old_password_writes_no_entry(admin_client):
    response = admin_client.post(
        reverse("admin:password_change"),
        {
            "old_password": "a wrong guess",
            "new_password1": "my new fine phrase",
            "new_password2": "my new fine phrase",
        },
    )
    assert response.status_code == 200
    assert not AuditEntry.objects.filter(action="user.password").exists()


def test_a_user_deleted_in_the_admin_is_audited_with_what_they_held(
    admin_client, admin_user, operator
):
    response = admin_client.post(
        reverse("admin:auth_user_delete", args=[operator.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    entry = the_entry("user.delete")
    assert by_the_admin(entry, admin_user)
    assert (entry.object_name, entry.changes) == ("otto", {"roles": [["operator"], []]})


def test_users_deleted_with_the_bulk_action_are_each_audited(
    admin_client, admin_user, operator, viewer
):
    response = admin_client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "delete_selected", "_selected_action": [operator.pk, viewer.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not User.objects.filter(pk__in=[operator.pk, viewer.pk]).exists()
    entries = AuditEntry.objects.filter(action="user.delete").order_by("object_name")
    assert [(e.object_name, e.changes) for e in entries] == [
        ("otto", {"roles": [["operator"], []]}),
        ("vera", {"roles": [["viewer"], []]}),
    ]
    assert all(by_the_admin(entry, admin_user) for entry in entries)


# --- Role groups ----------------------------------------------------------------------------


def test_a_role_group_added_in_the_admin_is_audited_with_its_permissions(admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:auth_group_add"),
        {"name": "auditor", "permissions": [permission("audit.view_auditentry").pk]},
    )
    assert response.status_code == 302
    entry = the_entry("group.create")
    assert by_the_admin(entry, admin_user)
    assert (entry.object_name, entry.changes) == (
        "auditor",
        {"permissions": [[], ["audit.view_auditentry"]]},
    )


def test_a_role_groups_permissions_changed_in_the_admin_are_audited(admin_client, admin_user):
    viewer_role = Group.objects.get(name="viewer")
    before = sorted(
        f"{p.content_type.app_label}.{p.codename}" for p in viewer_role.permissions.all()
    )
    url = reverse("admin:auth_group_change", args=[viewer_role.pk])
    permissions = [*viewer_role.permissions.all(), permission("agents.run_agent")]
    response = admin_client.post(url, form_data(admin_client, url, permissions=permissions))
    assert response.status_code == 302
    entry = the_entry("group.permissions")
    assert by_the_admin(entry, admin_user)
    assert (entry.object_name, entry.changes) == (
        "viewer",
        {"permissions": [before, sorted([*before, "agents.run_agent"])]},
    )


def test_a_role_group_renamed_in_the_admin_is_audited(admin_client, admin_user):
    role = Group.objects.get(name="approver")
    url = reverse("admin:auth_group_change", args=[role.pk])
    response = admin_client.post(url, form_data(admin_client, url, name="approvers"))
    assert response.status_code == 302
    entry = the_entry("group.update")
    assert by_the_admin(entry, admin_user)
    assert entry.changes == {"name": ["approver", "approvers"]}
    assert not AuditEntry.objects.filter(action="group.permissions").exists()


def test_role_groups_deleted_in_the_admin_are_audited_one_by_one_and_in_bulk(
    admin_client, admin_user, operator, approver
):
    single = admin_client.post(
        reverse("admin:auth_group_delete", args=[Group.objects.get(name="operator").pk]),
        {"post": "yes"},
    )
    bulk = admin_client.post(
        reverse("admin:auth_group_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [
                g.pk for g in Group.objects.filter(name__in=["approver", "viewer"])
            ],
            "post": "yes",
        },
    )
    assert (single.status_code, bulk.status_code) == (302, 302)
    entries = {e.object_name: e for e in AuditEntry.objects.filter(action="group.delete")}
    assert sorted(entries) == ["approver", "operator", "viewer"]
    assert all(by_the_admin(entry, admin_user) for entry in entries.values())
    assert entries["operator"].changes["members"] == [["otto"], []]
    assert entries["approver"].changes["members"] == [["april"], []]
    assert "agents.approve_run" in entries["approver"].changes["permissions"][0]


# --- The task engine's admin ----------------------------------------------------------------


def test_django_q_schedules_are_not_in_the_admin(admin_client):
    # A Schedule names any function for the workers to call: code execution, not a setting.
    assert admin_client.get("/admin/django_q/schedule/add/").status_code == 404
    assert admin_client.get("/admin/django_q/schedule/").status_code == 404


def test_django_q_task_lists_are_read_only(admin_client):
    task = Success.objects.create(
        id="0" * 32,
        name="a-task",
        func="runs.engines.q2.execute",
        started="2026-06-15T12:00:00Z",
        stopped="2026-06-15T12:00:01Z",
        success=True,
    )
    changelist = admin_client.get(reverse("admin:django_q_success_changelist"))
    assert changelist.status_code == 200
    assert "resubmit" not in changelist.content.decode().lower()
    assert admin_client.get(reverse("admin:django_q_success_add")).status_code == 403
    delete = admin_client.post(
        reverse("admin:django_q_success_delete", args=[task.pk]), {"post": "yes"}
    )
    assert delete.status_code == 403
    resubmit = admin_client.post(
        reverse("admin:django_q_success_changelist"),
        {"action": "resubmit_task", "_selected_action": [task.pk]},
    )
    assert resubmit.status_code == 200  # the changelist again: no such action
    assert Success.objects.filter(pk=task.pk).exists()
    for name in ("failure", "ormq"):
        assert admin_client.get(f"/admin/django_q/{name}/add/").status_code in (403, 404)
