from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from agents import secrets
from agents.legacy import Status, import_directory
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from audit.models import AuditEntry
from tests.agents.test_views import form_data, page
from tests.factories import make_agent, with_secret

pytestmark = pytest.mark.django_db


def test_masking_replaces_every_secret_value_in_text():
    assert secrets.mask_text("token=abc123 and abc123!", ["abc123"]) == (
        f"token={secrets.MASK} and {secrets.MASK}!"
    )


def test_rotation_re_encrypts_agents_and_their_history_with_the_newest_key(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CRONOS_SECRET_KEYS = [old]
    agent = with_secret(make_agent(), "TOKEN", "t0ken-value")
    save_agent(agent, Actor.system())
    versions = agent.history.count()

    settings.CRONOS_SECRET_KEYS = [new, old]
    call_command("cronos_rotate_secrets")

    settings.CRONOS_SECRET_KEYS = [new]  # the old key is gone: everything must still decrypt
    assert secrets.environment(Agent.objects.get(pk=agent.pk).variables) == {"TOKEN": "t0ken-value"}
    for version in agent.history.all():
        secrets.environment(version.variables)
    assert agent.history.count() == versions  # rotation is not a configuration change
    assert AuditEntry.objects.filter(action="secrets.rotate").exists()


def test_a_missing_key_is_reported_and_nothing_is_changed(settings):
    settings.CRONOS_SECRET_KEYS = [Fernet.generate_key().decode()]
    agent = with_secret(make_agent(), "TOKEN", "t0ken-value")
    save_agent(agent, Actor.system())
    before = Agent.objects.get(pk=agent.pk).variables

    settings.CRONOS_SECRET_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="could not be decrypted"):
        call_command("cronos_rotate_secrets")
    assert Agent.objects.get(pk=agent.pk).variables == before


def test_a_new_key_can_be_generated(capsys):
    call_command("cronos_rotate_secrets", "--new-key")
    Fernet(capsys.readouterr().out.strip().encode())  # a valid key, or this raises


# --- a secret too short to be masked (DESIGN.md §4 "Secrets, precisely") -------------------


def test_a_secret_shorter_than_six_characters_is_refused_at_save_naming_the_variable():
    agent = with_secret(make_agent(), "PIN", "12345")
    with pytest.raises(ValidationError) as refused:
        save_agent(agent, Actor.system())
    [message] = refused.value.message_dict["variables"]
    assert message.startswith("secret PIN is shorter than 6 characters")
    assert "12345" not in message  # never the value, even a refused one
    assert Agent.objects.get(pk=agent.pk).variables == []


def test_spaces_around_a_secret_do_not_make_it_long_enough_and_six_characters_are():
    with pytest.raises(ValidationError):
        save_agent(with_secret(make_agent("spaced"), "PIN", "  1234  "), Actor.system())
    agent = with_secret(make_agent("six"), "PIN", "123456")
    save_agent(agent, Actor.system())
    assert secrets.environment(Agent.objects.get(pk=agent.pk).variables) == {"PIN": "123456"}


def test_the_edit_form_shows_a_short_secret_on_the_secrets_box(client, editor):
    agent = make_agent()
    client.force_login(editor)
    url = reverse("agents:edit", args=[agent.name])
    response = client.post(url, form_data(page(client, url), url, secret_variables="FLAG=e"))
    assert response.status_code == 200
    [message] = response.context["form"].errors["secret_variables"]
    assert message.startswith("secret FLAG is shorter than 6 characters")
    assert Agent.objects.get(pk=agent.pk).variables == []


def test_an_imported_agent_with_a_short_secret_is_refused_naming_it(tmp_path, settings):
    settings.CRONOS_CLAUDE_BIN = "/bin/true"
    folder = tmp_path / "agents" / "short"
    folder.mkdir(parents=True)
    (folder / "agent.yaml").write_text(
        "name: short\nrunner: command\ncommand: echo hi\n"
        f"working_dir: {tmp_path}\nsecrets:\n  API_KEY: abc\n"
    )
    report = import_directory(tmp_path, Actor.system())
    [failed] = report.agents
    assert failed.status == Status.FAILED
    assert any("secret API_KEY is shorter than 6 characters" in p for p in failed.problems)
    assert not Agent.objects.filter(name="short").exists()
