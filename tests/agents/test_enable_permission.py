"""Enabling an agent lets its schedule fire, so it needs the operator's permission on every path
that can change `enabled` (issue #12): the service, the edit page, the wizard, the toggle and
bulk endpoints, rollback, the admin's change and add forms, actions and rollback, and the import.

On each, an editor who is not an operator tries to enable and to pause: the row stays as it was
(new agents start paused) while the rest of the save goes ahead, and the scheduler starts
nothing. An operator who is also an editor can, which shows each test can fail.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.urls import reverse

from agents.models import Agent
from agents.services import clone_agent, rollback_agent, save_agent, set_enabled
from audit import roles
from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import Run
from runs.scheduling.scheduler import Scheduler
from tests.agents.test_views import as_user, form_data, page
from tests.audit.test_roles import edit_form_data
from tests.db_clock import follow_the_test_clock
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-cronos"
FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "bin" / "claude"
# Saves happen at T0; an every-minute schedule has its next slot a minute later.
T0 = datetime(2026, 6, 15, 11, 58, 0, tzinfo=UTC)
EVERY_MINUTE = "* * * * *"


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    # Runs are counted after a scheduler pass at the next slot: one frozen clock for the
    # saves, the pass and the database.
    follow_the_test_clock(monkeypatch)
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def recording_engine(settings):
    # Nothing runs: the engine only remembers what it was handed.
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


@pytest.fixture
def operator_editor(django_user_model, operator):
    """An operator who is also an editor: may change agents and enable or pause them."""
    operator.groups.add(Group.objects.get(name=roles.EDITOR))
    return django_user_model.objects.get(pk=operator.pk)  # no permissions cached before


def paused(name: str = "nightly", **fields) -> Agent:
    return make_agent(name, schedule=EVERY_MINUTE, enabled=False, **fields)


def running(name: str = "nightly", **fields) -> Agent:
    return make_agent(name, schedule=EVERY_MINUTE, enabled=True, **fields)


def enabled(name: str = "nightly") -> bool:
    return Agent.objects.get(name=name).enabled


def runs_after_the_next_slot(clock) -> int:
    """How many runs exist after a scheduler pass at the next minute's slot."""
    clock.move_to(T0 + timedelta(minutes=1))
    Scheduler(RecordingEngine()).tick(T0 + timedelta(minutes=1))
    return Run.objects.count()


# --- The service: the one place the rule lives ------------------------------------------------


def test_an_editor_saving_enabled_true_keeps_the_agent_paused_and_saves_the_rest(editor, clock):
    agent = paused()
    agent.enabled = True
    agent.description = "changed"
    changes = save_agent(agent, Actor(editor, "web"))
    assert changes == {"description": ["nightly agent", "changed"]}
    assert agent.enabled is False
    row = Agent.objects.get()
    assert (row.enabled, row.description) == (False, "changed")
    entry = AuditEntry.objects.get(action="agent.update")
    assert "enabled" not in entry.changes
    assert runs_after_the_next_slot(clock) == 0


def test_an_editor_saving_enabled_false_keeps_the_agent_enabled(editor):
    agent = running()
    agent.enabled = False
    assert save_agent(agent, Actor(editor, "web")) == {}
    assert enabled() is True
    assert agent.history.count() == 1


def test_an_editor_saving_a_stale_copy_keeps_the_enabled_an_operator_saved_since(editor, operator):
    stale = paused()
    set_enabled(Agent.objects.get(), True, Actor(operator, "web"))
    stale.description = "changed"
    save_agent(stale, Actor(editor, "web"))
    assert enabled() is True and Agent.objects.get().description == "changed"


def test_a_new_agent_an_editor_saves_enabled_starts_paused(editor, clock):
    make_agent("fresh", actor=Actor(editor, "web"), schedule=EVERY_MINUTE, enabled=True)
    assert enabled("fresh") is False
    assert "enabled" not in AuditEntry.objects.get(action="agent.create").changes
    assert runs_after_the_next_slot(clock) == 0


