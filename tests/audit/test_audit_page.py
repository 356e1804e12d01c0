"""The audit page `/audit/` and its downloads (issue #15, audit export): admins only, filters
applied as they are typed (an HTMX fragment), pages by id, and downloads that carry the page's
filters, stream, and are themselves audited with the web's source and the person's address.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from datetime import UTC, datetime

import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from audit import export
from audit.actor import Actor
from audit.log import record
from audit.models import AuditEntry
from cronos_site.web.views import audit as audit_views

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


def person(name: str, source: str = AuditEntry.Source.WEB, ip: str | None = "192.0.2.7") -> Actor:
    return Actor(user=None, source=source, ip_address=ip, name=name)


def entry_at(instant: datetime, action: str, who: Actor, **fields) -> AuditEntry:
    with time_machine.travel(instant, tick=False):
        return record(who, action, **fields)


def shown_ids(response) -> list[int]:
    """The entries in the table, top to bottom."""
    return [int(pk) for pk in re.findall(r'data-entry="(\d+)"', response.content.decode())]


def text_of(response) -> str:
    html = response.content.decode()
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#x27;", "'")


def exports() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action="audit.export").order_by("id"))


@pytest.fixture
def admin_client(client, admin_user):
    """A client logged in as an admin (ada), before the entries of a test are written: the
    login is an entry of its own."""
    client.force_login(admin_user)
    return client


@pytest.fixture
def history(admin_client):
    """Entries by two people and a command, from the web, the admin and a shell, on three
    days, written after the admin's login."""
    made = {
        "amy-login": entry_at(
            datetime(2026, 6, 14, 9, 0, tzinfo=UTC), "login", person("amy"), object_name=""
        ),
        "amy-run": entry_at(
            datetime(2026, 6, 15, 9, 0, tzinfo=UTC),
            "run.trigger",
            person("amy"),
            object_name="nightly #4",
            message="manual run",
        ),
        "bob-cancel": entry_at(
            datetime(2026, 6, 15, 10, 0, tzinfo=UTC),
            "run.cancel",
            person("bob", AuditEntry.Source.ADMIN),
            object_name="nightly #4",
        ),
        "shell-edit": entry_at(
            datetime(2026, 6, 16, 9, 0, tzinfo=UTC),
            "agent.update",
            person("root (shell)", AuditEntry.Source.CLI, None),
            object_name="weekly-report",
            changes={"schedule": ["0 4 * * *", "0 5 * * 1"], "prompt": ["old", "new"]},
            message="Changed",
        ),
    }
    return {name: entry.pk for name, entry in made.items()}


def names(history: dict[str, int], ids: list[int]) -> list[str]:
    by_id = {pk: name for name, pk in history.items()}
    return [by_id[pk] for pk in ids]


# --- Who may ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "operator", "editor", "approver", "outsider"])
def test_only_admins_may_see_the_audit_page_or_download_it(client, request, role):
    record(Actor.system(), "test.action", message="private")
    client.force_login(request.getfixturevalue(role))
    for url in ("/audit/", "/audit/?who=amy", "/audit/export.csv", "/audit/export.jsonl"):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "audit.view_auditentry" in text_of(response)
        assert "Ask an administrator for a role that has it: admin" in text_of(response)
        assert "private" not in text_of(response)
    assert client.get("/audit/", headers=HX).status_code == 403
    assert exports() == []
    # Nor is the page offered.
    assert 'href="/audit/"' not in client.get("/runs/").content.decode()


def test_an_admin_and_a_superuser_see_the_page_and_its_link(client, admin_user):
    record(Actor.system(), "test.action", message="visible")
    superuser = get_user_model().objects.create_superuser("sue", password="x" * 12)
    for user in (admin_user, superuser):
        client.force_login(user)
        response = client.get("/audit/")
        assert response.status_code == 200
        assert "visible" in text_of(response)
        assert 'href="/audit/" aria-current="page">Audit</a>' in response.content.decode()
        assert 'href="/audit/">Audit</a>' in client.get("/runs/").content.decode()


def test_an_anonymous_visitor_is_sent_to_log_in(client):
    for url in ("/audit/", "/audit/export.csv"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert exports() == []


# --- What a row shows -------------------------------------------------------------------------


def test_a_row_says_who_what_when_from_where_and_the_changes(client, history, settings):
    settings.TIME_ZONE = "UTC"
    response = client.get("/audit/")
    # Newest first; the admin's login, before them, last.
    assert shown_ids(response)[:4] == sorted(history.values(), reverse=True)
    html = response.content.decode()
    row = html[html.index(f'data-entry="{history["shell-edit"]}"') :].split("</tr>")[0]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row))
    assert "2026-06-16 09:00:00" in text
    assert "root (shell)" in text and "Command line" in text
    assert "agent.update" in text and "weekly-report" in text and "Changed" in text
    assert "schedule 0 4 * * * → 0 5 * * 1" in text
    assert "prompt old → new" in text
    ip_row = html[html.index(f'data-entry="{history["amy-run"]}"') :].split("</tr>")[0]
    assert "Web" in ip_row and "192.0.2.7" in ip_row


