"""The pages of the triggers beyond cron (issue #17), through Django's test client: the agent
page's Triggers section (a webhook added with its secret shown once, rotated, disabled,
deleted), its delivery log, "Run with variables", and on the run page what started the run and
"Run again" (an exact re-run). What each role sees and may do; no inline code in the new
templates (the Content-Security-Policy)."""

from __future__ import annotations

import html as entities
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest
import time_machine
from django.conf import settings as django_settings
from django.urls import reverse

from agents import secrets
from agents.models import WebhookTrigger
from agents.services import save_agent
from agents.triggers import create_trigger, token_hash
from audit.actor import Actor
from audit.models import AuditEntry
from cronos_site.web import triggerpage
from runs.models import Delivery, Run
from runs.services import trigger_run
from tests.factories import make_agent, with_secret
from tests.test_csp import inline_code

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
SECRET = re.compile(r"data-secret>([^<]+)<")
NEW_TEMPLATES = [
    "agents/triggers.html",
    "agents/delivery_log.html",
]


@pytest.fixture(autouse=True)
def site(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    settings.CRONOS_BASE_URL = "https://cronos.example.com"


@pytest.fixture(autouse=True)
def frozen():
    """Rotation overlaps and the delivery log's times count from now: one fixed instant."""
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def agent():
    # Its own plain variables: the only names a run of it may be given.
    return make_agent(
        "deploy-notes",
        schedule="",
        variables=[secrets.plain("TARGET", "staging"), secrets.plain("DRY", "1")],
    )


def page(client, user, url: str) -> str:
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def agent_page(client, user, agent) -> str:
    return page(client, user, reverse("agents:detail", args=[agent.name]))


def add_webhook(client, agent, *, htmx: bool = True, **fields):
    values = {"name": "release", "auth": "bearer", "payload": "file", "rate_per_minute": "60"}
    values.update(fields)
    return client.post(
        reverse("agents:trigger_add", args=[agent.name]), values, headers=HX if htmx else {}
    )


def secret_in(html: str) -> str:
    found = SECRET.search(html)
    assert found, "no secret shown"
    return found[1]


def delivery_rows(html: str) -> list[str]:
    """The delivery log's rows, newest first (filesizeformat's no-break spaces as spaces)."""
    log = html[html.index('id="delivery-log"') :].split("</table>")[0]
    return [row.replace("\xa0", " ") for row in log.split('<tr class="delivery"')[1:]]


def deliver(client, trigger: WebhookTrigger, token: str, body: bytes = b"{}", **headers):
    return client.post(
        reverse("hook", args=[str(trigger.uuid)]),
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", **headers},
    )


def bearer_trigger(agent, name: str = "release") -> tuple[WebhookTrigger, str]:
    made = create_trigger(agent, Actor.system(), name=name)
    return made.trigger, made.secret


def finished(run: Run) -> None:
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED, finished_at=NOW, exit_code=0)


# --- Viewers: the list and the log, no secret, no control ------------------------------------


def test_a_viewer_sees_the_triggers_and_the_delivery_log_but_no_controls(client, viewer, agent):
    trigger, token = bearer_trigger(agent)
    assert deliver(client, trigger, token, b'{"ref": "main"}').status_code == 202
    assert deliver(client, trigger, "cronos_wh_wrong").status_code == 401
    run = Run.objects.get(agent=agent)

    html = agent_page(client, viewer, agent)
    section = html[html.index('id="triggers"') :]
    assert 'data-trigger="release"' in section
    assert f"https://cronos.example.com/hooks/{trigger.uuid}" in section
    assert "Bearer token" in section and "60/min" in section
    # No control and no secret, not even its hash.
    for control in ("Add a webhook", "Rotate", "Delete", "Disable", "data-webhook-form"):
        assert control not in section, control
    assert token not in html and trigger.secret not in html
    assert reverse("agents:trigger_add", args=[agent.name]) not in html
    # The log: both deliveries, newest first, coloured by outcome; the run the first started.
    refused, started = delivery_rows(html)
    assert 'data-outcome="unauthorized"' in refused and 'data-outcome="started"' in started
    assert "outcome-ok" in started and "<td>202</td>" in started
    assert f'href="{reverse("runs:detail", args=[run.pk])}"' in started
    assert "outcome-bad" in refused and "<td>401</td>" in refused and "wrong token" in refused
    assert "<td>127.0.0.1</td>" in refused and "<td>2 bytes</td>" in refused
    assert "<td>15 bytes</td>" in started


