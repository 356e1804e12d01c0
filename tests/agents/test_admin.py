from __future__ import annotations

import pytest
from django.urls import reverse

from agents import secrets
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from audit.models import AuditEntry
from tests.audit.test_roles import edit_form_data
from tests.factories import make_agent, with_secret

pytestmark = pytest.mark.django_db

SECRET = "sk-live-very-secret-4242"


@pytest.fixture
def agent_with_secret():
    agent = with_secret(make_agent(prompt="line one\nline two\n"), "API_TOKEN", SECRET)
    save_agent(agent, Actor.system())
    return agent


@pytest.mark.date_sensitive
def test_the_list_shows_schedule_in_words_and_the_next_run(client, admin_user):
    make_agent(schedule="0 0 */4 * * *", timezone="Europe/Paris")
    client.force_login(admin_user)
    page = client.get(reverse("admin:agents_agent_changelist")).content.decode()
    assert "Every 4 hours" in page
    assert "Europe/Paris" in page
    assert "Next run" in page


def test_the_list_searches_name_and_description(client, admin_user):
    make_agent("alpha", description="backs up photos")
    make_agent("beta", description="writes reports")
    client.force_login(admin_user)
    page = client.get(reverse("admin:agents_agent_changelist"), {"q": "photos"}).content.decode()
    assert "alpha" in page and "beta" not in page


def test_a_secret_value_is_never_sent_to_the_admin(client, admin_user, agent_with_secret):
    client.force_login(admin_user)
    agent = agent_with_secret
    pages = [
        reverse("admin:agents_agent_change", args=[agent.pk]),
        reverse("admin:agents_agent_versions", args=[agent.pk]),
        reverse("admin:agents_agent_history", args=[agent.pk]),
        reverse("admin:audit_auditentry_changelist"),
    ]
    first, last = agent.history.earliest(), agent.history.latest()
    # Comparing versions is the agent page's diff: the admin's versions list links to it.
    pages.append(
        reverse("agents:diff", args=[agent.name]) + f"?from={first.history_id}&to={last.history_id}"
    )
    for entry in AuditEntry.objects.all():
        pages.append(reverse("admin:audit_auditentry_change", args=[entry.pk]))
    for url in pages:
        response = client.get(url, follow=True)
        assert response.status_code == 200, url
        assert SECRET not in response.content.decode(), url
    diff = client.get(pages[4]).content.decode()
    assert "API_TOKEN" in diff


def test_saving_the_form_keeps_a_secret_whose_line_is_left_as_its_name(
    client, admin_user, agent_with_secret
):
    client.force_login(admin_user)
    agent = agent_with_secret
    data = edit_form_data(agent, description="new words")
    assert data["secret_variables"] == "API_TOKEN"
    response = client.post(reverse("admin:agents_agent_change", args=[agent.pk]), data)
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.description == "new words"
    assert secrets.environment(agent.variables) == {"API_TOKEN": SECRET}


def test_the_form_sets_plain_and_secret_variables(client, admin_user):
    agent = make_agent()
    client.force_login(admin_user)
    data = edit_form_data(agent, plain_variables="REGION=eu\n", secret_variables="PASS=hunter22")
    client.post(reverse("admin:agents_agent_change", args=[agent.pk]), data)
    agent.refresh_from_db()
    assert secrets.environment(agent.variables) == {"REGION": "eu", "PASS": "hunter22"}
    assert "hunter22" not in str(agent.variables)


def test_an_invalid_cron_in_the_form_names_the_problem_and_saves_nothing(client, admin_user):
    agent = make_agent()
    client.force_login(admin_user)
    data = edit_form_data(agent, schedule="61 * * * *")
    response = client.post(reverse("admin:agents_agent_change", args=[agent.pk]), data)
    assert response.status_code == 200
    assert "minute" in response.content.decode()
    assert Agent.objects.get(pk=agent.pk).schedule == "0 */4 * * *"
    assert agent.history.count() == 1


def test_the_diff_shows_the_prompt_line_by_line(client, admin_user):
    agent = make_agent(prompt="keep this\nold line\n")
    agent.prompt = "keep this\nnew line\n"
    save_agent(agent, Actor.system())
    client.force_login(admin_user)
    first, last = agent.history.earliest(), agent.history.latest()
    url = reverse("agents:diff", args=[agent.name])  # the admin's versions list links here
    page = client.get(url, {"from": first.history_id, "to": last.history_id}).content.decode()
    assert '<li class="removed">old line</li>' in page
    assert '<li class="added">new line</li>' in page
    assert '<li class="same">keep this</li>' in page


