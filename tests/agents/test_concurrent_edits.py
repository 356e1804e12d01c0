"""Two people editing one agent never silently overwrite each other (DESIGN.md §4 "People"):
a save after someone else's, from a form or a rollback page opened before it, is refused with
the difference, on the pages and in the admin, keeping what the person typed; taking the
current version or saving over it is a choice of its own. A save that changes nothing is not a
conflict, and neither is one the other save cannot be undone by."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from agents.models import Agent
from agents.services import EditConflict, save_agent, set_enabled
from audit.actor import Actor
from audit.models import AuditEntry
from tests.agents.test_views import as_user, form_data, page
from tests.audit.test_roles import edit_form_data
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def saved_by_someone_else(agent_name: str = "cron-git", **fields) -> None:
    """Another person's save, made between a form's opening and its save."""
    agent = Agent.objects.get(name=agent_name)
    for field, value in fields.items():
        setattr(agent, field, value)
    save_agent(agent, Actor.system(), reason="The other tab")


def edit_url(name: str = "cron-git") -> str:
    return reverse("agents:edit", args=[name])


def opened_form(client, name: str = "cron-git", **changes) -> dict:
    """The edit form as the person's browser holds it: drawn now, with their changes."""
    return form_data(page(client, edit_url(name)), edit_url(name), **changes)


# --- The pages' edit form ---------------------------------------------------------------------


def test_a_save_after_someone_elses_is_refused_showing_what_changed_and_keeping_the_input(
    client, editor
):
    agent = make_agent(description="first words", prompt="")
    as_user(client, editor)
    mine = opened_form(client, command="echo mine")
    saved_by_someone_else(description="their words")

    response = client.post(edit_url(), mine)

    assert response.status_code == 409
    html = response.content.decode()
    assert "cron-git was changed after you opened this page" in html
    assert "Nothing was saved." in html
    # What they changed, from the version the form was opened at to the current one.
    conflict = html[html.index('id="edit-conflict"') :]
    assert "Version 1" in conflict and "version 2" in conflict
    assert 'data-field="description"' in conflict
    assert "first words" in conflict and "their words" in conflict
    # What this person changed, and their input still in the form.
    assert 'data-field="command"' in conflict and "echo mine" in conflict
    assert response.context["form"]["command"].value() == "echo mine"
    # Nothing of theirs was saved; the other save stands.
    agent.refresh_from_db()
    assert (agent.description, agent.command) == ("their words", "echo hello")
    assert agent.history.count() == 2
    assert not AuditEntry.objects.filter(action="agent.update", actor_username="eddie").exists()


def test_pressing_save_again_is_refused_again_until_the_person_chooses(client, editor):
    make_agent(description="first words")
    as_user(client, editor)
    mine = opened_form(client, command="echo mine")
    saved_by_someone_else(description="their words")
    refused = client.post(edit_url(), mine)
    again = form_data(refused.content.decode(), edit_url())
    assert again["based_on_version"] == mine["based_on_version"]  # still the one it opened at
    assert client.post(edit_url(), again).status_code == 409
    assert Agent.objects.get().command == "echo hello"


def test_saving_over_the_other_version_is_a_deliberate_choice(client, editor):
    make_agent(description="first words")
    as_user(client, editor)
    mine = opened_form(client, command="echo mine")
    saved_by_someone_else(description="their words")
    refused = client.post(edit_url(), mine).content.decode()
    button = re.search(r'<button type="submit" name="replace_version" value="(\d+)"', refused)
    assert button is not None and "Save over version 2" in refused
    # The default button (Enter) is Save, which is refused again; the other save is replaced
    # only by the button that says so.
    assert refused.index('class="primary">Save</button>') < button.start()

    data = form_data(refused, edit_url(), replace_version=button[1])
    response = client.post(edit_url(), data, follow=True)

    assert "Saved cron-git: version 3." in response.content.decode()
    agent = Agent.objects.get()
    # Mine applied onto theirs: their description stays, my command lands.
    assert (agent.command, agent.description) == ("echo mine", "their words")


