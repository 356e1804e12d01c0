"""Hostile input on every page (issue #13, item 5): never a 500.

Every parameter of every GET page (tests/pages.py) gets a share of a table of hostile values,
something of every class of it, the page's parameters getting all of it between them: what no
page can use (a NUL character, %-encoded bytes that are not UTF-8, 5,000 characters) is a 400
page saying which parameter and why (cronos_site.web.params.check_request); anything else is
either used, or ignored with a message on the page (a date filter out of range, a damaged page
link, a cron expression that cannot run), or shown as the nearest thing the page has (the last
page for a page number past the end). The admin's list filters, which Django passes from the
address to the database layer, get the dates at the edges of the calendar on top. And a path
outside the static folders, sent as it is to the application daphne serves, is a 404.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import time_machine
from django.core.exceptions import ValidationError

from agents import cron
from cronos_site.web import agentlist
from runs.models import Run
from tests.factories import make_agent
from tests.pages import (
    SITE_ROUTES,
    admin_pages,
    asgi_get,
    routes_not_listed,
    site_pages,
)
from tests.processes import ROOT, process_env, stop, wait_for

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


def enc(text: str) -> str:
    return quote(text, safe="")


# Refused before any view sees them, whatever the page and the parameter: the value as it is
# in the address, and what the 400 page says.
REFUSED_AT_THE_DOOR = [
    (enc("\x00"), "has a NUL character"),
    (enc("Europe/Paris\x00"), "has a NUL character"),
    ("%ff", "not UTF-8"),
    ("%c3%28", "not UTF-8"),
    ("%ed%a0%80", "not UTF-8"),  # a UTF-16 surrogate, %-encoded as if it were UTF-8
    ("9" * 5000, "is 5000 characters long"),
    ("*%20" * 600, "is 1200 characters long"),  # the admin's search: an AND per word
]
REFUSED_CLASSES = [REFUSED_AT_THE_DOOR[:2], REFUSED_AT_THE_DOOR[2:5], REFUSED_AT_THE_DOOR[5:]]

# Odd values every parameter must survive: used, ignored with a message, or refused with one.
NUMBERS = [
    "",
    "0",
    "-1",
    "1" * 40,
    "9223372036854775808",
    "-9223372036854775809",
    "1e309",
    "nan",
    enc("²"),
    enc("٣"),
]
TEXTS = [
    "%20",
    enc("😀"),
    enc("\u202e"),
    enc("\r\n\t"),
    enc("<script>alert(1)</script>"),
    enc("' OR 1=1 --"),
    enc("../../etc/passwd"),
    enc("/etc/localtime"),
    "Mars%2FOlympus",
    "America",
    "x" * 1000,  # the longest a parameter may be
]
# At the edges of Python's calendar, with offsets that push them over.
DATES = [
    "0001-01-01",
    "9999-12-31",
    enc("9999-12-31T23:59:59Z"),
    enc("0001-01-01T00:00:00+14:00"),
    enc("9999-12-31T23:59:59.999999-23:59"),
    "2024-02-30",
]
HOSTILE = NUMBERS + TEXTS + DATES
SAMPLE_CLASSES = [
    ["", "-1", "1" * 40, enc("²")],
    [enc("\r\n\t"), "x" * 1000],
    ["9999-12-31", "2024-02-30"],
]
SAMPLE = [value for values in SAMPLE_CLASSES for value in values]
# Given twice: pages read one value (the last), grids read each.
TWICE = [enc("²"), "1" * 40, "9999-12-31"]

# A page's parameters share each table of values (SHARED ways): each parameter gets a share of
# every class of it (numbers, texts, dates; NUL, not UTF-8, too long), and any SHARED parameters
# in a row (the whole page, if it has fewer) get the whole table between them. A page with one
# parameter gets every value; the fragment (HTMX) and the page are shared out the same way.
SHARED = 3


def share(values: list, index: int, ways: int) -> list:
    """The share of `values` of the parameter `index` of `ways`: every `ways`-th value from
    its own place, never none (a table shorter than `ways` is dealt round again)."""
    return values[(index % ways) % len(values) :: ways]


def shares(classes: list[list], index: int, ways: int) -> list:
    return [value for values in classes for value in share(values, index, ways)]


# What a page says when it ignores a parameter it cannot use (the rest of the page still works).
SAID = {
    ("runs:list", "since"): [
        ("0001-01-01", "0001-01-01 is not between 1970 and 9000: the From filter is ignored"),
        ("2024-02-30", "is not a date (YYYY-MM-DD): the From filter is ignored"),
    ],
    ("runs:list", "until"): [
        ("9999-12-31", "9999-12-31 is not between 1970 and 9000: the To filter is ignored"),
    ],
    ("runs:list", "before"): [
        ("1_" + "9" * 30, "That page link is damaged"),
        ("253402300799000000_1", "That page link is damaged"),  # 9999-12-31
        (enc("²_1"), "That page link is damaged"),
    ],
    ("runs:list", "after"): [("-99999999999999999_1", "That page link is damaged")],
    ("runs:list", "q"): [
        (enc('"*" -x NEAR'), ""),  # FTS syntax typed by a person: searched as words
        (enc("* : ^"), "has no word to look for"),
        (enc("-only"), "a word after - only leaves runs out"),
    ],
    ("runs:output", "before"): [
        (enc("²"), "That link to earlier output is damaged"),
        ("1" * 30, "That link to earlier output is damaged"),
    ],
    ("agents:cron", "after"): [
        (enc("9999-12-31T23:59:59Z"), "the previews start from now"),
        (enc("0001-01-01T00:00:00+14:00"), "the previews start from now"),
        ("2024-01-01T00:00:00", "has no UTC offset"),
    ],
    ("agents:cron", "schedule"): [
        (enc("1" * 190 + " * * * *"), "is out of range (0-59)"),
        (enc("*/" + "9" * 190 + " * * * *"), "has a step of 999"),
        ("1" * 300, "the schedule is 300 characters long; a schedule has at most 200"),
        (enc(" ".join(["*"] * 400)), "a schedule has at most 200"),
        ("%40reboot", "Cronos has no boot event"),
        (enc("0 0 30 2 *"), "the schedule never runs"),
    ],
    ("agents:cron", "timezone"): [
        ("Mars%2FOlympus", "unknown time zone"),
        (enc("../../etc/passwd"), "unknown time zone"),
        ("America", "unknown time zone"),
    ],
    ("agents:list", "page"): [
        ("999999999999999999999", "There is no page 99999999999999999999: page 1 is shown"),
        ("-1", "There is no page -1: page 1 is shown"),
        ("x", "There is no page x: page 1 is shown"),
    ],
}
# The cron builder's fragment says the same as its page, of a schedule, to HTMX (which gets the
# messages out of band).
for (_route, _name), _said in list(SAID.items()):
    if _route == "agents:cron":
        SAID[("agents:cron_preview", _name)] = _said
SAID_WITH = {"agents:cron_preview": ("schedule=0%204%20*%20*%20*", HX)}


@pytest.fixture(autouse=True)
def recording_engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


@pytest.fixture(autouse=True)
def frozen():
    """The cron previews and the health figures count from now: one fixed instant. (Not
    `date_sensitive`: no assertion here depends on the hour, and tests/test_any_hour.py would
    run the whole fuzz again at each of its instants.)"""
    with time_machine.travel(datetime(2026, 6, 15, 12, 0, tzinfo=UTC), tick=False):
        yield


@pytest.fixture
def site(viewer, admin_user):
    agent = make_agent("alpha")
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    run.claim("here", 1)
    return {"agent": agent, "run": run, "viewer": viewer, "admin_user": admin_user}


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#x27;", "'")


def problem(html: str) -> str:
    """What a refused request says: its `data-problem` element (which static/cronos.js shows
    for HTMX), an alert in the page (the new-agent wizard's unknown template), or a warning in
    the page's messages (a filter the page ignored: the runs list, the cron builder)."""
    found = re.search(r"<(p|div)( data-problem| [^>]*role=\"alert\")[^>]*>(.*?)</\1>", html, re.S)
    if found is None:
        found = re.search(r"<(li)( class=\"message (?:warning|error)\")>(.*?)</li>", html, re.S)
    return text_of(found[3]).strip() if found else ""


def ask(client, url: str, query: str, headers: dict | None = None):
    response = client.get(f"{url}?{query}", headers=headers or {})
    # A download (the audit export) streams: its body is read the way a browser would.
    body = b"".join(response.streaming_content) if response.streaming else response.content
    html = body.decode("utf-8", "replace")
    where = f"{url}?{query[:120]}"
    assert response.status_code < 500, (where, response.status_code)
    if response.status_code == 400:
        assert problem(html), f"{where}: a 400 that does not say why"
    return response, html


def fuzz(client, page, turn: int) -> None:
    """A page without parameters gets one it does not read, which only check_request sees: such
    pages share the tables between them as a page's parameters do (`turn`: the page's place
    among them)."""
    # The fragment reads its parameters with the same code as the page: HTMX gets a sample.
    variants = [({}, [NUMBERS, TEXTS, DATES]), (HX, SAMPLE_CLASSES)]
    names = page.params or ("unknown",)
    ways = min(len(page.params), SHARED) if page.params else SHARED
    for index, name in enumerate(names, start=0 if page.params else turn):
        for headers, hostile in variants if page.htmx else variants[:1]:
            if name.startswith("b_"):  # the ten grid fields, read by one loop: a sample each
                hostile = SAMPLE_CLASSES
            for value, said in shares(REFUSED_CLASSES, index, ways):
                response, html = ask(client, page.url, f"{name}={value}", headers)
                assert response.status_code == 400, (page.url, name, value[:40])
                assert said in problem(html) and name in problem(html), problem(html)
            for value in shares(hostile, index, ways):
                ask(client, page.url, f"{name}={value}", headers)
            for value in share(TWICE, index, ways):
                ask(client, page.url, f"{name}={value}&{name}=1", headers)
                ask(client, page.url, f"{name}=1&{name}={value}", headers)
            extra, said_headers = SAID_WITH.get(page.route, ("", headers))
            for value, said in SAID.get((page.route, name), []):
                query = f"{name}={value}" + (f"&{extra}" if extra and name != "schedule" else "")
                response, html = ask(client, page.url, query, said_headers)
                assert said in text_of(html), (page.url, query[:60], text_of(html)[:3000])


def test_every_page_of_the_site_is_in_the_fuzz(site):
    pages = site_pages(site["agent"], site["run"])
    assert routes_not_listed(pages) == set()
    assert [page.route for page in pages] == SITE_ROUTES


@pytest.mark.parametrize("route", SITE_ROUTES)
def test_no_parameter_of_any_page_makes_a_500(client, site, route):
    pages = site_pages(site["agent"], site["run"])
    [page] = [page for page in pages if page.route == route]
    unread = [page.route for page in pages if not page.params]
    client.force_login(site[page.role])
    fuzz(client, page, unread.index(route) if route in unread else 0)


def test_no_filter_of_the_admin_makes_a_500(client, site):
    client.force_login(site["admin_user"])
    for page in admin_pages():
        for value, said in REFUSED_AT_THE_DOOR:
            name = (page.params or ("unknown",))[0]
            response, html = ask(client, page.url, f"{name}={value}")
            assert response.status_code == 400 and said in problem(html)
        # The lookups (whose values Cronos checks: params.check_request) share the dates at the
        # edges of the calendar and each get the numbers out of range; the other parameters
        # share the sample, as the site's pages share their tables.
        lookups = [name for name in page.params if "__" in name]
        others = [name for name in page.params if "__" not in name]
        for index, name in enumerate(lookups):
            for value in ["-1", "10000", *share(DATES, index, min(len(lookups), SHARED))]:
                ask(client, page.url, f"{name}={value}")
        for index, name in enumerate(others):
            for value in shares(SAMPLE_CLASSES, index, min(len(others), SHARED)):
                ask(client, page.url, f"{name}={value}")


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("created_at__gte=9999-12-31T23:59:59-14:00", "at the edge of the calendar"),
        ("created_at__lt=0001-01-01T00:00%2B14:00", "at the edge of the calendar"),
        ("started_at__in=2024-01-01,0001-01-01T00:00%2B14:00", "at the edge of the calendar"),
        ("created_at__year=9999", "must be between 2 and 9998"),
        ("created_at__year=9999&created_at__month=12&created_at__day=31", "between 2 and 9998"),
        ("created_at__year=2020&created_at__month=" + "9" * 30, "between 0 and 9999"),
        ("started_at__iso_year=0", "must be between 2 and 9998"),
        ("started_at__year__gte=10000", "must be between 2 and 9998"),
    ],
)
def test_the_admin_refuses_a_date_at_the_edge_of_the_calendar(client, admin_user, query, said):
    client.force_login(admin_user)
    response = client.get(f"/admin/runs/run/?{query}")
    assert response.status_code == 400
    assert said in problem(response.content.decode())