def test_an_operator_who_is_an_editor_enables_and_pauses_through_a_save(operator_editor, clock):
    agent = paused()
    agent.enabled = True
    assert save_agent(agent, Actor(operator_editor, "web")) == {"enabled": [False, True]}
    assert enabled() is True
    assert runs_after_the_next_slot(clock) == 1
    agent.enabled = False
    save_agent(agent, Actor(operator_editor, "web"))
    assert enabled() is False


def test_an_editor_cannot_set_enabled_and_nothing_is_written(editor):
    agent = paused()
    with pytest.raises(PermissionDenied, match="lacks the permission agents.toggle_agent"):
        set_enabled(agent, True, Actor(editor, "web"))
    assert enabled() is False and agent.history.count() == 1


def test_an_editors_clone_of_an_enabled_agent_starts_paused(editor, clock):
    copy = clone_agent(running(), "nightly-copy", Actor(editor, "web"))
    assert copy.enabled is False and enabled("nightly-copy") is False
    assert Run.objects.count() == 0
    assert runs_after_the_next_slot(clock) == 1  # the original's, not the copy's
    assert Run.objects.get().agent.name == "nightly"


def enabled_then_paused_by_an_operator(operator) -> Agent:
    """Version 1 enabled, version 2 paused by an operator (who may)."""
    agent = running(description="first")
    set_enabled(agent, False, Actor(operator, "web"))
    return agent


def test_an_editors_rollback_restores_all_but_enabled(editor, operator, clock):
    agent = enabled_then_paused_by_an_operator(operator)
    first = agent.history.earliest()
    agent.description = "second"
    save_agent(agent, Actor(editor, "web"))
    changes = rollback_agent(agent, first.history_id, Actor(editor, "web"))
    assert changes == {"description": ["second", "first"]}
    row = Agent.objects.get()
    assert (row.enabled, row.description) == (False, "first")
    assert runs_after_the_next_slot(clock) == 0


def test_an_editors_rollback_to_a_paused_version_keeps_the_agent_enabled(editor, operator):
    agent = paused()
    set_enabled(agent, True, Actor(operator, "web"))
    assert rollback_agent(agent, agent.history.earliest().history_id, Actor(editor, "web")) == {}
    assert enabled() is True


def test_an_operator_who_is_an_editor_rolls_enabled_back_too(operator_editor, operator, clock):
    agent = enabled_then_paused_by_an_operator(operator)
    first = agent.history.earliest()
    assert rollback_agent(agent, first.history_id, Actor(operator_editor, "web")) == {
        "enabled": [False, True]
    }
    assert enabled() is True
    assert runs_after_the_next_slot(clock) == 1


# --- The pages --------------------------------------------------------------------------------


def edit_page(client, user, agent: Agent) -> tuple[str, str]:
    as_user(client, user)
    url = reverse("agents:edit", args=[agent.name])
    return url, page(client, url)


def test_the_edit_page_shows_an_editor_enabled_as_a_disabled_box_with_why(client, editor):
    _, html = edit_page(client, editor, paused())
    box = html[html.index('name="enabled"') - 200 : html.index('name="enabled"') + 200]
    assert "disabled" in box
    assert "Stays paused: enabling or pausing an agent needs the operator&#x27;s permission" in html


def test_the_edit_page_offers_an_operator_who_is_an_editor_the_enabled_box(client, operator_editor):
    _, html = edit_page(client, operator_editor, paused())
    box = html[html.index('name="enabled"') - 200 : html.index('name="enabled"') + 200]
    assert "disabled" not in box and "needs the operator" not in html


def test_a_crafted_edit_that_enables_keeps_the_agent_paused_and_saves_the_rest(
    client, editor, clock
):
    url, html = edit_page(client, editor, paused())
    data = form_data(html, url, enabled="on", description="changed")
    assert client.post(url, data).status_code == 302
    row = Agent.objects.get()
    assert (row.enabled, row.description) == (False, "changed")
    assert runs_after_the_next_slot(clock) == 0