def test_saving_over_undoes_only_the_fields_both_people_changed(client, editor):
    make_agent(description="first words", prompt="first prompt")
    as_user(client, editor)
    mine = opened_form(client, description="my words", prompt="my prompt")
    saved_by_someone_else(description="their words", command="echo theirs")
    refused = client.post(edit_url(), mine).content.decode()
    button = re.search(r'<button type="submit" name="replace_version" value="(\d+)"', refused)
    assert button is not None
    client.post(edit_url(), form_data(refused, edit_url(), replace_version=button[1]))
    agent = Agent.objects.get()
    assert (agent.description, agent.prompt) == ("my words", "my prompt")  # both mine
    assert agent.command == "echo theirs"  # only theirs: kept


def test_saving_over_a_rename_keeps_the_new_name(client, editor):
    make_agent("disk-report", description="first words")
    as_user(client, editor)
    mine = opened_form(client, "disk-report", description="my words")
    saved_by_someone_else("disk-report", name="disk-report-2")
    refused = client.post(edit_url("disk-report"), mine)
    assert refused.status_code == 409
    html = refused.content.decode()
    button = re.search(r'<button type="submit" name="replace_version" value="(\d+)"', html)
    # The refusal's form posts to the agent under its new name.
    target = edit_url("disk-report-2")
    assert f'action="{target}"' in html
    client.post(target, form_data(html, target, replace_version=button[1]))
    agent = Agent.objects.get()
    assert (agent.name, agent.description) == ("disk-report-2", "my words")


def test_taking_the_current_version_draws_the_form_again_from_it(client, editor):
    make_agent(description="first words")
    as_user(client, editor)
    mine = opened_form(client, command="echo mine")
    saved_by_someone_else(description="their words")
    refused = client.post(edit_url(), mine).content.decode()
    assert f'href="{edit_url()}">Take version 2 (drop my changes)</a>' in refused

    fresh = opened_form(client)
    assert fresh["description"] == "their words" and fresh["command"] == "echo hello"
    assert fresh["based_on_version"] == str(Agent.objects.get().history.latest().history_id)
    assert client.post(edit_url(), {**fresh, "command": "echo mine"}).status_code == 302
    assert Agent.objects.get().description == "their words"


def test_a_form_saved_unchanged_after_someone_elses_save_changes_nothing(client, editor):
    make_agent(description="first words")
    as_user(client, editor)
    unchanged = opened_form(client)
    saved_by_someone_else(description="their words")

    response = client.post(edit_url(), unchanged, follow=True)

    assert "Nothing changed." in response.content.decode()
    assert Agent.objects.get().description == "their words"  # not undone
    assert Agent.history.count() == 2


def test_making_the_change_someone_else_made_is_not_a_conflict(client, editor):
    make_agent(description="first words")
    as_user(client, editor)
    same = opened_form(client, description="their words")
    saved_by_someone_else(description="their words")
    response = client.post(edit_url(), same, follow=True)
    assert "Nothing changed." in response.content.decode()
    assert Agent.history.count() == 2


def test_a_pause_in_between_does_not_block_an_editor_who_cannot_undo_it(client, editor, operator):
    agent = make_agent(enabled=True)
    as_user(client, editor)
    mine = opened_form(client, command="echo mine")
    set_enabled(agent, False, Actor(operator, "web"))

    response = client.post(edit_url(), mine)

    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.command, agent.enabled) == ("echo mine", False)


def test_a_pause_in_between_blocks_an_operators_form_that_would_resume_it(
    client, admin_user, operator
):
    agent = make_agent(enabled=True)
    as_user(client, admin_user)
    mine = opened_form(client, command="echo mine")
    assert mine["enabled"] == "on"
    set_enabled(agent, False, Actor(operator, "web"))

    response = client.post(edit_url(), mine)

    assert response.status_code == 409
    assert 'data-field="enabled"' in response.content.decode()
    agent.refresh_from_db()
    assert (agent.command, agent.enabled) == ("echo hello", False)


