from __future__ import annotations

import pytest
from django.urls import reverse

from audit.actor import Actor
from audit.log import record
from audit.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_an_audit_entry_cannot_be_changed():
    entry = record(Actor.system(), "test.action", object_name="thing")
    entry.action = "rewritten"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).update(action="rewritten")
    assert AuditEntry.objects.get(pk=entry.pk).action == "test.action"


def test_an_audit_entry_cannot_be_deleted():
    entry = record(Actor.system(), "test.action")
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_the_audit_entry_keeps_the_username_after_the_user_is_deleted(editor):
    record(Actor(editor, "web"), "agent.update", object_name="x")
    editor.delete()
    entry = AuditEntry.objects.get(action="agent.update")
    assert entry.actor is None
    assert entry.actor_username == "eddie"


def test_a_login_is_audited_with_the_address(client, viewer):
    response = client.post(
        reverse("admin:login"),
        {"username": "vera", "password": "correct horse battery"},
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="login")
    assert (entry.actor_username, entry.ip_address, entry.source) == (
        "vera",
        "203.0.113.9",
        "admin",
    )


def test_a_failed_login_is_audited_without_the_password(client, viewer):
    client.post(reverse("admin:login"), {"username": "vera", "password": "wrong-guess-42"})
    entry = AuditEntry.objects.get(action="login_failed")
    assert entry.object_name == "vera"
    assert "wrong-guess-42" not in str(entry.__dict__)


def test_nobody_can_edit_or_delete_entries_in_the_admin(client, admin_user):
    entry = record(Actor.system(), "test.action")
    client.force_login(admin_user)
    assert client.get(reverse("admin:audit_auditentry_changelist")).status_code == 200
    change = client.post(
        reverse("admin:audit_auditentry_change", args=[entry.pk]), {"action": "rewritten"}
    )
    delete = client.post(reverse("admin:audit_auditentry_delete", args=[entry.pk]), {"post": "yes"})
    assert change.status_code == 403
    assert delete.status_code == 403
    assert client.get(reverse("admin:audit_auditentry_add")).status_code == 403
    assert AuditEntry.objects.get(pk=entry.pk).action == "test.action"
