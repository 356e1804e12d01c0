"""The API's browsable docs (`/api/v1/docs`, Swagger UI from django-ninja's own static files)
and the page where people make their tokens, in real Chromium under the site's strict
Content-Security-Policy: nothing refused, nothing loaded from anywhere but the site, and both
usable (a token made on one authorizes a call tried on the other)."""

from __future__ import annotations

import re

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from audit import tokens
from audit.actor import Actor
from tests.browser.test_csp import Watched

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ENDPOINTS = 10  # every operation of the API (tests/api/test_api.py ENDPOINTS)
TOKEN = re.compile(r"cronos_[A-Za-z0-9_-]{43}")


def test_the_docs_page_lists_every_endpoint_and_tries_one_with_a_token(web, browser_page, approver):
    watched = Watched(browser_page(None))  # the docs are public; the calls need the token
    page = watched.page
    loaded: list[str] = []
    page.on("request", lambda request: loaded.append(request.url))

    watched.visit(f"{web}/api/v1/docs")
    expect(page.locator(".opblock")).to_have_count(ENDPOINTS)
    expect(page.locator(".info .title")).to_contain_text("Cronos API")

    _, secret = tokens.create_token(approver, "docs", Actor.cli())
    page.locator(".btn.authorize").first.click()
    page.locator(".modal-ux input").first.fill(secret)
    page.locator(".modal-ux .btn.authorize").click()
    page.locator(".modal-ux .btn-done").click()

    me = page.locator(".opblock", has_text="/api/v1/me")
    me.locator(".opblock-summary").click()
    me.locator(".try-out__btn").click()
    me.locator(".btn.execute").click()
    answer = me.locator(".live-responses-table .response-col_description:not(.col_header)")
    expect(answer).to_contain_text('"username": "april"')
    expect(me.locator(".live-responses-table .response-col_status:not(.col_header)")).to_have_text(
        "200"
    )

    watched.assert_clean()
    outside = [url for url in loaded if not url.startswith((web, "data:"))]
    assert outside == [], outside
    assert secret not in " ".join(loaded)  # sent in a header, never in an address


def test_a_person_makes_copies_and_revokes_a_token_on_their_page(web, browser_page, viewer):
    watched = Watched(browser_page(viewer))
    page = watched.page
    watched.visit(f"{web}/")
    page.get_by_role("link", name="API tokens").click()
    page.wait_for_url(f"{web}/account/tokens/")

    page.fill("#token-name", "laptop")
    page.get_by_role("button", name="Create token").click()
    field = page.locator("#new-token")
    expect(field).to_have_value(TOKEN)
    secret = field.input_value()
    assert tokens.authenticate(secret) == viewer
    copy = page.get_by_role("button", name="Copy")
    expect(copy).to_be_visible()  # shown by static/account.js, hidden without it
    copy.click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()

    page.get_by_role("button", name="Revoke").click()
    page.wait_for_url(f"{web}/account/tokens/")
    expect(page.locator("#messages")).to_contain_text("Revoked the token laptop")
    expect(page.locator("#new-token")).to_have_count(0)  # shown once, never again
    expect(page.locator("tr.revoked")).to_contain_text("laptop")
    assert tokens.authenticate(secret) is None
    watched.assert_clean()
