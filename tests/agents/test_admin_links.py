"""The admin links to the pages for what the pages already do, instead of keeping copies."""

from __future__ import annotations

import pytest
from django.urls import NoReverseMatch, reverse

from agents.services import save_agent
from audit.actor import Actor
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def test_the_admin_compares_versions_on_the_agent_page(client, admin_user):
    agent = make_agent("nightly", description="v1")
    agent.description = "v2"
    save_agent(agent, Actor.system())
    client.force_login(admin_user)
    page = client.get(reverse("admin:agents_agent_versions", args=[agent.pk])).content.decode()
    assert f'action="{reverse("agents:diff", args=["nightly"])}"' in page
    with pytest.raises(NoReverseMatch):
        reverse("admin:agents_agent_diff", args=[agent.pk])


def test_the_change_form_links_to_the_agent_page_and_the_clone_wizard(client, admin_user):
    agent = make_agent("nightly")
    client.force_login(admin_user)
    page = client.get(reverse("admin:agents_agent_change", args=[agent.pk])).content.decode()
    assert f'href="{reverse("agents:detail", args=["nightly"])}"' in page
    assert f'href="{reverse("agents:new")}?clone=nightly"' in page


def test_a_viewer_is_not_offered_the_clone_wizard(client, viewer):
    agent = make_agent("nightly")
    client.force_login(viewer)
    page = client.get(reverse("admin:agents_agent_change", args=[agent.pk])).content.decode()
    assert "?clone=" not in page
    assert f'href="{reverse("agents:detail", args=["nightly"])}"' in page
