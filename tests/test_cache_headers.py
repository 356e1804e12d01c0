"""Pages are private (issue #13, item 7b): `Cache-Control: no-store, private` on every page and
fragment a person is shown (the admin's, the JSON and HTMX answers, the login page with its
CSRF token, the error pages), so no browser history, shared cache or proxy keeps a copy after
a logout; a view's own Cache-Control is kept; the static files are not marked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.http import HttpResponse
from django.test import RequestFactory

from cronos_site.web.middleware import NoStoreMiddleware
from runs.models import Notification, Run
from tests.factories import make_agent
from tests.pages import SITE_ROUTES, admin_pages, asgi_get, site_pages

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


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


def private(response) -> bool:
    words = {word.strip() for word in response.get("Cache-Control", "").split(",")}
    return {"no-store", "private"} <= words


@pytest.mark.parametrize("route", SITE_ROUTES)
def test_every_page_and_its_fragment_is_not_stored(client, site, route):
    [page] = [page for page in site_pages(site["agent"], site["run"]) if page.route == route]
    client.force_login(site[page.role])
    for headers in ({}, HX) if page.htmx else ({},):
        response = client.get(page.url, headers=headers)
        assert response.status_code in (200, 301, 302), (page.url, response.status_code)
        assert private(response), (page.url, headers, response.get("Cache-Control"))


def test_every_admin_page_is_not_stored(client, site):
    client.force_login(site["admin_user"])
    pages = admin_pages()
    assert len(pages) > 10
    for page in pages:
        response = client.get(page.url)
        # (the autocomplete view without its parameters is a 403: marked all the same)
        assert response.status_code < 500, (page.url, response.status_code)
        assert private(response), (page.url, response.get("Cache-Control"))


def test_json_answers_are_not_stored(client, viewer):
    make_agent("alpha")
    client.force_login(viewer)
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "runs", "model_name": "run", "field_name": "agent", "term": "al"},
    )
    assert response["Content-Type"] == "application/json"
    assert "alpha" in response.content.decode()
    assert private(response)
    response = client.get("/admin/jsi18n/")  # an admin view Django marks cacheable itself
    assert response.status_code == 200 and private(response)


def test_the_login_page_and_the_way_to_it_are_not_stored(client, viewer):
    page = client.get("/login/")
    assert "csrfmiddlewaretoken" in page.content.decode()
    assert private(page)
    assert private(client.get("/runs/"))  # the redirect to the login page
    assert private(client.get("/runs/", headers=HX))  # HX-Redirect to it
    logged_in = client.post("/login/", {"username": "vera", "password": "correct horse battery"})
    assert logged_in.status_code == 302 and private(logged_in)


def test_answers_to_forms_and_errors_are_not_stored(client, viewer, admin_user):
    agent = make_agent("alpha")
    Notification.objects.create(kind=Notification.Kind.FAILED, agent=agent, title="alpha failed")
    client.force_login(viewer)
    read = client.post("/notifications/read/", {"all": "1"}, headers=HX)
    assert read.status_code == 200 and private(read)
    assert private(client.post("/notifications/read/", {"all": "1"}))  # a redirect back
    for url, status in (
        ("/runs/99999/", 404),
        ("/agents/alpha/edit/", 403),
        ("/runs/?q=%00", 400),
    ):
        response = client.get(url)
        assert response.status_code == status and private(response), url
    client.force_login(admin_user)
    cancel = client.post(f"/agents/{agent.name}/cancel/", {"run": "x"})
    assert cancel.status_code == 400 and private(cancel)


def test_a_view_that_chose_its_own_cache_header_keeps_it():
    def cacheable(request):
        response = HttpResponse("an icon")
        response["Cache-Control"] = "public, max-age=86400"
        return response

    response = NoStoreMiddleware(cacheable)(RequestFactory().get("/"))
    assert response["Cache-Control"] == "public, max-age=86400"
    plain = NoStoreMiddleware(lambda request: HttpResponse("a page"))(RequestFactory().get("/"))
    assert private(plain)


def test_the_admin_keeps_its_own_never_cache_header(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/admin/")
    assert "must-revalidate" in response["Cache-Control"]  # Django's never_cache, not ours
    assert private(response)


def test_static_files_are_not_marked():
    status, headers, body = asgi_get(b"/static/cronos.css")
    assert status == 200 and body
    assert "no-store" not in headers.get("cache-control", "")