def test_the_admin_answers_a_filter_it_cannot_compute_with_a_400(client, admin_user, monkeypatch):
    """What check_request does not foresee still overflows inside Django's admin: a 400 with
    Python's reason, where a Cronos page with the same fault stays a 500 to be fixed."""
    from runs.admin import RunAdmin

    def overflowing(self, request, queryset, search_term):
        raise OverflowError("date value out of range")

    monkeypatch.setattr(RunAdmin, "get_search_results", overflowing)
    client.force_login(admin_user)
    response = client.get("/admin/runs/run/?q=x")
    assert response.status_code == 400
    assert "The admin cannot use the filters in this address (date value out of range)" in (
        problem(response.content.decode())
    )

    def broken(query, agent):
        raise OverflowError("date value out of range")

    monkeypatch.setattr("cronos_site.web.views.runs.runs_page", broken)
    client.raise_request_exception = False
    assert client.get("/runs/?state=running").status_code == 500


# --- The examples of the issue -------------------------------------------------------------------


def test_a_5000_digit_cron_field_is_a_400_and_a_200_digit_one_is_explained(client, viewer):
    client.force_login(viewer)
    for url, headers in (("/cron/", {}), ("/cron/preview/", HX)):
        response = client.get(f"{url}?schedule={'1' * 5000}%20*%20*%20*%20*", headers=headers)
        assert response.status_code == 400
        assert "“schedule” is 5008 characters long" in problem(response.content.decode())
        response = client.get(url, {"schedule": "1" * 192 + " * * * *"}, headers=headers)
        assert response.status_code == 200
        assert "the schedule is 200 characters long" not in response.content.decode()
        assert "is out of range (0-59)" in text_of(response.content.decode())


