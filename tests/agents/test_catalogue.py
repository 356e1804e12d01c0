"""The built-in templates catalogue."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.exceptions import ValidationError

from agents import agentfile as config
from agents import catalogue
from agents.models import Agent
from audit.actor import Actor
from audit.models import AuditEntry

pytestmark = pytest.mark.django_db

TEMPLATES = ["backup", "cleanup", "git-commit", "nightly-tests", "report"]


@pytest.fixture
def actor(django_user_model) -> Actor:
    django_user_model.objects.create_superuser("ana", "ana@example.com", "pw")
    return Actor.cli("ana")


def test_the_catalogue_lists_every_template_with_a_title_and_a_description():
    templates = catalogue.list_templates()
    assert [t.name for t in templates] == TEMPLATES
    for template in templates:
        assert template.title and template.title != template.name
        assert template.description
        assert template.path.name == f"{template.name}.yaml"


@pytest.mark.parametrize("name", TEMPLATES)
def test_each_template_loads_and_validates_as_an_agent(name):
    parsed = catalogue.template_fields(name, f"from-{name}")
    assert parsed.notices == []  # no unknown keys: every key of a template means something
    agent = config.apply(Agent(), parsed.fields)
    agent.full_clean()
    assert agent.name == f"from-{name}"


@pytest.mark.parametrize("name", TEMPLATES)
def test_each_template_documents_every_option_it_uses_with_a_comment(name):
    lines = (catalogue.CATALOGUE_DIR / f"{name}.yaml").read_text().splitlines()
    mapping = yaml.safe_load("\n".join(lines))
    options = [
        key for key, value in mapping.items() if not isinstance(value, dict) or key in ("env",)
    ] + [sub for value in mapping.values() if isinstance(value, dict) for sub in value]
    undocumented = []
    for option in options:
        # The line setting the option, and the comment line just above it.
        [index] = [i for i, line in enumerate(lines) if re.match(rf"\s*{re.escape(option)}:", line)]
        above = lines[index - 1].strip()
        if not above.startswith("#"):
            undocumented.append(option)
    # env variables are documented by the comment over `env:` as a whole.
    env_names = set(mapping.get("env") or {})
    assert [o for o in undocumented if o not in env_names] == []


def test_creating_from_a_template_makes_a_disabled_agent_with_a_version_and_an_audit_entry(actor):
    agent = catalogue.create_from_template(
        "git-commit", "notes-commit", actor, working_dir="~/work/notes"
    )

    agent.refresh_from_db()
    assert agent.name == "notes-commit"
    assert agent.enabled is False
    assert agent.working_dir == "~/work/notes"
    assert agent.schedule == "0 */4 * * *"
    assert agent.runner == Agent.Runner.CLAUDE
    assert agent.prompt.startswith("# cron-git\n")
    assert agent.extra_config == {}
    [version] = agent.history.all()
    assert version.history_change_reason == "Created from template git-commit"
    [entry] = AuditEntry.objects.for_object(agent)
    assert (entry.action, entry.actor_username) == ("agent.create", "ana")
    assert entry.message == "Created from template git-commit"


def test_a_command_template_keeps_the_template_working_dir_unless_given_one(actor):
    agent = catalogue.create_from_template("backup", "nightly-backup", actor)
    assert agent.runner == Agent.Runner.COMMAND
    assert agent.working_dir == "~/notes"
    assert agent.enabled is False
    assert [v["name"] for v in agent.variables] == ["BACKUP_DIR"]


def test_an_unknown_template_name_is_a_clear_error(actor):
    with pytest.raises(catalogue.TemplateNotFound) as caught:
        catalogue.create_from_template("deploy-prod", "x", actor)
    assert str(caught.value) == (
        "There is no template named 'deploy-prod'; the catalogue has: " + ", ".join(TEMPLATES) + "."
    )
    assert not Agent.objects.exists()


def test_a_name_already_taken_is_refused_and_nothing_is_written(actor):
    catalogue.create_from_template("report", "weekly", actor)
    entries = AuditEntry.objects.count()
    with pytest.raises(ValidationError) as caught:
        catalogue.create_from_template("cleanup", "weekly", actor)
    assert "name" in caught.value.message_dict
    assert Agent.objects.count() == 1
    assert AuditEntry.objects.count() == entries
