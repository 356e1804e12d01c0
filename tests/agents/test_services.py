from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from agents import secrets
from agents.models import Agent
from agents.services import clone_agent, rollback_agent, save_agent, set_enabled
from audit.actor import Actor
from audit.models import AuditEntry
from tests.factories import make_agent, with_secret

pytestmark = pytest.mark.django_db


def test_every_change_is_a_version_that_records_who_made_it(editor):
    agent = make_agent()
    agent.prompt = "new prompt"
    save_agent(agent, Actor(editor, "web", "10.0.0.7"))
    versions = list(agent.history.order_by("history_id"))
    assert len(versions) == 2
    assert versions[-1].history_user == editor
    assert versions[-1].prompt == "new prompt"


def test_saving_without_a_change_makes_no_version_and_no_audit_entry(editor):
    agent = make_agent()
    entries = AuditEntry.objects.count()
    assert save_agent(Agent.objects.get(pk=agent.pk), Actor(editor, "web")) == {}
    assert agent.history.count() == 1
    assert AuditEntry.objects.count() == entries


def test_a_config_edit_is_audited_with_who_what_when_and_where(editor):
    agent = make_agent()
    agent.schedule = "@daily"
    save_agent(agent, Actor(editor, "web", "192.0.2.1"))
    entry = AuditEntry.objects.get(action="agent.update")
    assert entry.actor_username == "eddie"
    assert entry.source == "web"
    assert entry.ip_address == "192.0.2.1"
    assert entry.object_name == "cron-git"
    assert entry.changes == {"schedule": ["0 */4 * * *", "@daily"]}
    assert entry.at is not None


def test_invalid_configuration_is_refused_and_nothing_is_written(editor):
    agent = make_agent()
    agent.timezone = "Mars/Olympus"
    agent.command = ""
    with pytest.raises(ValidationError) as caught:
        save_agent(agent, Actor(editor, "web"))
    assert "timezone" in caught.value.message_dict
    assert "command" in caught.value.message_dict
    assert "Mars/Olympus" in caught.value.message_dict["timezone"][0]
    assert Agent.objects.get(pk=agent.pk).timezone == "UTC"
    assert agent.history.count() == 1


def test_a_viewer_cannot_change_an_agent(viewer):
    agent = make_agent()
    agent.description = "hijacked"
    with pytest.raises(PermissionDenied):
        save_agent(agent, Actor(viewer, "web"))
    assert Agent.objects.get(pk=agent.pk).description == "cron-git agent"


def test_secret_values_are_encrypted_at_rest_and_in_history(editor):
    agent = with_secret(make_agent(), "API_TOKEN", "s3cr3t-value-123")
    save_agent(agent, Actor(editor, "web"))
    stored = Agent.objects.values_list("variables", flat=True).get(pk=agent.pk)
    assert "s3cr3t-value-123" not in str(stored)
    assert "s3cr3t-value-123" not in str(list(agent.history.values_list("variables", flat=True)))
    assert secrets.environment(Agent.objects.get(pk=agent.pk).variables) == {
        "API_TOKEN": "s3cr3t-value-123"
    }


def test_the_audit_entry_of_a_secret_change_masks_the_value(editor):
    agent = with_secret(make_agent(), "API_TOKEN", "s3cr3t-value-123")
    save_agent(agent, Actor(editor, "web"))
    agent.variables = [secrets.secret("API_TOKEN", "another-s3cr3t")]
    save_agent(agent, Actor(editor, "web"))
    entries = list(AuditEntry.objects.filter(action="agent.update"))
    dumped = str([e.changes for e in entries])
    assert "s3cr3t-value-123" not in dumped and "another-s3cr3t" not in dumped
    assert "API_TOKEN=•••••••• (secret, changed)" in dumped


def test_rollback_restores_an_old_version_as_a_new_version(editor):
    agent = make_agent(prompt="first prompt")
    first = agent.history.get()
    agent.prompt = "second prompt"
    agent.variables = [secrets.plain("A", "1")]
    save_agent(agent, Actor(editor, "web"))
    rollback_agent(agent, first.history_id, Actor(editor, "web"))
    agent.refresh_from_db()
    assert agent.prompt == "first prompt"
    assert agent.variables == []
    assert agent.history.count() == 3
    assert agent.history.latest().history_change_reason == "Rolled back to version 1"
    assert AuditEntry.objects.filter(action="agent.rollback").count() == 1


def test_enabling_and_disabling_needs_the_toggle_permission(operator, viewer):
    agent = make_agent()
    with pytest.raises(PermissionDenied):
        set_enabled(agent, False, Actor(viewer, "web"))
    assert set_enabled(agent, False, Actor(operator, "web")) is True
    assert Agent.objects.get(pk=agent.pk).enabled is False
    assert AuditEntry.objects.filter(action="agent.disable", actor_username="otto").exists()


def test_a_clone_starts_disabled_with_the_same_configuration(editor):
    agent = make_agent(prompt="do it", max_turns=4)
    copy = clone_agent(agent, "cron-git-copy", Actor(editor, "web"))
    assert copy.enabled is False
    assert (copy.prompt, copy.max_turns, copy.command) == ("do it", 4, agent.command)
    assert AuditEntry.objects.filter(action="agent.clone", object_name="cron-git-copy").exists()


def test_a_reserved_name_is_refused_with_the_reason(editor):
    from agents.models import Agent as AgentModel

    agent = AgentModel(name="new", runner="command", command="true", working_dir="/tmp")
    with pytest.raises(ValidationError) as caught:
        save_agent(agent, Actor(editor, "web"))
    assert "reserved" in caught.value.message_dict["name"][0]