def test_the_issue_dates_are_a_400_whose_page_says_what_was_ignored(client, viewer):
    client.force_login(viewer)
    response = client.get("/runs/?since=0001-01-01&until=9999-12-31")
    assert response.status_code == 400
    html = text_of(response.content.decode())
    assert "0001-01-01 is not between 1970 and 9000: the From filter is ignored" in html
    assert "9999-12-31 is not between 1970 and 9000: the To filter is ignored" in html
    response = client.get("/cron/?after=9999-12-31T23:59:59Z")
    assert response.status_code == 400
    html = text_of(response.content.decode())
    assert "is not between 1970 and 9000: the previews start from now ignored" in html
    # An HTMX fragment keeps 200, or htmx would not swap it in and the message would be lost.
    fragment = client.get("/runs/?until=9999-12-31", headers=HX)
    assert fragment.status_code == 200
    assert "the To filter is ignored" in fragment.content.decode()
    assert client.get("/runs/?until=2026-01-01").status_code == 200


def test_a_page_number_past_the_end_shows_the_last_page(client, viewer, monkeypatch):
    monkeypatch.setattr(agentlist, "PER_PAGE", 1)
    for name in ("alpha", "beta", "gamma"):
        make_agent(name)
    client.force_login(viewer)
    for raw in ("4", "999999999999999999999", "9" * 999):
        response = client.get(f"/?page={raw}")
        assert response.status_code == 200
        html = text_of(response.content.decode())
        assert f"There is no page {raw[:20]}: page 3 is shown" in html
        assert "gamma" in html and "alpha agent" not in html


