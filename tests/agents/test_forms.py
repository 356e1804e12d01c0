"""The agent form wherever it is used (edit page, wizard, admin): a rule the model enforces on a
field the form shows under another name, or not at all, is shown on the form, never a 500."""

from __future__ import annotations

from html import escape

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.urls import reverse

from agents import secrets
from agents.forms import AgentForm
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from tests.agents.test_views import as_user, form_data, page
from tests.audit.test_roles import edit_form_data
from tests.factories import make_agent, with_secret

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


# --- A secret typed into a refused form is never sent back --------------------------------------

TYPED = "typed-secret-value-7f3a9c"


def secret_absent(response, *values: str) -> None:
    """None of `values` is anywhere in the response's bytes, as typed or HTML-escaped."""
    body = response.content
    for value in values:
        for form in {value, escape(value)}:
            assert form.encode() not in body, form


@pytest.mark.parametrize(
    "typed, shown_back",
    [
        # A secret with its name: the name comes back, the value is to be typed again.
        (f"NEW_TOKEN={TYPED}", "NEW_TOKEN="),
        # A value pasted alone, a URL holding a password, a commented-out old value: not a
        # NAME=value line, so nothing of it comes back, nor in the error that says so.
        (TYPED, ""),
        (f"postgres://app:{TYPED}@db/prod", ""),
        (f"# old: {TYPED}\nNEW_TOKEN={TYPED}", "NEW_TOKEN="),
    ],
)
def test_a_secret_typed_into_a_refused_edit_form_is_not_sent_back(
    client, editor, typed, shown_back
):
    agent = make_agent()
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    data = form_data(page(client, url), url, secret_variables=typed, schedule="61 * * * *")
    response = client.post(url, data)
    assert response.status_code == 200
    assert "out of range" in response.content.decode()  # refused for the schedule
    secret_absent(response, TYPED)
    assert response.context["form"]["secret_variables"].value() == shown_back
    assert Agent.objects.get().variables == []


def test_a_bare_word_that_names_no_secret_is_not_echoed(client, editor):
    # A token pasted alone reads as a bare NAME (keep this secret): no such secret, so it is
    # refused without quoting it, and not drawn back.
    agent = make_agent()
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    response = client.post(url, form_data(page(client, url), url, secret_variables=token))
    assert response.status_code == 200
    assert "names no secret of this agent" in response.content.decode()
    secret_absent(response, token)


def test_the_refused_form_says_to_re_enter_the_value_and_keeps_the_kept_secret(client, editor):
    agent = with_secret(make_agent(), "API_TOKEN", "kept-secret-value-1234")
    save_agent(agent, Actor.system())
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    data = form_data(
        page(client, url),
        url,
        secret_variables=f"API_TOKEN\nNEW_TOKEN={TYPED}",
        timezone="Mars/Base",
    )
    response = client.post(url, data)
    html = response.content.decode()
    secret_absent(response, TYPED, "kept-secret-value-1234")
    assert "Re-enter the value of NEW_TOKEN" in html
    assert response.context["form"]["secret_variables"].value() == "API_TOKEN\nNEW_TOKEN="

    # Saved as drawn back (the value not typed again): refused, saying so, and nothing saved.
    again = form_data(html, url, timezone="UTC")
    assert again["secret_variables"] == "API_TOKEN\nNEW_TOKEN="
    response = client.post(url, again)
    assert "secret NEW_TOKEN has no value: type it again" in response.content.decode()
    assert [v["name"] for v in Agent.objects.get().variables] == ["API_TOKEN"]

    # Typed again, it saves, and the kept secret keeps its value.
    response = client.post(url, {**again, "secret_variables": f"API_TOKEN\nNEW_TOKEN={TYPED}"})
    assert response.status_code == 302
    assert secrets.environment(Agent.objects.get().variables) == {
        "API_TOKEN": "kept-secret-value-1234",
        "NEW_TOKEN": TYPED,
    }


def test_a_secret_typed_into_the_wizard_is_not_sent_back(client, editor):
    make_agent("source")
    as_user(client, editor)
    new = reverse("agents:new")
    step2 = page(client, new, clone="source")
    data = form_data(step2, new, secret_variables=f"NEW_TOKEN={TYPED}", schedule="61 * * * *")
    response = client.post(new, data)
    assert response.status_code == 200
    assert "out of range" in response.content.decode()
    secret_absent(response, TYPED)
    assert response.context["form"]["secret_variables"].value() == "NEW_TOKEN="
    assert not Agent.objects.filter(name="source-copy").exists()


def test_a_secret_typed_into_the_admin_form_is_not_sent_back(client, admin_user):
    agent = make_agent()
    client.force_login(admin_user)
    data = edit_form_data(agent, secret_variables=f"NEW_TOKEN={TYPED}", schedule="61 * * * *")
    response = client.post(reverse("admin:agents_agent_change", args=[agent.pk]), data)
    assert response.status_code == 200
    assert "out of range" in response.content.decode()
    secret_absent(response, TYPED)
    assert "Re-enter the value of NEW_TOKEN" in response.content.decode()
    assert Agent.objects.get().variables == []


def test_a_secret_typed_into_a_form_refused_for_a_conflict_is_not_sent_back(client, editor):
    agent = make_agent()
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    data = form_data(page(client, url), url, secret_variables=f"NEW_TOKEN={TYPED}")
    agent.description = "saved in another tab"
    save_agent(agent, Actor.system())
    response = client.post(url, data)
    assert response.status_code == 409
    secret_absent(response, TYPED)
    assert "NEW_TOKEN" in response.content.decode()  # named in the diff of what they changed


def test_a_typed_secret_is_kept_out_of_error_reports(rf, editor):
    # Django's error reports (DEBUG pages, mails to ADMINS) list the POST: not this field.
    from django.views.debug import SafeExceptionReporterFilter

    from cronos_site.web.views.agents import agent_edit

    agent = make_agent()
    request = rf.post(f"/agents/{agent.name}/edit/", {"secret_variables": f"T={TYPED}"})
    request.user = editor
    response = agent_edit(request, agent.name)  # refused: the form lacks every other field
    assert response.status_code == 200
    shown = SafeExceptionReporterFilter().get_post_parameters(request)
    assert TYPED not in str(shown)