def test_a_crafted_edit_that_pauses_keeps_the_agent_enabled_and_saves_the_rest(client, editor):
    url, html = edit_page(client, editor, running())
    data = form_data(html, url, enabled=None, description="changed")
    assert "enabled" not in data
    assert client.post(url, data).status_code == 302
    row = Agent.objects.get()
    assert (row.enabled, row.description) == (True, "changed")


def test_an_operator_who_is_an_editor_enables_and_pauses_on_the_edit_page(
    client, operator_editor, clock
):
    url, html = edit_page(client, operator_editor, paused())
    client.post(url, form_data(html, url, enabled="on"))
    assert enabled() is True
    assert runs_after_the_next_slot(clock) == 1
    html = page(client, url)
    client.post(url, form_data(html, url, enabled=None))
    assert enabled() is False


def test_an_editor_may_not_resume_or_pause_from_the_agent_page(client, editor):
    paused("off")
    running("on")
    as_user(client, editor)
    html = page(client, reverse("agents:detail", args=["off"]))
    assert "Resume</button>" not in html and "Resuming it needs an operator." in html
    toggle = reverse("agents:toggle", args=["off"])
    assert client.post(toggle, {"enabled": "1"}).status_code == 403
    assert client.post(reverse("agents:toggle", args=["on"]), {"enabled": "0"}).status_code == 403
    assert enabled("off") is False and enabled("on") is True


@pytest.mark.parametrize("action", ["enable", "disable"])
def test_an_editor_may_not_enable_or_pause_in_bulk(client, editor, action):
    paused("off")
    running("on")
    as_user(client, editor)
    response = client.post(reverse("agents:bulk"), {"action": action, "agents": ["off", "on"]})
    assert response.status_code == 403
    assert enabled("off") is False and enabled("on") is True


def test_the_wizard_ignores_a_crafted_enabled_and_creates_a_paused_clone(client, editor, clock):
    running("source")
    as_user(client, editor)
    new = reverse("agents:new")
    step2 = page(client, new, clone="source")
    data = form_data(step2, new, enabled="on", schedule=EVERY_MINUTE)
    html = client.post(new, data, follow=True).content.decode()
    assert "review it, then ask an operator to resume it" in html
    assert enabled("source-copy") is False
    assert runs_after_the_next_slot(clock) == 1  # the source's own
    assert Run.objects.get().agent.name == "source"


def test_the_wizard_ignores_a_crafted_enabled_from_a_template(client, editor):
    as_user(client, editor)
    new = reverse("agents:new")
    step2 = page(client, new, template="git-commit")
    data = form_data(step2, new, name="notes", working_dir="/tmp", enabled="on")
    assert client.post(new, data).status_code == 302
    assert enabled("notes") is False


def test_an_editors_rollback_page_says_enabled_stays_and_does_not_list_it(client, editor, operator):
    agent = enabled_then_paused_by_an_operator(operator)
    first = agent.history.earliest()
    as_user(client, editor)
    url = reverse("agents:rollback", args=[agent.name, first.history_id])
    html = page(client, url)
    assert 'data-field="enabled"' not in html and 'data-field="description"' not in html
    assert "Everything but whether it is enabled is rolled back: nightly stays paused" in html
    assert "Nothing else differs." in html


def test_an_editors_rollback_on_the_pages_restores_all_but_enabled_and_says_so(
    client, editor, operator, clock
):
    agent = enabled_then_paused_by_an_operator(operator)
    first = agent.history.earliest()
    agent.description = "second"
    save_agent(agent, Actor(editor, "web"))
    as_user(client, editor)
    url = reverse("agents:rollback", args=[agent.name, first.history_id])
    assert 'data-field="description"' in page(client, url)
    html = client.post(url, follow=True).content.decode()
    assert "Rolled nightly back to version 1" in html
    assert "Enabled was not rolled back. nightly stays paused" in html
    row = Agent.objects.get()
    assert (row.enabled, row.description) == (False, "first")
    assert runs_after_the_next_slot(clock) == 0