def test_a_nul_in_a_form_is_a_400_naming_the_field(client, viewer):
    client.force_login(viewer)
    response = client.post("/notifications/read/", {"ids": ["1\x00"]})
    assert response.status_code == 400
    assert "The form's “ids” has a NUL character" in problem(response.content.decode())
    client.logout()
    response = client.post("/login/", {"username": "vera\x00", "password": "x"})
    assert response.status_code == 400


def test_too_many_parameters_is_a_400_page(client, viewer):
    client.force_login(viewer)
    response = client.get("/runs/?" + "&".join(f"a{n}=1" for n in range(1001)))
    assert response.status_code == 400
    assert "more fields or parameters than any Cronos page or form sends" in problem(
        response.content.decode()
    )


# --- Static files, through the application daphne serves ---------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        b"/static/../x",
        b"/static/../../../etc/passwd",
        b"/static/..%2f..%2fetc/passwd",
        b"/static/%2e%2e/cronos_site/settings.py",
        b"/static/vendor/../../cronos_site/settings.py",
    ],
)
def test_a_static_path_outside_the_static_folders_is_a_404(path):
    status, headers, body = asgi_get(path)
    assert status == 404
    assert b"There is nothing at" in body
    assert b"SECRET_KEY" not in body and b"root:" not in body