def test_the_delivery_log_merges_every_trigger_newest_first_up_to_its_length(client, viewer, agent):
    first, first_token = bearer_trigger(agent, "first")
    second, second_token = bearer_trigger(agent, "second")
    for minute in range(3):
        with time_machine.travel(NOW + timedelta(minutes=2 * minute), tick=False):
            deliver(client, first, first_token, **{"Idempotency-Key": f"first-{minute}"})
        with time_machine.travel(NOW + timedelta(minutes=2 * minute + 1), tick=False):
            deliver(client, second, "wrong")
    other = make_agent("other-agent", schedule="")
    other_trigger, other_token = bearer_trigger(other, "first")
    deliver(client, other_trigger, other_token)

    with patch.object(triggerpage, "DELIVERIES_SHOWN", 4):
        client.force_login(viewer)
        html = client.get(reverse("agents:detail", args=[agent.name]), headers=HX)
    rows = delivery_rows(html.content.decode())
    assert [row.split("<td>")[2].split("<")[0] for row in rows] == [
        "second",
        "first",
        "second",
        "first",
    ]
    assert "first-2" in rows[1] and "first-1" in rows[3]  # the latest, newest first
    assert "The 4 latest deliveries." in html.content.decode()


def test_a_viewer_cannot_use_the_controls(client, viewer, agent):
    trigger, _ = bearer_trigger(agent)
    client.force_login(viewer)
    posts = [
        (reverse("agents:trigger_add", args=[agent.name]), {"name": "other", "auth": "bearer"}),
        (reverse("agents:trigger_rotate", args=[agent.name, trigger.pk]), {"overlap": "0"}),
        (reverse("agents:trigger_enabled", args=[agent.name, trigger.pk]), {"enabled": "0"}),
        (reverse("agents:trigger_delete", args=[agent.name, trigger.pk]), {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    kept = WebhookTrigger.objects.get()
    assert (kept.name, kept.enabled, kept.deleted_at, kept.secret) == (
        "release",
        True,
        None,
        trigger.secret,
    )


def test_an_agent_without_triggers_shows_no_delivery_log(client, viewer, agent):
    html = agent_page(client, viewer, agent)
    assert "data-no-triggers" in html and 'id="delivery-log"' not in html


# --- Adding a webhook: the secret once ---------------------------------------------------------


def test_an_editor_adds_a_bearer_webhook_and_sees_its_token_once(client, editor, agent):
    client.force_login(editor)
    response = add_webhook(client, agent)
    assert response.status_code == 200
    html = response.content.decode()
    token = secret_in(html)
    trigger = WebhookTrigger.objects.get(agent=agent)
    assert trigger.secret == token_hash(token)  # only its hash is kept
    assert "Copy it now: it will not be shown again." in html
    assert 'hx-history="false"' in html  # htmx keeps no copy of it
    url = f"https://cronos.example.com/hooks/{trigger.uuid}"
    assert f"-H 'Authorization: Bearer {token}'" in html and "Idempotency-Key" in html
    assert url in html
    assert AuditEntry.objects.filter(action="webhook.create", actor_username="eddie").exists()

    # Never again: not on the page, not in its live part, not after another action.
    assert token not in agent_page(client, editor, agent)
    status = client.get(reverse("agents:detail", args=[agent.name]), headers=HX)
    assert token not in status.content.decode()
    again = client.post(
        reverse("agents:trigger_enabled", args=[agent.name, trigger.pk]),
        {"enabled": "1"},
        headers=HX,
    )
    assert token not in again.content.decode() and "data-secret-once" not in again.content.decode()
    # And the token works.
    assert deliver(client, trigger, token).status_code == 202


def test_without_javascript_the_whole_page_shows_the_secret_once(client, editor, agent):
    client.force_login(editor)
    response = add_webhook(client, agent, htmx=False, name="plain")
    assert response.status_code == 200
    html = response.content.decode()
    token = secret_in(html)
    assert "<title>deploy-notes" in html and "Added the webhook plain." in html
    assert token not in agent_page(client, editor, agent)


def test_a_github_webhook_says_where_to_paste_its_secret(client, editor, agent):
    client.force_login(editor)
    html = add_webhook(client, agent, name="github-push", auth="github").content.decode()
    secret = secret_in(html)
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert "Settings → Webhooks" in html and "<code>application/json</code>" in html
    assert "curl" not in html[html.index("data-secret-once") :].split("</div>")[0]
    assert secret not in WebhookTrigger.objects.get().secret  # kept encrypted


@pytest.mark.parametrize("htmx", [True, False])
def test_a_refused_webhook_keeps_what_was_typed(client, editor, agent, htmx):
    client.force_login(editor)
    response = add_webhook(
        client,
        agent,
        htmx=htmx,
        name="Release Hook",
        filter_path="$.ref",
        filter_pattern="",
        rate_per_minute="90",
    )
    assert response.status_code == (200 if htmx else 400)
    html = response.content.decode()
    assert "a name is 1 to 64 lower-case letters" in html
    assert "a filter needs both a JSON path and a pattern" in html
    assert 'value="Release Hook"' in html and 'value="$.ref"' in html and 'value="90"' in html
    assert '<details class="add-webhook" open>' in html
    assert "data-secret-once" not in html
    assert not WebhookTrigger.objects.exists()


def test_a_name_already_taken_is_refused_next_to_the_name(client, editor, agent):
    bearer_trigger(agent, "release")
    client.force_login(editor)
    html = add_webhook(client, agent, name="release").content.decode()
    assert "deploy-notes already has a trigger named release" in html
    assert WebhookTrigger.objects.count() == 1


# --- Rotating, disabling, deleting --------------------------------------------------------------


def test_rotating_shows_the_new_secret_once_and_the_old_one_works_for_the_overlap(
    client, editor, agent
):
    trigger, old = bearer_trigger(agent)
    client.force_login(editor)
    url = reverse("agents:trigger_rotate", args=[agent.name, trigger.pk])
    response = client.post(url, {"overlap": "3600"}, headers=HX)
    html = response.content.decode()
    new = secret_in(html)
    assert new != old and "New secret of release" in html
    assert "The previous secret keeps working until" in html and "2026-06-15 13:00" in html
    assert deliver(client, trigger, new).status_code == 202
    assert deliver(client, trigger, old).status_code == 202  # the overlap
    assert new not in agent_page(client, editor, agent)
    assert AuditEntry.objects.filter(action="webhook.rotate").count() == 1

    # No overlap: the one before stops at once.
    newest = secret_in(client.post(url, {"overlap": "0"}, headers=HX).content.decode())
    assert deliver(client, trigger, new).status_code == 401
    assert deliver(client, trigger, newest).status_code == 202


def test_a_rotation_needs_one_of_the_offered_overlaps(client, editor, agent):
    trigger, _ = bearer_trigger(agent)
    client.force_login(editor)
    url = reverse("agents:trigger_rotate", args=[agent.name, trigger.pk])
    response = client.post(url, {"overlap": "99999999"})
    assert response.status_code == 400
    assert "Pick how long the previous secret keeps working." in response.content.decode()
    assert WebhookTrigger.objects.get().secret == trigger.secret


def test_a_disabled_webhook_answers_403_until_it_is_enabled(client, editor, agent):
    trigger, token = bearer_trigger(agent)
    client.force_login(editor)
    url = reverse("agents:trigger_enabled", args=[agent.name, trigger.pk])
    response = client.post(url, {"enabled": "0"}, follow=True)
    html = response.content.decode()
    assert "Disabled the webhook release: its URL answers 403" in html
    assert 'data-trigger="release"' in html and ">disabled</span>" in html
    assert deliver(client, trigger, token).status_code == 403
    client.post(url, {"enabled": "1"})
    assert WebhookTrigger.objects.get().enabled
    assert deliver(client, trigger, token).status_code == 202
    assert AuditEntry.objects.filter(action="webhook.change").count() == 2


def test_a_deleted_webhook_answers_410_and_its_deliveries_stay_in_the_log(client, editor, agent):
    trigger, token = bearer_trigger(agent)
    assert deliver(client, trigger, token).status_code == 202
    client.force_login(editor)
    html = agent_page(client, editor, agent)
    assert "Its URL will answer <strong>410 Gone</strong>" in html  # said before deleting
    response = client.post(
        reverse("agents:trigger_delete", args=[agent.name, trigger.pk]), follow=True
    )
    html = response.content.decode()
    assert "Deleted the webhook release: its URL now answers 410 Gone." in html
    assert 'data-trigger="release"' not in html
    assert deliver(client, trigger, token).status_code == 410
    log = html[html.index('id="delivery-log"') :]
    assert 'release <span class="muted">(deleted)</span>' in log
    assert Delivery.objects.filter(trigger=trigger).count() == 2
    assert AuditEntry.objects.filter(action="webhook.delete").exists()
    # Gone from the section's controls too: a second delete is a 404.
    again = client.post(reverse("agents:trigger_delete", args=[agent.name, trigger.pk]))
    assert again.status_code == 404


# --- The run page: what started it, "Run again" -------------------------------------------------


def test_the_run_page_says_which_webhook_and_delivery_started_it(client, viewer, agent):
    trigger, token = bearer_trigger(agent)
    deliver(client, trigger, token, b'{"ref": "main"}', **{"Idempotency-Key": "release-42"})
    run = Run.objects.get()
    html = page(client, viewer, reverse("runs:detail", args=[run.pk]))
    triggers = reverse("agents:detail", args=[agent.name]) + "#triggers"
    assert f'<dt>Webhook</dt><dd data-trigger-fact><a href="{triggers}">release</a>' in html
    assert "<code>release-42</code>" in html
    assert "as a file, $CRONOS_RUN_DIR/webhook.json" in html
    assert "Run again" not in html  # a viewer may not start runs


def test_the_run_page_shows_a_git_hooks_ref_and_commit(client, viewer, agent):
    made = create_trigger(
        agent, Actor.system(), name="git-main", kind="git", repo="/srv/repo", event="post-commit"
    )
    sha = "0123456789abcdef0123456789abcdef01234567"
    deliver(
        client, made.trigger, made.secret, f'{{"ref": "refs/heads/main", "sha": "{sha}"}}'.encode()
    )
    run = Run.objects.get()
    assert run.trigger == Run.Trigger.GIT
    html = page(client, viewer, reverse("runs:detail", args=[run.pk]))
    assert "<dt>Git trigger</dt>" in html
    assert "<code>refs/heads/main</code>" in html and f"<code>{sha}</code>" in html
    assert "<code>/srv/repo</code>" in html
    agent_html = agent_page(client, viewer, agent)
    assert "Git hook" in agent_html and "token in the hook" not in agent_html  # viewer: no controls


def test_run_again_is_an_exact_re_run_pinned_to_the_original_version_and_variables(
    client, operator, viewer, agent
):
    original = trigger_run(agent, Actor.system(), variables={"TARGET": "staging", "DRY": "1"})
    finished(original)  # else the re-run would be skipped for overlap
    version = original.agent_version_id
    agent.command = "echo changed since"
    save_agent(agent, Actor.system(), reason="a later edit")
    assert agent.history.latest().history_id != version

    html = page(client, operator, reverse("runs:detail", args=[original.pk]))
    assert "data-run-again" in html and "An exact re-run" in html
    assert "<code>TARGET</code>" in html and "<pre>staging</pre>" in html
    response = client.post(reverse("runs:again", args=[original.pk]))
    rerun = Run.objects.exclude(pk=original.pk).get()
    assert response.status_code == 302
    assert response["Location"] == reverse("runs:detail", args=[rerun.pk])
    assert (rerun.agent_version_id, rerun.variables, rerun.rerun_of_id) == (
        version,
        {"TARGET": "staging", "DRY": "1"},
        original.pk,
    )
    assert rerun.triggered_by_name == operator.username

    html = client.get(response["Location"]).content.decode()
    words = f"Started run #{rerun.pk} as an exact re-run of #{original.pk}"
    assert f'<a href="{response["Location"]}">{words}' in html  # the message links to it
    assert "<dt>Re-run of</dt>" in html
    assert f'<a href="{reverse("runs:detail", args=[original.pk])}">run #{original.pk}' in html
    assert "<code>DRY</code>" in html

    client.force_login(viewer)
    assert client.post(reverse("runs:again", args=[original.pk])).status_code == 403
    assert Run.objects.count() == 2


def test_run_again_of_a_run_whose_version_is_no_longer_kept_says_so_and_starts_nothing(
    client, operator, agent
):
    original = trigger_run(agent, Actor.system(), variables={"TARGET": "staging"})
    finished(original)
    Run.objects.filter(pk=original.pk).update(agent_version=None)
    client.force_login(operator)
    response = client.post(reverse("runs:again", args=[original.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("runs:detail", args=[original.pk])
    html = entities.unescape(client.get(response["Location"]).content.decode())
    assert (
        f'<li class="message error">run #{original.pk} cannot be run again exactly: the agent '
        "version it ran is no longer kept (history cleaned, or a run imported from the "
        "prototype); start a new run instead</li>"
    ) in html
    assert list(Run.objects.values_list("pk", flat=True)) == [original.pk]


def test_run_again_is_offered_on_an_unfinished_run_too(client, operator, agent):
    run = trigger_run(agent, Actor.system())
    assert not run.is_final
    html = page(client, operator, reverse("runs:detail", args=[run.pk]))
    assert "data-run-again" in html
    fragment = client.get(reverse("runs:detail", args=[run.pk]), headers=HX).content.decode()
    assert "data-run-again" in fragment


# --- Run with variables, and Run now's message -------------------------------------------------


def run_with(client, agent, rows: list[tuple[str, str]]):
    return client.post(
        reverse("agents:run_variables", args=[agent.name]),
        {"var_name": [n for n, _ in rows], "var_value": [v for _, v in rows]},
    )


def test_run_with_variables_starts_a_run_given_them(client, operator, agent):
    client.force_login(operator)
    response = run_with(client, agent, [("TARGET", "prod; rm -rf /"), ("", ""), ("DRY", "0")])
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("runs:detail", args=[run.pk])
    assert run.variables == {"TARGET": "prod; rm -rf /", "DRY": "0"}
    assert run.trigger == Run.Trigger.MANUAL
    html = client.get(response["Location"]).content.decode()
    assert f"Started run #{run.pk} with 2 variables" in html
    assert "<pre>prod; rm -rf /</pre>" in html


def test_refused_variable_names_keep_the_rows_and_say_why(client, operator, agent):
    client.force_login(operator)
    rows = [("LD_PRELOAD", "/tmp/evil.so"), ("PATH", "/tmp"), ("TARGET", "staging")]
    response = run_with(client, agent, rows)
    assert response.status_code == 400
    html = response.content.decode()
    assert "LD_PRELOAD cannot be set for one run" in html
    assert "PATH cannot be set for one run" in html
    for name, value in rows:
        assert f'name="var_name" value="{name}"' in html
        assert f'name="var_value" value="{value}"' in html
    assert '<details class="run-variables" open data-run-variables>' in html
    assert not Run.objects.exists()


def test_a_variable_the_agent_does_not_declare_keeps_the_rows_and_names_those_it_does(
    client, operator, agent
):
    client.force_login(operator)
    rows = [("TARGET", "prod"), ("TICKET", "OPS-1")]
    response = run_with(client, agent, rows)
    assert response.status_code == 400
    html = response.content.decode()
    assert (
        "<li>TICKET is not one of the agent&#x27;s variables (it declares: DRY, TARGET); a run "
        "may set only those — an editor adds a variable to the agent to let runs set it</li>"
    ) in html
    for name, value in rows:
        assert f'name="var_name" value="{name}"' in html
        assert f'name="var_value" value="{value}"' in html
    assert '<details class="run-variables" open data-run-variables>' in html
    assert not Run.objects.exists()


def test_a_secret_variables_name_cannot_be_set_for_a_run_on_the_page(client, operator, agent):
    save_agent(with_secret(agent, "API_TOKEN", "the-real-token"), Actor.system(), reason="secret")
    client.force_login(operator)
    response = run_with(client, agent, [("API_TOKEN", "mine")])
    assert response.status_code == 400
    html = entities.unescape(response.content.decode())
    assert "API_TOKEN is not one of the agent's variables (it declares: DRY, TARGET)" in html
    assert 'name="var_name" value="API_TOKEN"' in html
    assert not Run.objects.exists()


def test_a_declared_name_that_changes_what_runs_is_still_refused_on_the_page(client, operator):
    builder = make_agent(
        "builder",
        schedule="",
        variables=[secrets.plain("MAKEFLAGS", "-j4"), secrets.plain("LD_PRELOAD", "")],
    )
    client.force_login(operator)
    rows = [("MAKEFLAGS", "--eval=x"), ("LD_PRELOAD", "/tmp/evil.so")]
    response = run_with(client, builder, rows)
    assert response.status_code == 400
    html = response.content.decode()
    assert "MAKEFLAGS cannot be set for one run" in html
    assert "LD_PRELOAD cannot be set for one run" in html
    for name, value in rows:
        assert f'name="var_name" value="{name}"' in html
        assert f'name="var_value" value="{value}"' in html
    assert not Run.objects.exists()


def test_run_with_variables_refuses_a_name_twice_and_no_variables(client, operator, agent):
    client.force_login(operator)
    html = run_with(client, agent, [("A", "1"), ("A", "2")]).content.decode()
    assert "A is given twice" in html
    html = run_with(client, agent, [("", "")]).content.decode()
    assert "Give at least one variable" in html
    assert not Run.objects.exists()


def test_run_with_variables_needs_the_operators_permission(client, viewer, editor, agent):
    for user in (viewer, editor):
        client.force_login(user)
        assert run_with(client, agent, [("A", "1")]).status_code == 403
        assert "Run with variables" not in agent_page(client, user, agent)
    assert not Run.objects.exists()


def test_run_nows_message_links_to_the_run(client, operator, agent):
    client.force_login(operator)
    html = client.post(reverse("agents:run", args=[agent.name]), follow=True).content.decode()
    run = Run.objects.get()
    assert f'<a href="{reverse("runs:detail", args=[run.pk])}">Started run #{run.pk}' in html


# --- The Content-Security-Policy ----------------------------------------------------------------


def test_the_new_templates_hold_no_inline_script_or_style():
    for name in NEW_TEMPLATES:
        path = Path(django_settings.BASE_DIR) / "templates" / name
        assert inline_code(path.read_text()) == [], name


def test_the_pages_with_a_secret_and_a_re_run_hold_no_inline_code(client, editor, operator, agent):
    client.force_login(editor)
    html = add_webhook(client, agent, htmx=False).content.decode()
    assert "data-secret-once" in html and inline_code(html) == []
    run = trigger_run(agent, Actor.system(), variables={"DRY": "1"})
    html = page(client, operator, reverse("runs:detail", args=[run.pk]))
    assert "data-run-again" in html and inline_code(html) == []
