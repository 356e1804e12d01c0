"""The role/permission table: every role against every action, in the admin and services."""

from __future__ import annotations

import pytest
from django.forms import JSONField
from django.urls import reverse

from agents.models import Agent
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

ROLES = ["viewer", "operator", "editor", "approver", "admin", "outsider"]


def _see_list(client, agent):
    return client.get(reverse("admin:agents_agent_changelist")).status_code == 200


def _see_versions(client, agent):
    return client.get(reverse("admin:agents_agent_versions", args=[agent.pk])).status_code == 200


def _open_add_page(client, agent):
    return client.get(reverse("admin:agents_agent_add")).status_code == 200


def _edit(client, agent):
    data = edit_form_data(agent, description="edited by a test")
    client.post(reverse("admin:agents_agent_change", args=[agent.pk]), data)
    return Agent.objects.get(pk=agent.pk).description == "edited by a test"


def _delete(client, agent):
    client.post(reverse("admin:agents_agent_delete", args=[agent.pk]), {"post": "yes"})
    return not Agent.objects.filter(pk=agent.pk).exists()


def _disable(client, agent):
    client.post(
        reverse("admin:agents_agent_changelist"),
        {"action": "disable_selected", "_selected_action": [agent.pk]},
    )
    return Agent.objects.get(pk=agent.pk).enabled is False


def _clone(client, agent):
    client.post(
        reverse("admin:agents_agent_changelist"),
        {"action": "clone_selected", "_selected_action": [agent.pk]},
    )
    return Agent.objects.filter(name=f"{agent.name}-copy").exists()


def _rollback(client, agent):
    first = agent.history.earliest()
    agent.description = "second"
    from agents.services import save_agent
    from audit.actor import Actor

    save_agent(agent, Actor.system())
    client.post(reverse("admin:agents_agent_rollback", args=[agent.pk, first.history_id]))
    return Agent.objects.get(pk=agent.pk).description == "cron-git agent"


def _from_template_page(client, agent):
    return client.get(reverse("admin:agents_agent_from_template")).status_code == 200


def _read_audit(client, agent):
    return client.get(reverse("admin:audit_auditentry_changelist")).status_code == 200


def _manage_people(client, agent):
    return client.get(reverse("admin:auth_user_changelist")).status_code == 200


ACTIONS = {
    "see the agent list": (_see_list, {"viewer", "operator", "editor", "approver", "admin"}),
    "see versions": (_see_versions, {"viewer", "operator", "editor", "approver", "admin"}),
    "open the add page": (_open_add_page, {"editor", "admin"}),
    "edit an agent": (_edit, {"editor", "admin"}),
    "delete an agent": (_delete, {"editor", "admin"}),
    "disable an agent": (_disable, {"operator", "admin"}),
    "clone an agent": (_clone, {"editor", "admin"}),
    "roll back a version": (_rollback, {"editor", "admin"}),
    "create from a template": (_from_template_page, {"editor", "admin"}),
    "read the audit log": (_read_audit, {"admin"}),
    "manage people": (_manage_people, {"admin"}),
}


def edit_form_data(agent: Agent, **overrides) -> dict:
    """The admin change form as a browser would post it, with overrides."""
    from agents.forms import AgentForm

    form = AgentForm(instance=agent)
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(value, list):
            value = "\n".join(value)
        if value is None:
            value = ""
        if isinstance(value, bool):
            if value:
                data[name] = "on"
            continue
        if isinstance(field, JSONField):
            data[name] = value  # value() is already the field's JSON text
            continue
        data[name] = field.prepare_value(value) if hasattr(field, "prepare_value") else value
    data.update(overrides)
    return data


@pytest.mark.parametrize("role_user", ROLES, indirect=True)
@pytest.mark.parametrize("action", list(ACTIONS))
def test_each_role_may_do_exactly_what_its_permissions_allow(client, role_user, action):
    check, allowed_roles = ACTIONS[action]
    role = role_user.username.removesuffix("-user") if role_user.username != "olga" else "outsider"
    agent = make_agent()
    client.force_login(role_user)
    assert check(client, agent) is (role in allowed_roles), f"{role} / {action}"


@pytest.mark.parametrize(
    ("perm", "allowed"),
    [
        ("agents.run_agent", {"operator", "admin"}),
        ("agents.cancel_run", {"operator", "admin"}),
        ("agents.toggle_agent", {"operator", "admin"}),
        ("agents.approve_run", {"approver", "admin"}),
        ("agents.change_agent", {"editor", "admin"}),
        ("agents.view_agent", {"viewer", "operator", "editor", "approver", "admin"}),
    ],
)
@pytest.mark.parametrize("role_user", ROLES, indirect=True)
def test_role_permissions_for_actions_of_later_pages(role_user, perm, allowed):
    role = role_user.username.removesuffix("-user") if role_user.username != "olga" else "outsider"
    assert role_user.has_perm(perm) is (role in allowed)


def test_every_page_requires_login(client):
    make_agent()
    for url in ["/", reverse("admin:agents_agent_changelist"), reverse("admin:index")]:
        response = client.get(url)
        assert response.status_code == 302
        assert "/login/" in response["Location"]