def test_text_in_an_entry_is_shown_never_run(client, admin_user):
    record(person("<script>alert(1)</script>"), "login_failed", object_name="<b>x</b>")
    client.force_login(admin_user)
    html = client.get("/audit/").content.decode()
    assert "<script>alert(1)</script>" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- Filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("who=amy", ["amy-run", "amy-login"]),
        ("who=ad", []),
        ("who=root+%28shell%29", ["shell-edit"]),
        ("action=run", ["bob-cancel", "amy-run"]),
        ("action=run.cancel", ["bob-cancel"]),
        ("action=ru", []),
        ("object=NIGHTLY", ["bob-cancel", "amy-run"]),
        ("object=report", ["shell-edit"]),
        ("source=admin", ["bob-cancel"]),
        ("source=cli", ["shell-edit"]),
        ("since=2026-06-15", ["shell-edit", "bob-cancel", "amy-run"]),
        ("until=2026-06-15", ["bob-cancel", "amy-run", "amy-login"]),
        ("since=2026-06-15&until=2026-06-15", ["bob-cancel", "amy-run"]),
        ("who=amy&action=run&since=2026-06-15", ["amy-run"]),
    ],
)
def test_filters_choose_the_entries_shown(client, admin_user, history, settings, query, expected):
    settings.TIME_ZONE = "UTC"
    page = client.get(f"/audit/?{query}")
    assert page.status_code == 200
    assert names(history, [pk for pk in shown_ids(page) if pk in history.values()]) == expected
    # As they are typed: the same filters, answered with the results alone.
    fragment = client.get(f"/audit/?{query}", headers=HX)
    assert fragment.status_code == 200
    assert "<html" not in fragment.content.decode()
    assert shown_ids(fragment) == shown_ids(page)
    assert "HX-Request" in fragment["Vary"]
    if not expected:
        assert "No entry matches" in text_of(fragment)


@pytest.mark.date_sensitive
def test_from_and_to_are_whole_days_in_the_sites_time_zone(client, admin_user, settings):
    settings.TIME_ZONE = "America/New_York"  # UTC-4 in June
    who = person("amy")
    before = entry_at(datetime(2026, 6, 15, 3, 59, 59, tzinfo=UTC), "x.late", who)  # 14th, 23:59
    first = entry_at(datetime(2026, 6, 15, 4, 0, tzinfo=UTC), "x.first", who)  # 15th, 00:00
    last = entry_at(datetime(2026, 6, 16, 3, 59, 59, tzinfo=UTC), "x.last", who)  # 15th, 23:59
    entry_at(datetime(2026, 6, 16, 4, 0, tzinfo=UTC), "x.after", who)  # 16th, 00:00
    client.force_login(admin_user)
    page = client.get("/audit/?since=2026-06-15&until=2026-06-15&action=x")
    assert shown_ids(page) == [last.pk, first.pk]
    assert "whole days in America/New_York" in text_of(page)
    assert shown_ids(client.get("/audit/?until=2026-06-14&action=x")) == [before.pk]


def test_a_filter_the_page_cannot_use_is_ignored_and_said(client, admin_user, history):
    page = client.get("/audit/?source=moon&since=2026-02-30&who=amy")
    assert page.status_code == 400
    said = text_of(page)
    assert (
        "“moon” is not a source (web, admin, cli, api, system): the source filter is ignored"
        in (said)
    )
    assert "“2026-02-30” is not a date (YYYY-MM-DD): the From filter is ignored" in said
    assert names(history, shown_ids(page)) == ["amy-run", "amy-login"]  # the rest applies
    fragment = client.get("/audit/?until=9999-12-31", headers=HX)
    assert fragment.status_code == 200  # htmx swaps a 200 only: the message must be seen
    assert "9999-12-31 is not between 1970 and 9000: the To filter is ignored" in text_of(fragment)


# --- Pages by id --------------------------------------------------------------------------------


def test_older_and_newer_pages_follow_the_ids(client, admin_user, monkeypatch):
    monkeypatch.setattr(audit_views, "ENTRIES_PER_PAGE", 3)
    client.force_login(admin_user)
    ids = [record(person("amy"), "run.trigger", message=f"n{n}").pk for n in range(7)]
    record(person("bob"), "run.trigger")  # filtered out below
    newest = list(reversed(ids))

    first = client.get("/audit/?who=amy")
    assert shown_ids(first) == newest[:3]
    older = re.search(r'href="([^"]+)"[^>]*rel="next"', first.content.decode())[1]
    assert older == f"/audit/?who=amy&amp;before={newest[2]}"
    assert "Newer" not in text_of(first)

    second = client.get(older.replace("&amp;", "&"), headers=HX)
    assert shown_ids(second) == newest[3:6]
    third_link = re.search(r'href="([^"]+)"[^>]*rel="next"', second.content.decode())[1]
    third = client.get(third_link.replace("&amp;", "&"))
    assert shown_ids(third) == newest[6:]
    assert 'rel="next"' not in third.content.decode()  # the oldest page

    newer = re.search(r'href="([^"]+)"[^>]*rel="prev"', third.content.decode())[1]
    assert shown_ids(client.get(newer.replace("&amp;", "&"))) == newest[3:6]
    back = re.search(r'href="([^"]+)"[^>]*>« Newest', third.content.decode())[1]
    assert back == "/audit/?who=amy"


