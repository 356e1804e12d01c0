"""The agent form wherever it is used (edit page, wizard, admin): a rule the model enforces on a
field the form shows under another name, or not at all, is shown on the form, never a 500."""

from __future__ import annotations

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.urls import reverse

from agents.forms import AgentForm
from agents.models import Agent
from tests.agents.test_views import as_user, form_data, page
from tests.audit.test_roles import edit_form_data
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def test_a_variable_defined_twice_is_shown_on_the_variables_box_of_the_edit_page(client, editor):
    agent = make_agent()
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    response = client.post(url, form_data(page(client, url), url, plain_variables="A=1\nA=2"))
    assert response.status_code == 200
    form = response.context["form"]
    assert form.errors["plain_variables"] == ["A is defined twice."]
    assert "A is defined twice." in response.content.decode()
    assert Agent.objects.get().variables == []


def test_a_name_both_plain_and_secret_is_refused_on_the_form(client, editor):
    agent = make_agent()
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    data = form_data(page(client, url), url, plain_variables="A=1", secret_variables="A=2")
    response = client.post(url, data)
    assert response.status_code == 200
    assert "A is defined twice." in response.context["form"].errors["plain_variables"]


def test_the_wizard_shows_a_variable_defined_twice(client, editor):
    make_agent("source")
    as_user(client, editor)
    new = reverse("agents:new")
    step2 = page(client, new, clone="source")
    response = client.post(new, form_data(step2, new, plain_variables="A=1\nA=2"))
    assert response.status_code == 200
    assert response.context["form"].errors["plain_variables"] == ["A is defined twice."]
    assert not Agent.objects.filter(name="source-copy").exists()


def test_the_admin_form_shows_a_variable_defined_twice(client, admin_user):
    agent = make_agent()
    client.force_login(admin_user)
    data = edit_form_data(agent, plain_variables="A=1\nA=2")
    response = client.post(reverse("admin:agents_agent_change", args=[agent.pk]), data)
    assert response.status_code == 200
    assert "A is defined twice." in response.content.decode()
    assert agent.history.count() == 1


def test_the_wizard_shows_a_rule_broken_by_a_field_it_does_not_show(client, editor):
    # A clone of an agent saved before the rule existed: the wizard does not show the retry
    # delays, so their error is said above the form, naming the setting.
    source = make_agent("source")
    Agent.objects.filter(pk=source.pk).update(retry_delay_seconds=60, retry_max_delay_seconds=5)
    as_user(client, editor)
    new = reverse("agents:new")
    response = client.post(new, form_data(page(client, new, clone="source"), new))
    assert response.status_code == 200
    errors = response.context["form"].non_field_errors()
    assert errors == [
        "Longest retry delay (seconds): The maximum retry delay is shorter than the delay itself."
    ]


def test_every_model_error_lands_on_a_shown_field_or_above_the_form():
    agent = make_agent()
    form = AgentForm(edit_form_data(agent), instance=agent)
    assert form.is_valid()
    # As a service refusing the save would report it (views: form.add_error(None, exc)).
    form.add_error(
        None,
        ValidationError(
            {
                "variables": ["secret TOKEN has no value.", "B is defined twice."],
                "extra_config": ["must be a mapping."],
                "schedule": ["bad schedule"],
                NON_FIELD_ERRORS: ["the whole agent is wrong"],
            }
        ),
    )
    assert form.errors["secret_variables"] == ["secret TOKEN has no value."]
    assert form.errors["plain_variables"] == ["B is defined twice."]
    assert form.errors["schedule"] == ["bad schedule"]
    assert form.errors[NON_FIELD_ERRORS] == [
        "Other settings: must be a mapping.",
        "the whole agent is wrong",
    ]


def test_the_limits_are_labelled_in_words_on_the_form_and_the_agent_page(client, viewer, editor):
    agent = make_agent()
    as_user(client, editor)
    edit = page(client, reverse("agents:edit", args=[agent.name]))
    assert "Memory limit (MB)" in edit and "CPU nice level" in edit
    assert "Memory limit mb" not in edit and "Cpu nice" not in edit
    as_user(client, viewer)
    detail = page(client, reverse("agents:detail", args=[agent.name]))
    assert "<dt>Memory limit (MB)</dt>" in detail and "<dt>CPU nice level</dt>" in detail
    assert "Memory limit mb" not in detail and "Cpu nice" not in detail
