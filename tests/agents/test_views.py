"""The agents pages through Django's test client: what each role sees and may do, search,
filters, bulk actions, the wizard, edits, versions, the cron builder, escaping, query counts."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agents import secrets
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from audit.models import AuditEntry
from cronos_site.web import cronbuilder
from runs.models import AgentRunState, Run
from tests.factories import make_agent, with_secret

pytestmark = pytest.mark.django_db

SECRET = "sk-live-very-secret-4242"
HOME = "/"


@pytest.fixture(autouse=True)
def recording_engine(settings):
    # Runs started from the pages are handed to an engine that only remembers them.
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    # The agent page's health figures keep ended buckets in the cache: each test starts from none.
    cache.clear()


def as_user(client, user):
    client.force_login(user)
    return client


def page(client, url: str, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def finished_run(agent: Agent, state: str, minutes_ago: int = 5) -> Run:
    """A run that ended `minutes_ago`, noted as the agent's last run as the executor would."""
    when = timezone.now() - timedelta(minutes=minutes_ago)
    run = Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=state,
        created_at=when,
        started_at=when,
        finished_at=when + timedelta(seconds=3),
    )
    AgentRunState.note_finished(run)
    return run


def active_run(agent: Agent, state: str = Run.State.RUNNING) -> Run:
    return Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL, state=state)


