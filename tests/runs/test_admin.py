from __future__ import annotations

import pytest
from django.urls import reverse

from runs.models import Run
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def test_runs_are_listed_and_searchable_by_output(client, viewer):
    agent = make_agent()
    run = Run.objects.create(agent=agent, trigger="manual")
    run.chunks.create(seq=0, text="the needle is here\n")
    Run.objects.create(agent=agent, trigger="manual")
    client.force_login(viewer)
    page = client.get(reverse("admin:runs_run_changelist"), {"q": "needle"})
    assert page.status_code == 200
    assert page.context["cl"].result_count == 1


def test_an_operator_cancels_runs_from_the_admin_and_a_viewer_cannot(client, operator, viewer):
    agent = make_agent()
    run = Run.objects.create(agent=agent, trigger="manual")
    client.force_login(viewer)
    data = {"action": "cancel_selected", "_selected_action": [run.pk]}
    client.post(reverse("admin:runs_run_changelist"), data)
    run.refresh_from_db()
    assert run.state == "pending"
    client.force_login(operator)
    client.post(reverse("admin:runs_run_changelist"), data)
    run.refresh_from_db()
    assert run.state == "cancelled"
    assert "otto" in run.reason


def test_a_run_record_cannot_be_edited_or_deleted(client, admin_user):
    run = Run.objects.create(agent=make_agent(), trigger="manual")
    client.force_login(admin_user)
    url = reverse("admin:runs_run_change", args=[run.pk])
    assert client.get(url).status_code == 200
    assert client.post(url, {"state": "succeeded"}).status_code == 403
    run.refresh_from_db()
    assert run.state == "pending"
