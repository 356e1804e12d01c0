"""The Content-Security-Policy (issue #13, item 7): on every response, strict, and nothing in
the pages that it would refuse.

Chromium enforces it in tests/browser/test_csp.py; here, fast, through the test client: every
page of the site and the admin (tests/pages.py), its HTMX fragment, the error pages and the
redirects carry the header with no 'unsafe-inline' or 'unsafe-eval', and the HTML they send has
no inline script, <style>, style= or on*= handler, which the policy would block.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runs.models import Run
from tests.factories import make_agent
from tests.pages import admin_pages, asgi_get, site_pages

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}

STRICT = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9-]*)(\s[^>]*)?>", re.S)
# What the policy refuses inside a tag: an event handler, a style attribute, a javascript: URL,
# and htmx's hx-on (evaluated code, which htmx is told not to run).
INLINE_ATTRIBUTE = re.compile(
    r"""\s(?:on[a-z]+|style|(?:data-)?hx-on[:\w-]*)\s*=|=\s*["']?\s*javascript:""", re.I
)


def policy_of(response_headers) -> dict[str, list[str]]:
    header = response_headers.get("Content-Security-Policy")
    assert header, "no Content-Security-Policy header"
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: sources for name, *sources in directives}


def inline_code(html: str) -> list[str]:
    """The pieces of `html` the policy would refuse to run or apply."""
    found = []
    for match in TAG.finditer(html):
        name, attributes = match[1].lower(), match[2] or ""
        if name == "style":
            found.append(match[0])
        elif name == "script" and "src=" not in attributes:
            # Data for a script (json_script) is not run: the policy has nothing to say.
            if 'type="application/json"' not in attributes:
                found.append(match[0])
        elif INLINE_ATTRIBUTE.search(attributes):
            found.append(match[0][:200])
    return found


def assert_strict(response, where: str) -> None:
    policy = policy_of(response.headers)
    assert policy == STRICT, where
    header = response.headers["Content-Security-Policy"]
    assert "unsafe-" not in header and "*" not in header, where
    if response.headers.get("Content-Type", "").startswith("text/html"):
        html = response.content.decode("utf-8", "replace")
        assert inline_code(html) == [], where


@pytest.fixture(autouse=True)
def recording_engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


@pytest.fixture
def site(viewer, admin_user):
    agent = make_agent("alpha")
    agent.description = "changed"
    agent.save()  # a second version, for the diff and the rollback
    ended = timezone.now() - timedelta(hours=1)
    Run.objects.create(  # for the health page's success-rate bars
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=Run.State.SUCCEEDED,
        created_at=ended - timedelta(minutes=1),
        started_at=ended - timedelta(minutes=1),
        finished_at=ended,
    )
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    run.claim("here", 1)
    return {"agent": agent, "run": run, "viewer": viewer, "admin_user": admin_user}


def test_every_page_of_the_site_and_its_fragment_is_under_the_strict_policy(client, site):
    for page in site_pages(site["agent"], site["run"]):
        client.force_login(site[page.role])
        response = client.get(page.url)
        assert response.status_code < 400, page.url
        assert_strict(response, page.url)
        if page.route == "runs:health":  # the bars once drawn with style="width: ..."
            assert b'class="rate-bar"' in response.content
        if page.htmx:
            assert_strict(client.get(page.url, headers=HX), f"{page.url} (HTMX)")


def test_every_page_of_the_admin_is_under_the_strict_policy(client, site):
    client.force_login(site["admin_user"])
    agent = site["agent"]
    extra = [
        reverse("admin:agents_agent_versions", args=[agent.pk]),
        reverse("admin:agents_agent_from_template"),
        reverse("admin:agents_agent_add"),
        reverse("admin:agents_agent_delete", args=[agent.pk]),
        reverse("admin:agents_agent_history", args=[agent.pk]),
    ]
    for url in [page.url for page in admin_pages()] + extra:
        response = client.get(url)
        assert response.status_code < 500, url
        assert_strict(response, url)
        if url == extra[0]:  # its rollback forms asked with onsubmit= before
            assert b"data-confirm=" in response.content


def test_error_pages_and_redirects_are_under_the_strict_policy(client, site, monkeypatch):
    agent = site["agent"]
    anonymous = Client()
    assert_strict(anonymous.get("/"), "login redirect")
    assert_strict(anonymous.get("/", headers=HX), "login redirect (HTMX)")
    assert_strict(anonymous.get("/login/"), "login")
    assert_strict(anonymous.get("/admin/login/"), "admin login")
    client.force_login(site["viewer"])
    assert_strict(client.get("/no/such/page/"), "404")
    assert_strict(client.get(f"/agents/{agent.name}/edit/"), "403")
    assert_strict(client.get("/runs/?state=%00"), "400")
    assert_strict(client.get(f"/agents/{agent.name}/run/"), "405")
    strict_csrf = Client(enforce_csrf_checks=True)
    strict_csrf.force_login(site["viewer"])
    assert_strict(strict_csrf.post(f"/agents/{agent.name}/run/", headers=HX), "CSRF 403")

    from runs.scheduling import upcoming

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(upcoming, "upcoming", broken)
    client.raise_request_exception = False
    response = client.get("/upcoming/")
    assert response.status_code == 500
    assert_strict(response, "500")


def test_static_files_and_their_404_are_under_the_strict_policy():
    # Served in front of Django's middleware (cronos_site/web/static.py).
    for path, status in [(b"/static/favicon.svg", 200), (b"/static/no-such-file.js", 404)]:
        answer, headers, body = asgi_get(path)
        assert answer == status
        policy = policy_of({"Content-Security-Policy": headers.get("content-security-policy")})
        assert policy == STRICT
    assert inline_code(body.decode()) == []


@pytest.mark.parametrize(
    ("html", "refused"),
    [
        ('<script src="/static/cronos.js" defer></script>', False),
        ('<script id="d" type="application/json">{"a": 1}</script>', False),
        ('<svg><rect width="40" height="1"></rect></svg>', False),
        ('<p data-style="x" class="onward">one=two</p>', False),
        ("<script>alert(1)</script>", True),
        ("<style>p { color: red }</style>", True),
        ('<span style="width: 40%"></span>', True),
        ("<form onsubmit=\"return confirm('x')\">", True),
        ('<button hx-on:click="go()">', True),
        ('<a href="javascript:go()">', True),
    ],
)
def test_the_check_tells_inline_code_from_files_and_data(html, refused):
    assert bool(inline_code(html)) is refused