def test_an_operator_who_is_an_editor_sees_and_rolls_back_enabled_on_the_pages(
    client, operator_editor, operator
):
    agent = enabled_then_paused_by_an_operator(operator)
    first = agent.history.earliest()
    as_user(client, operator_editor)
    url = reverse("agents:rollback", args=[agent.name, first.history_id])
    assert 'data-field="enabled"' in page(client, url)
    html = client.post(url, follow=True).content.decode()
    assert "not rolled back" not in html
    assert enabled() is True


# --- The admin --------------------------------------------------------------------------------


def admin_change(client, user, agent: Agent, **overrides):
    client.force_login(user)
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    return client.post(url, edit_form_data(agent, **overrides), follow=True)


def test_the_admin_change_form_shows_an_editor_enabled_read_only_with_why(client, editor):
    agent = paused()
    client.force_login(editor)
    response = client.get(reverse("admin:agents_agent_change", args=[agent.pk]))
    assert response.context["adminform"].form.fields["enabled"].disabled
    html = response.content.decode()
    assert '<input type="checkbox" name="enabled" disabled' in html
    assert "Stays paused: enabling or pausing an agent needs the operator's permission" in html


def test_an_editor_enabling_in_the_admin_change_form_keeps_it_paused_and_saves_the_rest(
    client, editor, clock
):
    response = admin_change(client, editor, paused(), enabled="on", description="changed")
    assert response.status_code == 200 and response.redirect_chain
    row = Agent.objects.get()
    assert (row.enabled, row.description) == (False, "changed")
    assert runs_after_the_next_slot(clock) == 0


def test_an_editor_pausing_in_the_admin_change_form_keeps_it_enabled(client, editor):
    agent = running()
    data = edit_form_data(agent, description="changed")
    del data["enabled"]
    client.force_login(editor)
    client.post(reverse("admin:agents_agent_change", args=[agent.pk]), data)
    row = Agent.objects.get()
    assert (row.enabled, row.description) == (True, "changed")


def test_an_operator_who_is_an_editor_enables_in_the_admin_change_form(
    client, operator_editor, clock
):
    admin_change(client, operator_editor, paused(), enabled="on")
    assert enabled() is True
    assert runs_after_the_next_slot(clock) == 1


def test_an_editors_new_agent_in_the_admin_starts_paused(client, editor, clock):
    unsaved = Agent(name="fresh", runner=Agent.Runner.COMMAND, command="echo hi")
    data = edit_form_data(unsaved, working_dir="/tmp", schedule=EVERY_MINUTE, enabled="on")
    client.force_login(editor)
    response = client.post(reverse("admin:agents_agent_add"), data)
    assert response.status_code == 302
    assert enabled("fresh") is False
    assert runs_after_the_next_slot(clock) == 0


def test_an_operator_who_is_an_editor_adds_an_enabled_agent_in_the_admin(client, operator_editor):
    unsaved = Agent(name="fresh", runner=Agent.Runner.COMMAND, command="echo hi")
    data = edit_form_data(unsaved, working_dir="/tmp", schedule=EVERY_MINUTE, enabled="on")
    client.force_login(operator_editor)
    assert client.post(reverse("admin:agents_agent_add"), data).status_code == 302
    assert enabled("fresh") is True


def test_an_editors_crafted_save_as_new_in_the_admin_makes_a_paused_copy(client, editor, clock):
    # Django's change form takes `_saveasnew` even where the admin does not offer the button.
    agent = running()
    data = edit_form_data(agent, name="nightly-2", _saveasnew="Save as new")
    client.force_login(editor)
    client.post(reverse("admin:agents_agent_change", args=[agent.pk]), data)
    assert enabled("nightly-2") is False and enabled("nightly") is True
    assert runs_after_the_next_slot(clock) == 1  # the original's
    assert Run.objects.get().agent.name == "nightly"