def test_a_form_whose_agent_was_renamed_since_is_refused_showing_the_rename(client, editor):
    make_agent("old-name")
    as_user(client, editor)
    mine = opened_form(client, "old-name", command="echo mine")
    saved_by_someone_else("old-name", name="new-name")

    response = client.post(edit_url("old-name"), mine)

    assert response.status_code == 409
    html = response.content.decode()
    assert 'data-field="name"' in html and "new-name" in html
    # The form now posts to the agent's new address.
    assert f'action="{edit_url("new-name")}"' in html
    assert Agent.objects.get().command == "echo hello"


def test_a_version_of_another_agent_is_no_way_around_the_check(client, editor):
    make_agent()
    other = make_agent("other")
    as_user(client, editor)
    mine = opened_form(client, command="echo mine")
    saved_by_someone_else(description="their words")
    forged = {**mine, "based_on_version": str(other.history.latest().history_id)}
    response = client.post(edit_url(), forged)
    assert response.status_code == 409
    assert "This page was not opened at a version of cron-git" in response.content.decode()
    assert Agent.objects.get(name="cron-git").command == "echo hello"


def test_the_save_itself_checks_the_version_under_the_agents_lock(client, editor, monkeypatch):
    # The other save lands after the form's own check and before the save: the service, which
    # checks again under the lock, refuses it; the page draws the refusal all the same.
    make_agent(description="first words")
    as_user(client, editor)
    mine = opened_form(client, command="echo mine")
    from cronos_site.web.views import agents as views

    real = views.save_agent

    def other_save_lands_first(agent, actor, **kwargs):
        saved_by_someone_else(description="their words")
        return real(agent, actor, **kwargs)

    monkeypatch.setattr(views, "save_agent", other_save_lands_first)
    response = client.post(edit_url(), mine)

    assert response.status_code == 409
    assert 'data-field="description"' in response.content.decode()
    agent = Agent.objects.get()
    assert (agent.command, agent.description) == ("echo hello", "their words")


def test_the_service_refuses_a_save_based_on_an_older_version():
    agent = make_agent(description="first words")
    opened_at = agent.history.latest().history_id
    saved_by_someone_else(description="their words")
    stale = Agent.objects.get()
    stale.description, stale.command = "first words", "echo mine"

    with pytest.raises(EditConflict) as refused:
        save_agent(stale, Actor.system(), based_on=opened_at)

    assert refused.value.own == {"command": ["echo hello", "echo mine"]}
    assert refused.value.current == agent.history.latest().history_id
    assert Agent.objects.get().description == "their words"


def test_pausing_a_stale_copy_keeps_what_was_saved_since(operator):
    make_agent(enabled=True)
    stale = Agent.objects.get()  # read before the other save, as a list of agents is
    saved_by_someone_else(command="echo theirs")
    assert set_enabled(stale, False, Actor(operator, "web")) is True
    agent = Agent.objects.get()
    assert (agent.enabled, agent.command) == (False, "echo theirs")
    assert agent.history.latest().command == "echo theirs"  # the version holds it too
    assert stale.command == "echo theirs"


# --- Rollback -------------------------------------------------------------------------------


def test_a_rollback_page_opened_before_another_save_is_refused_showing_it(client, editor):
    agent = make_agent(description="first words")
    saved_by_someone_else(description="second words")
    first = agent.history.earliest()
    url = reverse("agents:rollback", args=[agent.name, first.history_id])
    as_user(client, editor)
    opened = form_data(page(client, url), url)
    saved_by_someone_else(command="echo theirs")

    response = client.post(url, opened)

    assert response.status_code == 409
    html = response.content.decode()
    assert "Nothing was rolled back." in html
    conflict = html[html.index('id="edit-conflict"') :]
    assert 'data-field="command"' in conflict and "echo theirs" in conflict
    assert Agent.objects.get().command == "echo theirs" and agent.history.count() == 3
    # The page drawn again is from the current version: rolling back now is deliberate.
    assert "Roll back to version 1 over version 3" in html
    again = client.post(url, form_data(html, url), follow=True).content.decode()
    assert "Rolled cron-git back to version 1: now version 4." in again
    assert Agent.objects.get().command == "echo hello"