def test_static_files_are_still_served():
    status, headers, body = asgi_get(b"/static/vendor/../cronos.css")
    assert status == 200
    assert headers["content-type"].startswith("text/css")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raw_get(port: int, path: bytes) -> bytes:
    """The status line for GET `path` exactly as written (no client tidies `..` away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.integration
def test_daphne_answers_a_path_outside_the_static_folders_with_a_404(tmp_path):
    port = _free_port()
    log = tmp_path / "daphne.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("daphne")), "-b", "127.0.0.1", "-p", str(port)]
            + ["cronos_site.asgi:application"],
            cwd=ROOT,
            env=process_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers() -> bool:
        try:
            return _raw_get(port, b"/static/cronos.css").endswith(b"200 OK")
        except OSError:
            return proc.poll() is not None

    try:
        wait_for(answers, 60, "daphne")
        assert proc.poll() is None, log.read_text()
        for path in (b"/static/../x", b"/static/../../../etc/passwd", b"/static/%2e%2e/x"):
            assert _raw_get(port, path) == b"HTTP/1.1 404 Not Found", log.read_text()
        assert _raw_get(port, b"/runs/?q=%ff") == b"HTTP/1.1 400 Bad Request"
    finally:
        stop(proc, 5)
    assert "Traceback" not in log.read_text()


def test_a_schedule_longer_than_an_agent_stores_is_refused_before_its_numbers_are_read(site):
    """Python refuses int() of more than 4,300 digits with a ValueError: the agent form (an
    editor's POST, which no address bound covers) answered such a schedule with a 500."""
    with pytest.raises(cron.CronError, match="is 5008 characters long; a schedule has at most 200"):
        cron.parse("1" * 5000 + " * * * *")
    agent = site["agent"]
    agent.schedule = "1" * 5000 + " * * * *"
    with pytest.raises(ValidationError) as refused:
        agent.full_clean()
    assert "a schedule has at most 200" in str(refused.value.message_dict["schedule"])