def test_rollback_from_the_admin_makes_a_new_version(client, editor):
    agent = make_agent(description="v1")
    first = agent.history.get()
    agent.description = "v2"
    save_agent(agent, Actor.system())
    client.force_login(editor)
    client.post(reverse("admin:agents_agent_rollback", args=[agent.pk, first.history_id]))
    agent.refresh_from_db()
    assert agent.description == "v1"
    assert agent.history.count() == 3
    assert agent.history.latest().history_user == editor
    entry = AuditEntry.objects.get(action="agent.rollback")
    assert (entry.actor_username, entry.source) == ("eddie", "admin")


def test_bulk_delete_asks_for_confirmation_then_deletes_and_audits(client, admin_user):
    one, two = make_agent("one"), make_agent("two")
    client.force_login(admin_user)
    url = reverse("admin:agents_agent_changelist")
    ask = client.post(url, {"action": "delete_selected", "_selected_action": [one.pk, two.pk]})
    assert "Are you sure" in ask.content.decode()
    assert Agent.objects.count() == 2
    client.post(
        url, {"action": "delete_selected", "_selected_action": [one.pk, two.pk], "post": "yes"}
    )
    assert Agent.objects.count() == 0
    assert set(
        AuditEntry.objects.filter(action="agent.delete").values_list("object_name", flat=True)
    ) == {"one", "two"}


def test_the_admin_delete_stops_the_agents_runs_first_and_says_what_goes(client, editor):
    from runs.models import Run

    agent = make_agent("busy")
    queued = Run.objects.create(agent=agent, trigger="manual", state=Run.State.QUEUED)
    Run.objects.create(agent=agent, trigger="manual", state="succeeded", log_path="runs/x/a.log")
    client.force_login(editor)
    url = reverse("admin:agents_agent_delete", args=[agent.pk])
    ask = client.get(url).content.decode()
    # Counted, not every run listed; an editor may delete an agent with its runs.
    assert "busy: 2 runs and 1 log file (1 active: cancelled first, and waited for)" in ask
    assert "Cannot delete" not in ask
    response = client.post(url, {"post": "yes"}, follow=True)
    assert "Deleted busy, with 2 run(s) and 1 log file(s)." in response.content.decode()
    assert not Agent.objects.exists() and not Run.objects.exists()
    cancel = AuditEntry.objects.get(action="run.cancel")
    assert (cancel.object_id, cancel.message) == (str(queued.pk), "stopped to delete the agent")
    assert AuditEntry.objects.get(action="agent.delete").source == "admin"


def test_the_admin_bulk_delete_keeps_an_agent_whose_run_does_not_stop(
    client, admin_user, monkeypatch
):
    from runs import services
    from runs.models import Run

    monkeypatch.setattr(services, "delete_wait_seconds", lambda: 0.2)
    calm, stuck = make_agent("calm"), make_agent("stuck")
    run = Run.objects.create(agent=stuck, trigger="manual", state=Run.State.RUNNING)
    client.force_login(admin_user)
    url = reverse("admin:agents_agent_changelist")
    response = client.post(
        url,
        {"action": "delete_selected", "_selected_action": [calm.pk, stuck.pk], "post": "yes"},
        follow=True,
    )
    html = response.content.decode()
    assert "Deleted calm" in html
    # The admin writes messages with a capital letter.
    assert "Stuck was not deleted" in html and f"#{run.pk} (running)" in html
    assert list(Agent.objects.values_list("name", flat=True)) == ["stuck"]


def test_bulk_enable_and_disable(client, operator):
    one, two = make_agent("one"), make_agent("two", enabled=False)
    client.force_login(operator)
    url = reverse("admin:agents_agent_changelist")
    client.post(url, {"action": "disable_selected", "_selected_action": [one.pk, two.pk]})
    assert not Agent.objects.filter(enabled=True).exists()
    client.post(url, {"action": "enable_selected", "_selected_action": [one.pk, two.pk]})
    assert Agent.objects.filter(enabled=True).count() == 2
    assert AuditEntry.objects.filter(action="agent.enable").count() == 2


def test_create_from_a_template_in_the_admin(client, editor):
    from agents import catalogue

    template = catalogue.list_templates()[0]
    client.force_login(editor)
    response = client.post(
        reverse("admin:agents_agent_from_template"),
        {"template": template.name, "name": "my-agent", "working_dir": "/srv/repo"},
    )
    assert response.status_code == 302
    agent = Agent.objects.get(name="my-agent")
    assert agent.working_dir == "/srv/repo"
    assert agent.enabled is False
    assert agent.history.latest().history_user == editor