# --- The admin ------------------------------------------------------------------------------


def test_the_admin_form_refuses_a_save_after_someone_elses(client, admin_user):
    agent = make_agent(description="first words")
    client.force_login(admin_user)
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    assert 'name="based_on_version"' in client.get(url).content.decode()
    mine = edit_form_data(agent, command="echo mine")
    saved_by_someone_else(description="their words")

    response = client.post(url, mine)

    assert response.status_code == 409
    html = response.content.decode()
    assert "cron-git was changed after you opened this page" in html
    assert 'data-field="description"' in html and "their words" in html
    assert response.context["adminform"].form["command"].value() == "echo mine"
    assert Agent.objects.get().command == "echo hello"

    replace = re.search(r'name="replace_version" value="(\d+)"', html)
    assert replace is not None
    assert client.post(url, {**mine, "replace_version": replace[1]}).status_code == 302
    assert Agent.objects.get().command == "echo mine"


def test_the_admin_draws_the_refusal_when_the_other_save_lands_after_its_check(
    client, admin_user, monkeypatch
):
    # The form's check ran before the other save landed (as if it missed it); the save, which
    # checks again under the lock, refuses, and the admin draws the form again with the refusal.
    agent = make_agent(description="first words")
    client.force_login(admin_user)
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    mine = edit_form_data(agent, command="echo mine")
    saved_by_someone_else(description="their words")
    from agents import forms

    real, checks = forms.saved_since, []

    def check_before_the_other_save(*args, **kwargs):
        checks.append(True)
        return None if len(checks) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(forms, "saved_since", check_before_the_other_save)
    response = client.post(url, mine)

    assert len(checks) == 2  # the refused save, then the form drawn again
    assert response.status_code == 409
    assert "was changed after you opened this page" in response.content.decode()
    agent.refresh_from_db()
    assert (agent.command, agent.description) == ("echo hello", "their words")


def test_an_admin_rollback_after_another_save_is_refused_with_a_link_to_the_difference(
    client, admin_user
):
    agent = make_agent(description="first words")
    saved_by_someone_else(description="second words")
    first = agent.history.earliest()
    client.force_login(admin_user)
    versions = page(client, reverse("admin:agents_agent_versions", args=[agent.pk]))
    opened_at = re.search(r'name="based_on_version" value="(\d+)"', versions)
    assert opened_at is not None
    saved_by_someone_else(command="echo theirs")

    url = reverse("admin:agents_agent_rollback", args=[agent.pk, first.history_id])
    html = client.post(url, {"based_on_version": opened_at[1]}, follow=True).content.decode()

    assert "Nothing was rolled back: cron-git was saved again (version 3)" in html
    compare = reverse("agents:diff", args=[agent.name])
    assert (
        f'href="{compare}?from={opened_at[1]}&amp;to={agent.history.latest().history_id}"' in html
    )
    agent.refresh_from_db()
    assert (agent.description, agent.command) == ("second words", "echo theirs")


# --- A real race --------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_saves_from_one_version_at_the_same_instant_cannot_both_pass(editor, admin_user):
    make_agent(description="first words")
    tabs = []
    for user, command in ((editor, "echo first tab"), (admin_user, "echo second tab")):
        client = Client()
        client.force_login(user)
        tabs.append((client, opened_form(client, command=command)))
    barrier = threading.Barrier(len(tabs))
    statuses: list[int] = [0] * len(tabs)
    errors: list[BaseException] = []

    def save(index: int) -> None:
        client, data = tabs[index]
        try:
            barrier.wait(timeout=10)
            statuses[index] = client.post(edit_url(), data).status_code
        except BaseException as exc:  # reported in the test's own thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=save, args=(i,), daemon=True) for i in range(len(tabs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sorted(statuses) == [302, 409]
    won = statuses.index(302)
    assert Agent.objects.get().command == ("echo first tab", "echo second tab")[won]
    assert Agent.history.count() == 2
