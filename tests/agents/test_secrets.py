from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from agents import secrets
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from audit.models import AuditEntry
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