def test_a_damaged_page_link_shows_the_newest_entries_and_says_so(client, admin_user, history):
    for cursor in ("before=%C2%B2", "after=" + "9" * 30, "before=-1"):
        page = client.get(f"/audit/?{cursor}")
        assert page.status_code == 200
        assert "That page link is damaged or out of date" in text_of(page)
        assert shown_ids(page)[:4] == sorted(history.values(), reverse=True)


# --- Downloads ----------------------------------------------------------------------------------


def download_links(response) -> dict[str, str]:
    html = response.content.decode()
    return {
        name: url.replace("&amp;", "&")
        for url, name in re.findall(r'<a href="(/audit/export[^"]+)" download>([^<]+)</a>', html)
    }


@pytest.mark.date_sensitive
def test_a_download_applies_the_filters_shown_and_names_the_day(
    client, admin_user, history, settings
):
    settings.TIME_ZONE = "Europe/Paris"
    fragment = client.get("/audit/?who=amy&action=run&before=999", headers=HX)
    links = download_links(fragment)
    # The filters, not the page: a download holds every entry that matches.
    assert links == {
        "JSON Lines": "/audit/export.jsonl?who=amy&action=run",
        "CSV": "/audit/export.csv?who=amy&action=run",
    }
    # 22:30 UTC on the 14th is already the 15th in Paris: the file is named after the site's day.
    with time_machine.travel(datetime(2026, 6, 14, 22, 30, tzinfo=UTC), tick=False):
        response = client.get(links["CSV"], REMOTE_ADDR="198.51.100.4")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8; header=present"
    assert response["Content-Disposition"] == 'attachment; filename="cronos-audit-2026-06-15.csv"'
    assert "no-store" in response["Cache-Control"]
    body = b"".join(response.streaming_content).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [int(row["id"]) for row in rows] == [history["amy-run"]]
    assert rows[0]["object_name"] == "nightly #4" and rows[0]["actor"] == "amy"

    [audited] = exports()
    assert audited.actor == admin_user and audited.actor_username == "ada"
    assert audited.source == AuditEntry.Source.WEB
    assert audited.ip_address == "198.51.100.4"
    assert audited.changes == {
        "format": "csv",
        "actor": "amy",
        "action": "run",
        "rows": 1,
        "newest_id": history["shell-edit"],
    }
    assert audited.message == "exported 1 entry as CSV to a download"


def test_the_json_lines_download_is_read_line_by_line(client, admin_user, history):
    response = client.get("/audit/export.jsonl?source=cli")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/jsonl"
    assert response["Content-Disposition"].startswith('attachment; filename="cronos-audit-')
    assert response["Content-Disposition"].endswith('.jsonl"')
    body = b"".join(response.streaming_content).decode("utf-8")
    lines = [json.loads(line) for line in io.StringIO(body)]
    assert [line["id"] for line in lines] == [history["shell-edit"]]
    assert lines[0]["changes"] == {
        "schedule": ["0 4 * * *", "0 5 * * 1"],
        "prompt": ["old", "new"],
    }
    assert lines[0]["at"] == "2026-06-16T09:00:00.000000Z"
    assert exports()[0].changes["source"] == "cli"


def test_a_download_link_with_a_bad_filter_is_refused_not_widened(client, admin_user, history):
    response = client.get("/audit/export.csv?who=amy&since=2026-02-30")
    assert response.status_code == 400
    said = text_of(response)
    assert "This download link has a filter the audit page would ignore" in said
    assert "“2026-02-30” is not a date (YYYY-MM-DD)" in said
    assert "Nothing was downloaded" in said
    assert exports() == []
    assert client.get("/audit/export.xlsx").status_code == 404
    assert exports() == []


@pytest.mark.django_db(transaction=True)
def test_under_asgi_the_download_streams_piece_by_piece(admin_user, monkeypatch):
    """Daphne serves the site through ASGI, where a synchronous iterator would be read whole
    into memory first (with a warning): the download gives an asynchronous one."""
    monkeypatch.setattr(export, "CHUNK_CHARS", 300)
    monkeypatch.setattr(export, "BATCH", 4)
    client = AsyncClient()
    client.force_login(admin_user)
    made = [record(person("amy"), "run.trigger", message=f"entry {n}").pk for n in range(12)]

    async def download() -> tuple[object, list[bytes]]:
        response = await client.get("/audit/export.jsonl?who=amy")
        assert response.is_async
        return response, [piece async for piece in response.streaming_content]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "StreamingHttpResponse must consume ..." would fail
        response, pieces = async_to_sync(download)()
    assert response.status_code == 200
    assert len(pieces) > 1
    lines = [json.loads(line) for line in b"".join(pieces).decode().splitlines()]
    assert [line["id"] for line in lines] == made
    [audited] = exports()
    assert audited.ip_address == "127.0.0.1" and audited.changes["rows"] == 12