@pytest.mark.parametrize("action", ["enable_selected", "disable_selected"])
def test_an_editor_has_no_enable_or_disable_action_in_the_admin(client, editor, action):
    off, on = paused("off"), running("on")
    client.force_login(editor)
    url = reverse("admin:agents_agent_changelist")
    assert action not in page(client, url)
    client.post(url, {"action": action, "_selected_action": [off.pk, on.pk]})
    assert enabled("off") is False and enabled("on") is True


def test_an_editors_clone_action_in_the_admin_makes_a_paused_copy(client, editor):
    agent = running()
    client.force_login(editor)
    url = reverse("admin:agents_agent_changelist")
    client.post(url, {"action": "clone_selected", "_selected_action": [agent.pk]})
    assert enabled("nightly-copy") is False


def test_an_editors_rollback_in_the_admin_restores_all_but_enabled_and_says_so(
    client, editor, operator, clock
):
    agent = enabled_then_paused_by_an_operator(operator)
    first = agent.history.earliest()
    agent.description = "second"
    save_agent(agent, Actor(editor, "web"))
    client.force_login(editor)
    versions = page(client, reverse("admin:agents_agent_versions", args=[agent.pk]))
    assert "Rolling back restores everything but whether the agent is enabled" in versions
    url = reverse("admin:agents_agent_rollback", args=[agent.pk, first.history_id])
    html = client.post(url, follow=True).content.decode()
    assert "Enabled was not rolled back. nightly stays paused" in html
    row = Agent.objects.get()
    assert (row.enabled, row.description) == (False, "first")
    assert runs_after_the_next_slot(clock) == 0


def test_an_operator_who_is_an_editor_rolls_enabled_back_in_the_admin(
    client, operator_editor, operator
):
    agent = enabled_then_paused_by_an_operator(operator)
    first = agent.history.earliest()
    client.force_login(operator_editor)
    client.post(reverse("admin:agents_agent_rollback", args=[agent.pk, first.history_id]))
    assert enabled() is True


# --- The import -------------------------------------------------------------------------------


@pytest.fixture
def prototype(tmp_path, monkeypatch, settings) -> Path:
    """The prototype's agents folder (cron-git enabled, weekly-report paused) on a host they
    can run on, so that nothing is imported paused for another reason."""
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    source = tmp_path / "source"
    shutil.copytree(LEGACY / "agents", source / "agents", copy_function=shutil.copyfile)
    return source


def cronos_import(source: Path, *user: str) -> str:
    out = StringIO()
    call_command("cronos_import", str(source), *user, stdout=out)
    return out.getvalue()


def test_an_editors_import_creates_the_agents_paused_and_says_why(editor, prototype, clock):
    output = cronos_import(prototype, "--user", editor.username)
    assert "eddie may not enable or pause agents (agents.toggle_agent)" in output
    assert enabled("cron-git") is False and enabled("weekly-report") is False
    Agent.objects.filter(name="cron-git").update(schedule=EVERY_MINUTE)
    assert runs_after_the_next_slot(clock) == 0


def test_an_editors_import_keeps_existing_agents_enabled_or_paused(editor, operator, prototype):
    cronos_import(prototype)  # the shell account: cron-git enabled, weekly-report paused
    set_enabled(Agent.objects.get(name="cron-git"), False, Actor(operator, "web"))
    set_enabled(Agent.objects.get(name="weekly-report"), True, Actor(operator, "web"))
    yaml_path = prototype / "agents/cron-git/agent.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("max_turns: 8", "max_turns: 9"))
    cronos_import(prototype, "--user", editor.username)
    cron_git = Agent.objects.get(name="cron-git")
    assert (cron_git.enabled, cron_git.max_turns) == (False, 9)
    assert enabled("weekly-report") is True


def test_an_operator_who_is_an_editor_imports_enabled_as_the_files_say(operator_editor, prototype):
    output = cronos_import(prototype, "--user", operator_editor.username)
    assert "may not enable" not in output
    assert enabled("cron-git") is True and enabled("weekly-report") is False


def test_the_shell_account_imports_enabled_as_the_files_say(prototype):
    output = cronos_import(prototype)
    assert "may not enable" not in output
    assert enabled("cron-git") is True