class Forms(HTMLParser):
    """The values a browser would submit for each form of a page, by its action."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: dict[str, list[tuple[str, str]]] = {}
        self._form: list | None = None
        self._textarea: str | None = None
        self._select: str | None = None
        self._select_value: str | None = None
        self._option: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = self.forms.setdefault(a.get("action", ""), [])
        elif self._form is None:
            return
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind not in ("submit", "button"):
                self._form.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "textarea":
            self._textarea = a["name"]
            self._form.append((a["name"], ""))
        elif tag == "select":
            self._select, self._select_value = a["name"], None
        elif tag == "option" and self._select:
            if self._select_value is None or "selected" in a:
                self._select_value = a.get("value", "")

    def handle_data(self, data):
        if self._textarea and self._form is not None:
            name, value = self._form[-1]
            self._form[-1] = (name, value + data.removeprefix("\n") if not value else value + data)

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        elif tag == "select" and self._select and self._form is not None:
            self._form.append((self._select, self._select_value or ""))
            self._select = None
        elif tag == "form":
            self._form = None


def form_data(html: str, form_action: str, **overrides) -> dict:
    parser = Forms()
    parser.feed(html)
    data: dict = {}
    for name, value in parser.forms[form_action]:
        if name in data:
            data[name] = (
                [*data[name], value] if isinstance(data[name], list) else [data[name], value]
            )
        else:
            data[name] = value
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


# --- Login ------------------------------------------------------------------------------------


def test_every_page_requires_login(client):
    agent = make_agent()
    version = agent.history.latest()
    urls = [
        HOME,
        reverse("agents:new"),
        reverse("agents:detail", args=[agent.name]),
        reverse("agents:edit", args=[agent.name]),
        reverse("agents:diff", args=[agent.name]) + f"?from={version.history_id}&to=1",
        reverse("agents:rollback", args=[agent.name, version.history_id]),
        reverse("agents:cron"),
        reverse("agents:cron_preview") + "?expression=@daily",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next="), url
    posts = [
        (reverse("agents:run", args=[agent.name]), {}),
        (reverse("agents:toggle", args=[agent.name]), {"enabled": "0"}),
        (reverse("agents:bulk"), {"action": "delete", "agents": agent.name, "confirm": "yes"}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 302
    assert Agent.objects.get().enabled and not Run.objects.exists()


def test_login_page_logs_a_person_in_and_the_login_is_audited(client, viewer):
    assert "Log in to Cronos" in page(client, "/login/")
    response = client.post(
        "/login/", {"username": "vera", "password": "correct horse battery", "next": "/"}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    entry = AuditEntry.objects.get(action="login")
    assert entry.actor_username == "vera" and entry.source == AuditEntry.Source.WEB
    home = page(client, HOME)
    assert "vera" in home and "viewer" in home


def test_a_wrong_password_says_so_and_logs_nobody_in(client, viewer):
    response = client.post("/login/", {"username": "vera", "password": "nope"})
    assert response.status_code == 200
    assert "do not match" in response.content.decode()
    assert client.get(HOME).status_code == 302


def test_logout_is_a_post_and_goes_back_to_the_login_page(client, viewer):
    as_user(client, viewer)
    html = page(client, HOME)
    assert 'action="/logout/"' in html and 'method="post"' in html
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get(HOME).status_code == 302


def test_the_frame_shows_the_csrf_header_nav_and_admin_link_for_staff(client, viewer):
    as_user(client, viewer)
    html = page(client, HOME)
    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[^\"]+\"\}'>", html)
    for href in ('href="/"', 'href="/runs/"', 'href="/health/"', 'href="/upcoming/"'):
        assert href in html
    assert '<div id="notifications"' in html
    assert 'href="/admin/"' in html
    assert '<script src="/static/vendor/htmx.min.js" defer></script>' in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from another site


def test_a_person_without_a_role_sees_no_agent(client, outsider):
    agent = make_agent()
    as_user(client, outsider)
    assert client.get(HOME).status_code == 403
    response = client.get(reverse("agents:detail", args=[agent.name]))
    assert response.status_code == 403
    assert "Not allowed" in response.content.decode()
    assert agent.name not in response.content.decode()


# --- Roles ------------------------------------------------------------------------------------

ACTION_BUTTONS = {
    "run": ">Run now<",
    "pause": ">Pause<",
    "edit": ">Edit<",
    "clone": ">Clone<",
    "delete": ">Delete…<",
}


@pytest.mark.parametrize(
    ("role", "shown"),
    [
        ("viewer", set()),
        ("operator", {"run", "pause"}),
        ("editor", {"edit", "clone", "delete"}),
        ("admin", {"run", "pause", "edit", "clone", "delete"}),
    ],
)
def test_the_agent_page_shows_only_the_buttons_the_role_may_use(client, request, role, shown):
    user = request.getfixturevalue({"admin": "admin_user"}.get(role, role))
    agent = make_agent()
    active_run(agent)
    as_user(client, user)
    html = page(client, reverse("agents:detail", args=[agent.name]))
    for action, marker in ACTION_BUTTONS.items():
        assert (marker in html) is (action in shown), (role, action)
    assert ("Cancel run #" in html) is (role in ("operator", "admin"))
    assert ("Roll back" in html) is False  # one version only: nothing to roll back to
    listing = page(client, HOME)
    assert ('name="agents"' in listing) is bool(shown - {"edit", "clone"})
    assert ("New agent" in listing) is (role in ("editor", "admin"))


def test_a_viewer_sees_no_action_and_every_post_is_refused(client, viewer):
    agent = with_secret(make_agent(prompt="hello"), "TOKEN", SECRET)
    save_agent(agent, Actor.system())
    agent.description = "second version"
    save_agent(agent, Actor.system())
    first = agent.history.earliest()
    run = active_run(agent)
    as_user(client, viewer)
    html = page(client, reverse("agents:detail", args=[agent.name]))
    main = html.split("<main", 1)[1]
    assert re.findall(r"<button[^>]*>([^<]*)</button>", main) == ["Compare versions"]
    assert 'method="post"' not in main
    listing = page(client, HOME)
    assert 'id="bulk-form"' not in listing and 'type="checkbox"' not in listing
    before = (Agent.objects.get().updated_at, Run.objects.count(), AuditEntry.objects.count())
    name = agent.name
    refused = [
        (reverse("agents:run", args=[name]), {}),
        (reverse("agents:run", args=[name]), {"force": "1"}),
        (reverse("agents:toggle", args=[name]), {"enabled": "0"}),
        (reverse("agents:cancel", args=[name]), {"run": run.pk}),
        (reverse("agents:edit", args=[name]), {"description": "hacked"}),
        (reverse("agents:rollback", args=[name, first.history_id]), {}),
        (reverse("agents:new"), {"template": "git-commit", "name": "x"}),
        (reverse("agents:bulk"), {"action": "enable", "agents": name}),
        (reverse("agents:bulk"), {"action": "disable", "agents": name}),
        (reverse("agents:bulk"), {"action": "run", "agents": name}),
        (reverse("agents:bulk"), {"action": "delete", "agents": name, "confirm": "yes"}),
    ]
    for url, data in refused:
        assert client.post(url, data).status_code == 403, url
    assert client.get(reverse("agents:edit", args=[name])).status_code == 403
    assert client.get(reverse("agents:new")).status_code == 403
    run.refresh_from_db()
    assert run.state == Run.State.RUNNING and run.cancel_requested_at is None
    assert (
        Agent.objects.get().updated_at,
        Run.objects.count(),
        AuditEntry.objects.count(),
    ) == before


def test_an_operator_may_run_pause_and_cancel_but_not_edit(client, operator):
    agent = make_agent()
    as_user(client, operator)
    name = agent.name
    assert client.post(reverse("agents:run", args=[name])).status_code == 302
    run = Run.objects.get()
    assert run.triggered_by == operator and run.trigger == Run.Trigger.MANUAL
    assert client.post(reverse("agents:toggle", args=[name]), {"enabled": "0"}).status_code == 302
    assert Agent.objects.get().enabled is False
    assert client.post(reverse("agents:cancel", args=[name]), {"run": run.pk}).status_code == 302
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED
    assert client.get(reverse("agents:edit", args=[name])).status_code == 403
    assert client.post(reverse("agents:edit", args=[name]), {}).status_code == 403
    assert client.get(reverse("agents:new")).status_code == 403
    data = {"action": "delete", "agents": name, "confirm": "yes"}
    assert client.post(reverse("agents:bulk"), data).status_code == 403
    assert Agent.objects.filter(name=name).exists()
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"run.trigger", "agent.disable", "run.cancel"} <= actions


def test_an_editor_may_edit_create_roll_back_and_delete_but_not_run(client, editor):
    agent = make_agent(description="first")
    as_user(client, editor)
    name = agent.name
    edit_url = reverse("agents:edit", args=[name])
    data = form_data(page(client, edit_url), edit_url, description="second")
    assert client.post(edit_url, data).status_code == 302
    assert Agent.objects.get().description == "second"
    first = agent.history.earliest()
    client.post(reverse("agents:rollback", args=[name, first.history_id]))
    assert Agent.objects.get().description == "first"
    assert client.post(reverse("agents:run", args=[name])).status_code == 403
    assert client.post(reverse("agents:toggle", args=[name]), {"enabled": "0"}).status_code == 403
    assert not Run.objects.exists()
    new_url = reverse("agents:new")
    step2 = page(client, new_url, template="report")
    created = form_data(step2, new_url, name="weekly", working_dir="/tmp")
    assert client.post(new_url, created).status_code == 302
    assert Agent.objects.filter(name="weekly").exists()
    data = {"action": "delete", "agents": [name, "weekly"], "confirm": "yes"}
    assert client.post(reverse("agents:bulk"), data).status_code == 302
    assert not Agent.objects.exists()


# --- Agents page: search, filters, sorting, pages -----------------------------------------------


def names_in(html: str) -> list[str]:
    return re.findall(r'<tr class="agent-row" data-agent="([^"]+)"', html)


def test_search_matches_names_and_descriptions(client, viewer):
    make_agent("alpha", description="backs up photos")
    make_agent("beta", description="writes reports")
    make_agent("photo-sync", description="copies files")
    as_user(client, viewer)
    assert names_in(page(client, HOME, q="photo")) == ["alpha", "photo-sync"]
    assert names_in(page(client, HOME, q="REPORT")) == ["beta"]
    assert names_in(page(client, HOME, q="nothing-like-it")) == []
    assert "No agent matches" in page(client, HOME, q="nothing-like-it")


def test_the_search_box_asks_as_you_type_and_pushes_the_query_into_the_url(client, viewer):
    as_user(client, viewer)
    html = page(client, HOME, q="photo", state="paused", sort="next_run")
    search = re.search(r'<input type="search"[^>]*>', html, re.S).group(0)
    assert 'value="photo"' in search
    assert 'hx-trigger="input changed delay:250ms, search"' in search
    assert 'hx-get="/"' in search and 'hx-target="#agent-results"' in search
    assert re.search(r'<option value="paused" selected>', html)
    assert re.search(r'<option value="next_run" selected>', html)


def test_an_htmx_request_gets_only_the_table_and_responses_vary_on_it(client, viewer):
    make_agent("alpha")
    as_user(client, viewer)
    full = client.get(HOME, {"q": "alp"})
    fragment = client.get(HOME, {"q": "alp"}, headers={"HX-Request": "true"})
    assert "HX-Request" in full["Vary"] and "HX-Request" in fragment["Vary"]
    assert "<html" in full.content.decode()
    body = fragment.content.decode()
    assert "<html" not in body and "<body" not in body and 'id="agent-filters"' not in body
    assert names_in(body) == ["alpha"]
    assert fragment["HX-Push-Url"] == "/?q=alp"  # the address bar keeps the query
    assert (
        client.get(HOME, {"q": "", "state": "", "sort": "name"}, headers={"HX-Request": "true"})[
            "HX-Push-Url"
        ]
        == "/"
    )
    # The back button without a cached snapshot asks for the whole page again.
    restore = client.get(HOME, headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert "<html" in restore.content.decode()


def test_filter_by_state(client, viewer):
    make_agent("on")
    make_agent("off", enabled=False)
    busy = make_agent("busy")
    active_run(busy, Run.State.QUEUED)
    broken = make_agent("broken")
    finished_run(broken, Run.State.FAILED)
    healed = make_agent("healed")
    finished_run(healed, Run.State.FAILED, minutes_ago=10)
    finished_run(healed, Run.State.SUCCEEDED, minutes_ago=5)
    as_user(client, viewer)
    assert names_in(page(client, HOME, state="enabled")) == ["broken", "busy", "healed", "on"]
    assert names_in(page(client, HOME, state="paused")) == ["off"]
    assert names_in(page(client, HOME, state="running")) == ["busy"]
    assert names_in(page(client, HOME, state="failing")) == ["broken"]
    assert len(names_in(page(client, HOME, state="bogus"))) == 5


@pytest.mark.date_sensitive
def test_sort_by_name_last_run_and_next_run(client, viewer):
    for name in ("charlie", "alpha", "bravo", "delta"):
        make_agent(name)
    agents = {a.name: a for a in Agent.objects.all()}
    finished_run(agents["charlie"], Run.State.SUCCEEDED, minutes_ago=1)
    finished_run(agents["alpha"], Run.State.FAILED, minutes_ago=30)
    finished_run(agents["delta"], Run.State.SUCCEEDED, minutes_ago=10)
    now = timezone.now()
    AgentRunState.set_next_slots(
        {
            agents["alpha"].pk: now + timedelta(hours=3),
            agents["bravo"].pk: now + timedelta(hours=1),
            agents["charlie"].pk: now + timedelta(hours=2),
        }
    )
    as_user(client, viewer)
    assert names_in(page(client, HOME)) == ["alpha", "bravo", "charlie", "delta"]
    assert names_in(page(client, HOME, sort="last_run")) == ["charlie", "delta", "alpha", "bravo"]
    assert names_in(page(client, HOME, sort="next_run")) == ["bravo", "charlie", "alpha", "delta"]


def test_fifty_agents_a_page_and_the_links_keep_the_query(client, viewer):
    for n in range(55):
        Agent.objects.create(
            name=f"bulk-{n:02d}", working_dir="/tmp", command="true", runner="command"
        )
    make_agent("other")
    as_user(client, viewer)
    first = page(client, HOME, q="bulk", sort="name")
    assert len(names_in(first)) == 50
    assert "55 agents" in first and "page 1 of 2" in first
    assert 'href="/?q=bulk&amp;page=2"' in first
    second = page(client, HOME, q="bulk", page="2")
    assert names_in(second) == [f"bulk-{n:02d}" for n in range(50, 55)]
    assert 'href="/?q=bulk"' in second  # back to the first page, still searching
    assert len(names_in(page(client, HOME, q="bulk", page="99"))) == 5  # past the end: last page


@pytest.mark.date_sensitive
def test_a_row_shows_state_lock_schedule_next_and_last_run_and_the_trend(client, viewer):
    agent = make_agent("busy", schedule="0 0 */4 * * *", timezone="Europe/Paris")
    for n in range(25):
        finished_run(agent, Run.State.FAILED if n % 5 == 0 else Run.State.SUCCEEDED, 100 - n)
    last = finished_run(agent, Run.State.SUCCEEDED, minutes_ago=1)
    lock = active_run(agent)
    make_agent("idle", enabled=False)
    as_user(client, viewer)
    html = page(client, HOME)
    row = html.split('data-agent="busy"')[1].split("</tr>")[0]
    assert "enabled" in row and f'href="/runs/{lock.pk}/"' in row and f"running #{lock.pk}" in row
    assert "Every 4 hours (Europe/Paris)" in row
    assert "<time" in row.split('class="next"')[1].split("</td>")[0]  # computed: no state yet
    assert f'href="/runs/{last.pk}/"' in row and "Succeeded" in row
    # The last 20 outcomes: runs 6..24 of the 25 plus the last one; 10, 15 and 20 failed.
    assert "17 of 20 of the last 20 runs succeeded" in row and "85%" in row
    assert row.count("<rect") == 20 and row.count('class="failure"') == 3
    idle = html.split('data-agent="idle"')[1].split("</tr>")[0]
    assert "paused" in idle and "never ran" in idle and "no finished runs yet" in idle


def test_the_page_query_count_does_not_grow_with_the_agents_on_it(client, viewer):
    def add_agents(start: int, count: int) -> None:
        for n in range(start, start + count):
            agent = make_agent(f"agent-{n:03d}", enabled=n % 5 != 0)
            if n % 4 == 0:
                continue  # never ran: no AgentRunState row, its next run is computed
            finished_run(agent, Run.State.SUCCEEDED, minutes_ago=20)
            finished_run(agent, Run.State.FAILED, minutes_ago=10)
            if n % 3 == 0:
                active_run(agent)

    as_user(client, viewer)
    add_agents(0, 3)
    page(client, HOME)  # warm: the session and permission caches
    counts = []
    for start, count in ((3, 0), (3, 40)):
        add_agents(start, count)
        for params in ({}, {"sort": "last_run", "q": "agent"}):
            with CaptureQueriesContext(connection) as queries:
                html = page(client, HOME, **params)
            counts.append(len(queries))
        assert len(names_in(html)) == 3 + count
    assert counts[0] == counts[2] and counts[1] == counts[3], counts
    # 11: the usage-limit pauses in force (runs.deferral) are one more small query.
    assert counts[0] <= 11, counts


def test_the_trend_is_one_bounded_query_for_the_whole_page(client, viewer):
    from cronos_site.web import agentlist as pages

    agents = [make_agent(f"a{n}") for n in range(5)]
    for agent in agents:
        for minutes in range(30):
            finished_run(agent, Run.State.SUCCEEDED, minutes_ago=minutes + 1)
    with CaptureQueriesContext(connection) as queries:
        trends = pages.trends_for([a.pk for a in agents])
    assert len(queries) == 1
    assert "LIMIT 20" in queries[0]["sql"]
    assert all(len(trends[a.pk].bars) == 20 for a in agents)


# --- Bulk actions -------------------------------------------------------------------------------


def test_bulk_enable_disable_and_run(client, admin_user):
    a, c = make_agent("a"), make_agent("c")
    make_agent("b", enabled=False)
    active_run(c)
    as_user(client, admin_user)
    bulk = reverse("agents:bulk")
    response = client.post(bulk, {"action": "disable", "agents": ["a", "b"], "next": "/?q=x"})
    assert response.status_code == 302 and response["Location"] == "/?q=x"
    assert not Agent.objects.get(name="a").enabled and not Agent.objects.get(name="b").enabled
    response = client.post(bulk, {"action": "enable", "agents": ["a", "b", "c"]}, follow=True)
    assert Agent.objects.filter(enabled=True).count() == 3
    assert "Enabled 2 agents: a, b." in response.content.decode()
    response = client.post(bulk, {"action": "run", "agents": ["a", "c"]}, follow=True)
    html = response.content.decode()
    assert Run.objects.filter(agent=a, trigger="manual").count() == 1
    skipped = Run.objects.get(agent=c, state=Run.State.SKIPPED)
    assert "Started 1 run(s): a" in html
    assert f"run #{skipped.pk} was skipped: overlap" in html
    assert AuditEntry.objects.filter(action="agent.disable").count() == 1  # b was paused


def test_bulk_with_nothing_selected_or_an_unknown_action(client, admin_user):
    make_agent("a")
    as_user(client, admin_user)
    response = client.post(reverse("agents:bulk"), {"action": "disable"}, follow=True)
    assert "Select at least one agent" in response.content.decode()
    assert (
        client.post(reverse("agents:bulk"), {"action": "explode", "agents": "a"}).status_code == 400
    )
    assert (
        client.post(
            reverse("agents:bulk"),
            {"action": "enable", "agents": "a", "next": "https://evil.example/"},
        )["Location"]
        == "/"
    )


def test_bulk_delete_asks_first_and_says_what_will_go(client, editor):
    doomed = make_agent("doomed", description="<b>bold</b>")
    for minutes in range(3):
        finished_run(doomed, Run.State.SUCCEEDED, minutes + 1)
    make_agent("spared")
    keep = make_agent("kept")
    finished_run(keep, Run.State.SUCCEEDED)
    as_user(client, editor)
    bulk = reverse("agents:bulk")
    response = client.post(
        bulk, {"action": "delete", "agents": ["doomed", "spared"], "next": "/?q=d"}
    )
    html = response.content.decode()
    assert response.status_code == 200 and Agent.objects.count() == 3
    assert "Delete 2 agents?" in html
    assert "<strong>doomed</strong> — 3 runs" in html and "<strong>spared</strong> — 0 runs" in html
    assert "<strong>3 runs</strong>" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    data = form_data(html, bulk)
    assert data["confirm"] == "yes" and sorted(data["agents"]) == ["doomed", "spared"]
    response = client.post(bulk, data)
    assert response["Location"] == "/?q=d"
    assert list(Agent.objects.values_list("name", flat=True)) == ["kept"]
    assert Run.objects.count() == 1
    assert set(
        AuditEntry.objects.filter(action="agent.delete").values_list("object_name", flat=True)
    ) == {"doomed", "spared"}


def test_deleting_from_the_agent_page_comes_back_to_the_list(client, editor):
    make_agent("solo")
    as_user(client, editor)
    detail = page(client, reverse("agents:detail", args=["solo"]))
    data = form_data(detail, reverse("agents:bulk"), action="delete")
    confirm = client.post(reverse("agents:bulk"), data).content.decode()
    response = client.post(reverse("agents:bulk"), form_data(confirm, reverse("agents:bulk")))
    assert response["Location"] == "/" and not Agent.objects.exists()


def test_the_delete_confirmation_counts_the_logs_and_warns_of_active_runs(client, editor):
    agent = make_agent("busy")
    Run.objects.create(agent=agent, trigger="manual", state=Run.State.RUNNING)
    Run.objects.create(
        agent=agent, trigger="manual", state=Run.State.SUCCEEDED, log_path="runs/x/busy.log"
    )
    as_user(client, editor)
    html = client.post(reverse("agents:bulk"), {"action": "delete", "agents": ["busy"]})
    html = html.content.decode()
    assert "<strong>2 runs</strong>" in html and "<strong>1 log file</strong>" in html
    assert "<strong>busy</strong> — 2 runs, 1 log file, <strong>1 active</strong>" in html
    warning = html.split('id="active-runs-warning"')[1].split("</p>")[0]
    assert "cancelled first and waited for" in warning
    assert "Yes, stop 1 active run and delete 1 agent" in html


def test_a_delete_whose_run_does_not_stop_is_refused_naming_the_run(client, editor, monkeypatch):
    from runs import services

    # The run's worker never answers; the page waits only briefly here.
    monkeypatch.setattr(services, "delete_wait_seconds", lambda: 0.2)
    agent = make_agent("stubborn")
    run = Run.objects.create(agent=agent, trigger="manual", state=Run.State.RUNNING)
    queued = make_agent("easy")
    Run.objects.create(agent=queued, trigger="manual", state=Run.State.QUEUED)
    as_user(client, editor)
    response = client.post(
        reverse("agents:bulk"),
        {"action": "delete", "agents": ["stubborn", "easy"], "confirm": "yes"},
        follow=True,
    )
    html = response.content.decode()
    assert "Deleted 1 agent: easy, with 1 run and 0 log files." in html
    assert "stubborn was not deleted" in html and f"#{run.pk} (running)" in html
    assert list(Agent.objects.values_list("name", flat=True)) == ["stubborn"]
    run.refresh_from_db()
    assert run.cancel_requested_at is not None and run.cancel_requested_by == "eddie"


# --- New agent wizard ---------------------------------------------------------------------------


def test_the_wizard_creates_a_disabled_agent_from_a_template_in_one_version(client, editor):
    as_user(client, editor)
    new = reverse("agents:new")
    step1 = page(client, new)
    assert "Commit pending changes" in step1 and "?template=git-commit" in step1
    step2 = page(client, new, template="git-commit")
    assert "disabled" in step2
    assert 'value="git-commit"' in step2  # a free name suggested
    assert 'name="allowed_tools"' in step2 and 'name="catch_up_policy"' not in step2
    data = form_data(
        step2, new, name="notes-commit", working_dir="/srv/notes", schedule="15 */6 * * *"
    )
    response = client.post(new, data)
    assert response.status_code == 302 and response["Location"] == "/agents/notes-commit/"
    agent = Agent.objects.get(name="notes-commit")
    assert agent.enabled is False and agent.working_dir == "/srv/notes"
    assert agent.schedule == "15 */6 * * *"
    assert agent.catch_up_policy == "run_once"  # kept from the template, not on the form
    assert "Bash(git commit:*)" in agent.allowed_tools
    assert agent.history.count() == 1
    assert agent.history.get().history_change_reason == "Created from template git-commit"
    entry = AuditEntry.objects.get(action="agent.create")
    assert entry.actor_username == "eddie" and entry.source == AuditEntry.Source.WEB
    html = client.get(response["Location"]).content.decode()
    assert "It is disabled" in html


def test_the_wizard_validates_with_the_agent_rules(client, editor):
    make_agent("taken")
    as_user(client, editor)
    new = reverse("agents:new")
    step2 = page(client, new, template="backup")
    bad = form_data(step2, new, name="taken", schedule="61 * * * *", working_dir="")
    html = client.post(new, bad).content.decode()
    assert "already exists" in html
    assert "minute field &#x27;61&#x27; is out of range (0-59)" in html
    assert "A working directory is required" in html or "This field is required" in html
    assert Agent.objects.count() == 1
    assert client.get(new, {"template": "nope"}).status_code == 400


def test_the_wizard_clones_an_agent_keeping_its_secrets_without_showing_them(client, editor):
    original = with_secret(make_agent("source", prompt="do it"), "API_TOKEN", SECRET)
    save_agent(original, Actor.system())
    as_user(client, editor)
    new = reverse("agents:new")
    assert "no agent named" in client.get(new, {"clone": "ghost"}).content.decode()
    step2 = page(client, new, clone="source")
    assert SECRET not in step2 and "API_TOKEN" in step2
    assert 'value="source-copy"' in step2
    response = client.post(new, form_data(step2, new, description="the copy"))
    assert response.status_code == 302
    copy = Agent.objects.get(name="source-copy")
    assert copy.enabled is False and copy.description == "the copy"
    assert secrets.environment(copy.variables)["API_TOKEN"] == SECRET
    assert copy.history.get().history_change_reason == "Cloned from source"
    assert AuditEntry.objects.filter(action="agent.clone", object_name="source-copy").exists()


# --- Agent page, edit -------------------------------------------------------------------------


@pytest.fixture
def agent_with_secret():
    agent = with_secret(make_agent("keeper", prompt="line one\nline two\n"), "API_TOKEN", SECRET)
    save_agent(agent, Actor.system())
    return agent


def test_a_secret_value_never_reaches_the_browser(client, admin_user, agent_with_secret):
    agent = agent_with_secret
    as_user(client, admin_user)
    first, last = agent.history.earliest(), agent.history.latest()
    urls = [
        HOME,
        reverse("agents:detail", args=[agent.name]),
        reverse("agents:edit", args=[agent.name]),
        reverse("agents:diff", args=[agent.name])
        + f"?from={first.history_id}&to={last.history_id}",
        reverse("agents:rollback", args=[agent.name, first.history_id]),
        reverse("agents:new") + f"?clone={agent.name}",
    ]
    ciphertext = next(v["ciphertext"] for v in agent.variables if v.get("secret"))
    for url in urls:
        html = page(client, url)
        assert SECRET not in html and ciphertext not in html, url
    detail = page(client, reverse("agents:detail", args=[agent.name]))
    assert f"API_TOKEN={secrets.MASK} (secret)" in detail


def test_editing_keeps_secrets_and_makes_a_version(client, editor, agent_with_secret):
    agent = agent_with_secret
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    html = page(client, url)
    assert 'id="cron-builder"' in html and 'name="b_minute"' in html
    data = form_data(html, url, description="edited on the web", plain_variables="MODE=fast")
    assert data["secret_variables"] == "API_TOKEN"
    response = client.post(url, data, follow=True)
    assert "Saved keeper: version 3." in response.content.decode()
    agent.refresh_from_db()
    assert agent.description == "edited on the web"
    assert secrets.environment(agent.variables) == {"MODE": "fast", "API_TOKEN": SECRET}
    assert agent.history.latest().history_user == editor
    response = client.post(url, form_data(page(client, url), url), follow=True)
    assert "Nothing changed." in response.content.decode()
    assert agent.history.count() == 3


def test_an_invalid_edit_shows_the_error_and_changes_nothing(client, editor):
    agent = make_agent()
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    data = form_data(page(client, url), url, schedule="0 0 * * * * * *", timezone="Mars/Base")
    response = client.post(url, data)
    html = response.content.decode()
    assert response.status_code == 200
    assert "expected 5 fields" in html and "not a known IANA time zone" in html
    assert Agent.objects.get().schedule == "0 */4 * * *"


def test_renaming_an_agent_goes_to_its_new_page(client, editor):
    agent = make_agent("old-name")
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    response = client.post(url, form_data(page(client, url), url, name="new-name"))
    assert response["Location"] == "/agents/new-name/"


@pytest.mark.date_sensitive
def test_the_agent_page_shows_configuration_runs_health_and_versions(client, viewer):
    agent = make_agent("reporter", schedule="30 8 * * 1", timezone="Europe/Paris", prompt="p")
    agent.description = "now with words"
    save_agent(agent, Actor.system())
    ok = finished_run(agent, Run.State.SUCCEEDED, minutes_ago=60 * 24 * 2)
    bad = finished_run(agent, Run.State.FAILED, minutes_ago=60 * 24 * 10)
    finished_run(agent, Run.State.SKIPPED, minutes_ago=60)
    old = finished_run(agent, Run.State.FAILED, minutes_ago=60 * 24 * 40)
    as_user(client, viewer)
    html = page(client, reverse("agents:detail", args=[agent.name]))
    assert "At 08:30, only on Monday (Europe/Paris)" in html
    assert html.count("UTC+0") >= 5  # next runs with their offsets
    assert f'href="/runs/{ok.pk}/"' in html and f'href="/runs/{bad.pk}/"' in html
    assert 'class="state state-failed"' in html and 'class="state state-succeeded"' in html
    assert f'href="/runs/{old.pk}/"' in html
    status = html.split('id="agent-status"')[1]
    assert "100%" in status and "1 of 1 succeeded" in status  # 7 days
    assert "50%" in status and "1 of 2 succeeded" in status  # 30 days; the older one is out
    assert 'data-version="2"' in html and 'data-version="1"' in html
    assert "Command line" in html  # the runner, in words


def test_the_live_part_of_the_agent_page_is_a_fragment_that_polls_while_a_run_is_active(
    client, viewer
):
    agent = make_agent()
    as_user(client, viewer)
    url = reverse("agents:detail", args=[agent.name])
    idle = client.get(url, headers={"HX-Request": "true"})
    assert "HX-Request" in idle["Vary"]
    body = idle.content.decode()
    assert body.lstrip().startswith("{") is False and "<html" not in body
    assert 'id="agent-status"' in body and 'hx-trigger="every 15s"' in body
    run = active_run(agent, Run.State.QUEUED)
    body = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert 'hx-trigger="every 2s"' in body and f"run #{run.pk} queued" in body


def test_run_now_reports_a_skip_for_overlap_and_force_passes_it(client, operator):
    agent = make_agent()
    lock = active_run(agent)
    as_user(client, operator)
    url = reverse("agents:run", args=[agent.name])
    html = client.post(url, follow=True).content.decode()
    skipped = Run.objects.exclude(pk=lock.pk).get()
    assert skipped.state == Run.State.SKIPPED
    assert f"Run #{skipped.pk} was skipped: overlap: run #{lock.pk} is still running" in html
    html = client.post(url, {"force": "1"}, follow=True).content.decode()
    forced = Run.objects.order_by("-pk").first()
    assert forced.state == Run.State.QUEUED
    assert f"Started run #{forced.pk} past the overlap gate" in html
    assert (
        "forced past the overlap gate"
        in AuditEntry.objects.filter(action="run.trigger").latest("pk").message
    )


def test_pause_resume_and_cancel_from_the_agent_page(client, operator):
    agent = make_agent()
    run = active_run(agent, Run.State.QUEUED)
    as_user(client, operator)
    toggle = reverse("agents:toggle", args=[agent.name])
    html = client.post(toggle, {"enabled": "0"}, follow=True).content.decode()
    assert "Paused cron-git." in html and "This agent is paused" in html
    html = client.post(toggle, {"enabled": "1"}, follow=True).content.decode()
    assert "Resumed cron-git." in html
    cancel = reverse("agents:cancel", args=[agent.name])
    html = client.post(cancel, {"run": run.pk}, follow=True).content.decode()
    assert f"Cancelled run #{run.pk} before it started." in html
    assert client.post(cancel, {"run": "x"}).status_code == 400
    other = active_run(make_agent("other"))
    assert client.post(cancel, {"run": other.pk}).status_code == 404


# --- Versions ---------------------------------------------------------------------------------


def test_compare_two_versions_line_by_line_as_a_fragment_or_a_page(client, viewer):
    agent = make_agent(prompt="one\ntwo\nthree\n")
    agent.prompt = "one\n2\nthree\n"
    save_agent(agent, Actor.system())
    first, second = agent.history.order_by("history_id")
    as_user(client, viewer)
    url = reverse("agents:diff", args=[agent.name])
    params = {"from": second.history_id, "to": first.history_id}  # either order
    fragment = client.get(url, params, headers={"HX-Request": "true"})
    body = fragment.content.decode()
    assert "<html" not in body and "HX-Request" in fragment["Vary"]
    assert '<li class="removed">two</li>' in body and '<li class="added">2</li>' in body
    assert "Version 1" in body and "version 2" in body
    full = page(client, url, **params)
    assert "<html" in full and "version 1 → 2" in full
    assert "Roll back" not in full  # a viewer may not
    response = client.get(url, {"from": "x"})
    assert response.status_code == 302


def test_roll_back_asks_first_showing_what_changes_then_makes_a_new_version(client, editor):
    agent = make_agent(description="first words")
    agent.description = "second words"
    save_agent(agent, Actor.system())
    first = agent.history.earliest()
    as_user(client, editor)
    url = reverse("agents:rollback", args=[agent.name, first.history_id])
    html = page(client, url)
    assert "Roll cron-git back to version 1?" in html
    assert "second words" in html and "first words" in html
    assert Agent.objects.get().description == "second words"
    html = client.post(url, follow=True).content.decode()
    assert "Rolled cron-git back to version 1: now version 3." in html
    agent.refresh_from_db()
    assert agent.description == "first words" and agent.history.count() == 3
    assert AuditEntry.objects.filter(action="agent.rollback").count() == 1
    html = client.post(url, follow=True).content.decode()
    assert "Version 1 is the same as the current one." in html


# --- Cron builder -----------------------------------------------------------------------------

PREVIEW = "/cron/preview/"


def test_cron_preview_shows_words_and_the_next_five_runs_with_offsets(client, viewer):
    as_user(client, viewer)
    html = page(
        client,
        PREVIEW,
        expression="0 */4 * * *",
        timezone="America/New_York",
        after="2026-06-01T00:00:00+00:00",
    )
    assert "Every 4 hours (America/New_York)" in html
    runs = re.findall(
        r'<time datetime="([^"]+)">([^<]+)</time> <span class="offset">([^<]+)</span>', html
    )
    assert [text for _, text, _ in runs] == [
        "Mon 2026-06-01 00:00",
        "Mon 2026-06-01 04:00",
        "Mon 2026-06-01 08:00",
        "Mon 2026-06-01 12:00",
        "Mon 2026-06-01 16:00",
    ]
    assert {offset for _, _, offset in runs} == {"UTC-04:00"}
    assert "<html" not in html
    # The grid follows what was typed.
    assert re.search(r'name="b_hour_step"[^>]*>.*<option value="4" selected>', html, re.S)
    assert 'id="cron-grid-fields" hx-swap-oob="true"' in html


def test_cron_preview_says_what_is_wrong_with_an_invalid_expression(client, viewer):
    as_user(client, viewer)
    html = page(client, PREVIEW, expression="0 25 * * *", timezone="UTC")
    assert "hour field &#x27;25&#x27; is out of range (0-23)" in html
    assert 'class="error cron-error"' in html
    html = page(client, PREVIEW, expression="0 9 * * *", timezone="Nowhere/City")
    assert "unknown time zone" in html
    assert "No schedule" in page(client, PREVIEW, expression="", timezone="UTC")


def test_cron_preview_reads_the_legacy_seconds_first_form(client, viewer):
    as_user(client, viewer)
    html = page(
        client,
        PREVIEW,
        expression="0 0 */4 * * *",
        timezone="UTC",
        after="2026-01-01T00:00:00+00:00",
    )
    assert "seconds-first (prototype) form" in html and "Every 4 hours (UTC)" in html
    assert "Thu 2026-01-01 04:00" in html
    html = page(
        client,
        PREVIEW,
        expression="30 15 9 * * Mon-Fri",
        timezone="UTC",
        after="2026-01-01T00:00:00+00:00",
    )
    assert "Thu 2026-01-01 09:15:30" in html
    assert "The grid cannot show this expression" in html


def test_cron_preview_flags_the_night_daylight_saving_moves_a_run(client, viewer):
    as_user(client, viewer)
    html = page(
        client,
        PREVIEW,
        expression="30 2 * * *",
        timezone="Europe/Paris",
        after="2026-03-27T12:00:00+01:00",
    )
    assert "Sat 2026-03-28 02:30" in html and "UTC+01:00" in html
    assert "Sun 2026-03-29 03:00" in html and "UTC+02:00" in html
    assert "02:30 does not exist on 2026-03-29 (clocks go forward); runs at 03:00 CEST" in html
    assert html.count('class="dst-note"') == 1


def test_the_grid_composes_the_expression_into_the_schedule_input(client, viewer):
    as_user(client, viewer)
    response = client.get(
        PREVIEW + "?build=1&b_minute=30&b_hour=9&b_hour=10&b_hour=11&b_hour=17"
        "&b_weekday=1&b_weekday=2&b_weekday=3&b_weekday=4&b_weekday=5&timezone=UTC"
    )
    html = response.content.decode()
    oob = re.search(r'<input type="text" name="schedule"[^>]*>', html, re.S).group(0)
    assert 'value="30 9-11,17 * * 1-5"' in oob and 'hx-swap-oob="true"' in oob
    assert "At 30 minutes past the hour" in html or "09:30" in html
    assert "Monday through Friday" in html
    html = page(client, PREVIEW, build="1", b_hour_step="6", timezone="UTC")
    assert 'value="* */6 * * *"' in html


def test_the_cron_builder_page_works_without_javascript(client, viewer):
    as_user(client, viewer)
    html = page(
        client,
        reverse("agents:cron"),
        schedule="30 2 * * *",
        timezone="Europe/Paris",
        after="2026-03-27T12:00:00+01:00",
    )
    assert 'value="30 2 * * *"' in html and "does not exist on 2026-03-29" in html
    assert re.search(r'value="30" checked', html) and re.search(
        r'name="b_hour" value="2" checked', html
    )


@pytest.mark.date_sensitive
@pytest.mark.parametrize(
    ("expression", "same"),
    [
        ("0 9 * * 1-5", True),
        ("*/15 * * * *", True),
        ("0 */4 1,15 Jan-Mar Mon,Fri", False),  # names come back as numbers
        ("5 4 * * sun", False),
    ],
)
def test_the_grid_reads_back_what_it_writes(expression, same):
    selection = cronbuilder.from_expression(expression)
    assert selection.representable
    rebuilt = selection.expression()
    assert (rebuilt == expression) is same
    from agents import cron

    start = timezone.now()
    assert [o.at for o in cron.next_runs(rebuilt, "UTC", start, 20)] == [
        o.at for o in cron.next_runs(expression, "UTC", start, 20)
    ]


# --- Escaping ---------------------------------------------------------------------------------

SCRIPT = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_descriptions_and_prompts_with_html_are_shown_as_text(client, admin_user):
    agent = make_agent("escapee", description=f"desc {SCRIPT}", prompt=f"prompt {SCRIPT}")
    agent.prompt = f"changed {SCRIPT}"
    save_agent(agent, Actor.system())
    first, last = agent.history.order_by("history_id")
    as_user(client, admin_user)
    urls = [
        HOME,
        HOME + "?q=desc",
        reverse("agents:detail", args=[agent.name]),
        reverse("agents:edit", args=[agent.name]),
        reverse("agents:diff", args=[agent.name])
        + f"?from={first.history_id}&to={last.history_id}",
        reverse("agents:rollback", args=[agent.name, first.history_id]),
        reverse("agents:new") + f"?clone={agent.name}",
        PREVIEW + "?expression=" + "%3Cscript%3E",
    ]
    for url in urls:
        html = page(client, url)
        assert "<script>alert" not in html and "<img src=x" not in html, url
    detail = page(client, reverse("agents:detail", args=[agent.name]))
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in detail
    html = page(client, HOME, q=SCRIPT)
    assert "<script>alert" not in html and "&lt;script&gt;" in html


# --- Agents saved before a rule that now refuses them ----------------------------------------


def test_an_agent_saved_before_rules_it_now_breaks_is_flagged_on_its_page(client, viewer):
    agent = make_agent("old-rules", schedule="0 */4 * * *")
    # Saved before the rules (DESIGN.md §4 "Schedule changes", "Secrets, precisely"): a step
    # larger than its field, a one-letter secret.
    Agent.objects.filter(pk=agent.pk).update(
        schedule="*/90 * * * *", variables=[secrets.secret("FLAG", "e")]
    )
    as_user(client, viewer)
    html = page(client, reverse("agents:detail", args=[agent.name]))
    flag = html[html.index('id="to-fix"') :]
    flag = flag[: flag.index("</div>")]
    assert "its next save must fix these" in flag
    assert "Schedule:" in flag and "has a step of 90" in flag
    assert "Variables: secret FLAG is shorter than 6 characters" in flag
    fine = make_agent("new-rules")
    assert 'id="to-fix"' not in page(client, reverse("agents:detail", args=[fine.name]))
