"""What every page shares, through Django's test client: HTMX answers when the session is gone
and the messages an HTMX action adds, the error pages (403, 404, 500, CSRF), parameters a
careless or hostile address carries, and the small things (favicon, plurals, labels)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from cronos_site.web.templatetags.cronos import ago, until
from runs.models import AgentRunState, Run
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def recording_engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def running_run(agent=None) -> Run:
    run = Run.objects.create(agent=agent or make_agent(), trigger="manual")
    run.claim("here", 1)
    return run


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- The session gone: HTMX navigates to the login page ----------------------------------------


def test_an_htmx_poll_without_a_session_sends_the_browser_to_the_login_page(client):
    run = running_run()
    headers = {**HX, "HX-Current-URL": f"http://testserver/runs/{run.pk}/?tab=x"}
    response = client.get(f"/runs/{run.pk}/", headers=headers)
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/login/?next=/runs/{run.pk}/%3Ftab%3Dx"
    assert response.content == b""  # nothing to swap into the page


def test_the_login_page_comes_back_to_the_page_not_to_the_fragment_it_polled(client):
    agent = make_agent("poller")
    headers = {**HX, "HX-Current-URL": "http://testserver/cron/?schedule=5+*+*+*+*"}
    response = client.get("/cron/preview/", {"schedule": "5 * * * *"}, headers=headers)
    assert response["HX-Redirect"] == "/login/?next=/cron/%3Fschedule%3D5%2B%2A%2B%2A%2B%2A%2B%2A"
    # A current URL on another site is not trusted: back to the address asked for.
    headers = {**HX, "HX-Current-URL": "https://evil.example/phish"}
    response = client.post(f"/agents/{agent.name}/run/", headers=headers)
    assert response["HX-Redirect"] == f"/login/?next=/agents/{agent.name}/run/"


def test_without_htmx_the_login_redirect_is_an_ordinary_redirect(client):
    response = client.get("/runs/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/runs/"
    assert "HX-Redirect" not in response


# --- Messages in HTMX fragments ------------------------------------------------------------------


def test_an_htmx_cancel_carries_its_message_into_the_page(client, operator):
    run = running_run()
    client.force_login(operator)
    response = client.post(f"/runs/{run.pk}/cancel/", headers=HX)
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="run-summary"')
    oob = re.search(r'<ul id="messages"[^>]*hx-swap-oob="innerHTML"[^>]*>(.*?)</ul>', html)
    assert oob and f"Asked run #{run.pk} to stop" in oob[1]
    # Shown once: the next page does not say it again.
    assert f"Asked run #{run.pk} to stop" not in client.get(f"/runs/{run.pk}/").content.decode()


def test_a_poll_leaves_an_earlier_message_for_the_page_that_shows_it(client, operator):
    agent = make_agent()
    client.force_login(operator)
    client.post(f"/agents/{agent.name}/run/")  # a form post: its message is for the next page
    poll = client.get(f"/agents/{agent.name}/", headers=HX).content.decode()
    assert 'id="messages"' not in poll
    assert "Started run #" in client.get(f"/agents/{agent.name}/").content.decode()


def test_marking_notifications_read_with_htmx_adds_no_empty_messages(client, viewer):
    client.force_login(viewer)
    response = client.post("/notifications/read/", {"all": "1"}, headers=HX)
    assert 'id="messages"' not in response.content.decode()


# --- Error pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/agents/nonexist/", "/runs/99999/", "/no/such/page/"])
def test_a_missing_page_is_a_site_page_with_navigation(client, viewer, url):
    client.force_login(viewer)
    response = client.get(url)
    html = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in html and 'class="main-nav"' in html
    assert 'href="/runs/"' in html and "data-problem" in html and url in html


def test_a_server_error_is_a_site_page_with_navigation(client, viewer, monkeypatch):
    from runs.scheduling import upcoming

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(upcoming, "upcoming", broken)
    client.force_login(viewer)
    client.raise_request_exception = False
    response = client.get("/upcoming/")
    html = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong" in html and 'href="/health/"' in html
    assert "data-problem" in html and "boom" not in html


def test_a_refused_form_says_to_reload_inside_the_site(viewer):
    agent = make_agent()
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    response = client.post(f"/agents/{agent.name}/run/", headers=HX)
    html = response.content.decode()
    assert response.status_code == 403
    assert "That form was refused" in html and "Reload the page" in html
    assert "data-reload" in html and 'class="main-nav"' in html
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("role", "url", "granting"),
    [
        ("viewer", "/agents/{name}/run/", "operator or admin"),
        ("viewer", "/agents/{name}/edit/", "editor or admin"),
        ("operator", "/agents/{name}/edit/", "editor or admin"),
        ("editor", "/agents/{name}/run/", "operator or admin"),
    ],
)
def test_the_403_page_names_the_roles_that_have_the_missing_permission(
    client, request, role, url, granting
):
    agent = make_agent()
    client.force_login(request.getfixturevalue(role))
    method = client.post if url.endswith("/run/") else client.get
    response = method(url.format(name=agent.name))
    text = text_of(response.content.decode())
    assert response.status_code == 403
    assert f"Ask an administrator for a role that has it: {granting}." in text
    assert f"Your role ({role}) does not allow this" in text
    assert "viewer, operator, editor" not in text


def test_the_403_page_for_a_person_without_a_role(client, outsider):
    client.force_login(outsider)
    text = text_of(client.get("/").content.decode())
    assert "You have no role" in text and "agents.view_agent" in text
    assert "a role that has it: viewer or operator or editor or approver or admin." in text


# --- Careless parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"until": "9999-12-31"}, "9999-12-31 is not between 1970 and 9000"),
        ({"since": "0001-01-01"}, "0001-01-01 is not between 1970 and 9000"),
        ({"until": "2024-02-30"}, "is not a date"),
        ({"before": "not-a-cursor"}, "That page link is damaged"),
        ({"after": "1_99999999999999999999"}, "That page link is damaged"),
        ({"before": "999999999999999999_1"}, "That page link is damaged"),
        ({"before": "253402300799000000_1"}, "That page link is damaged"),  # 9999-12-31
        ({"before": "-99999999999999999_1"}, "That page link is damaged"),
        ({"before": "²_1"}, "That page link is damaged"),
    ],
)
def test_the_runs_page_refuses_a_parameter_it_cannot_use_with_a_message(
    client, viewer, params, said
):
    run = running_run()
    client.force_login(viewer)
    # A bad request, said on the whole page; a fragment keeps 200 so that htmx swaps it in.
    for headers, status in (({}, 400), (HX, 200)):
        response = client.get("/runs/", params, headers=headers)
        html = response.content.decode()
        assert response.status_code == status
        assert said in html
        assert f'data-run="{run.pk}"' in html  # the rest of the query still works


def test_run_output_refuses_a_damaged_cursor(client, viewer):
    run = running_run()
    client.force_login(viewer)
    for before in ("²", "1" * 30, "-1"):
        response = client.get(f"/runs/{run.pk}/output/", {"before": before})
        assert response.status_code == 200
        assert "That link to earlier output is damaged" in response.content.decode()
    huge = client.get(f"/runs/{run.pk}/output/", {"before": str(2**63 - 1)})
    assert huge.status_code == 200


def test_ids_posted_in_forms_are_checked_before_use(client, operator):
    agent = make_agent()
    client.force_login(operator)
    for raw in ("²", "1" * 30, ""):
        response = client.post(f"/agents/{agent.name}/cancel/", {"run": raw})
        assert response.status_code == 400
        response = client.post("/notifications/read/", {"ids": [raw, "1"]})
        assert response.status_code == 302
    for raw in ("²", "1" * 30):
        response = client.get(f"/agents/{agent.name}/versions/diff/", {"from": raw, "to": "1"})
        assert response.status_code == 302


@pytest.mark.parametrize(
    "after",
    [
        "9999-12-31T23:59:00+00:00",
        "1900-01-01T00:00:00+00:00",
        "0001-01-01T00:00:00+14:00",
        "2024-01-01T00:00:00",
        "tomorrow",
    ],
)
def test_the_cron_builder_refuses_an_instant_it_cannot_preview_from(client, viewer, after):
    client.force_login(viewer)
    page = client.get("/cron/", {"schedule": "0 4 * * *", "after": after})
    assert page.status_code == 400  # the page, saying what it ignored
    assert "the previews start from now" in page.content.decode()
    fragment = client.get("/cron/preview/", {"schedule": "0 4 * * *", "after": after}, headers=HX)
    assert fragment.status_code == 200
    assert "the previews start from now" in fragment.content.decode()


@pytest.mark.parametrize("raw", ["²", "-1", "1" * 30])
def test_the_cron_grids_ignore_numbers_they_cannot_use(client, viewer, raw):
    client.force_login(viewer)
    response = client.get(
        "/cron/preview/", {"build": "1", "b_minute": [raw, "5"], "b_hour_step": raw}, headers=HX
    )
    assert response.status_code == 200
    assert "5 * * * *" in response.content.decode()


def test_a_page_past_the_last_one_says_which_page_is_shown(client, viewer):
    make_agent()
    client.force_login(viewer)
    for raw in ("999", "x", "1" * 40):
        html = client.get("/", {"page": raw}).content.decode()
        assert "page 1 is shown" in html


# --- Small things --------------------------------------------------------------------------------


def test_the_favicon_is_served_from_the_static_files(client):
    response = client.get("/favicon.ico")  # no login needed: browsers ask for it on their own
    assert response.status_code == 301 and response["Location"] == "/static/favicon.ico"
    html = client.get("/login/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in html
    from django.contrib.staticfiles import finders

    assert finders.find("favicon.ico") and finders.find("favicon.svg")


@time_machine.travel(datetime(2025, 3, 1, 12, 0, tzinfo=UTC), tick=False)
def test_times_just_now_and_in_less_than_a_minute():
    now = timezone.now()
    assert ago(now) == "just now" and ago(now - timedelta(seconds=59)) == "just now"
    assert ago(now + timedelta(seconds=5)) == "just now"  # another host's clock a little ahead
    assert ago(now - timedelta(minutes=1)) == "1\xa0minute ago"
    assert until(now + timedelta(seconds=20)) == "in less than a minute"
    assert until(now + timedelta(minutes=2)) == "in 2\xa0minutes"
    assert until(now) == "due now"


def test_one_failure_in_a_row_is_singular(client, viewer):
    agent = make_agent("flaky", failure_alert_threshold=1)
    run = Run.objects.create(
        agent=agent, trigger="schedule", state="failed", finished_at=timezone.now()
    )
    AgentRunState.note_finished(run)
    client.force_login(viewer)
    html = text_of(client.get(f"/health/{agent.name}/").content.decode())
    assert "1 failure in a row" in html and "1 failures" not in html


def test_the_agent_page_links_to_its_health_page(client, viewer):
    agent = make_agent("linked")
    client.force_login(viewer)
    assert 'href="/health/linked/"' in client.get(f"/agents/{agent.name}/").content.decode()


def test_a_run_waiting_for_the_lock_is_not_said_to_hold_it(client, viewer):
    agent = make_agent("queueing")
    holder = running_run(agent)
    waiting = Run.objects.create(agent=agent, trigger="manual", state=Run.State.PENDING)
    client.force_login(viewer)
    text = text_of(client.get(f"/agents/{agent.name}/").content.decode())
    assert f"Lock held by run #{holder.pk} running" in text
    assert f"waiting: run #{waiting.pk} pending" in text
    assert f"Lock held by run #{waiting.pk}" not in text
    Run.objects.filter(pk=holder.pk).update(state=Run.State.SUCCEEDED)
    listing = client.get("/").content.decode()
    assert f"waiting #{waiting.pk}" in listing
    assert "This run holds the agent&#x27;s lock" not in listing


def test_an_active_run_page_says_to_reload_without_javascript(client, viewer):
    run = running_run()
    client.force_login(viewer)
    html = client.get(f"/runs/{run.pk}/").content.decode()
    assert "<noscript>" in html and "reload the page to see new output" in html
    autoscroll = re.search(r'<span class="output-actions"[^>]*>', html)
    assert autoscroll and "data-js-only hidden" in autoscroll[0]
    status = re.search(r"<span[^>]*data-live-status[^>]*>", html)
    assert status and "hidden" in status[0]


def test_a_finished_run_page_needs_no_hint(client, viewer):
    run = running_run()
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED, finished_at=timezone.now())
    client.force_login(viewer)
    html = client.get(f"/runs/{run.pk}/").content.decode()
    assert "<noscript>" not in html and "data-autoscroll" not in html
