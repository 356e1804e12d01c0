"""The site's own answers: the pages for a missing page (404), a server error (500) and a
refused form (CSRF), inside the site's frame with its navigation, and /favicon.ico.

Each says what happened in an element marked `data-problem`: static/cronos.js shows that text
when an HTMX request gets one of these pages back, instead of failing silently.
The 403 page is access.forbidden, next to the permission checks it explains.
"""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_not_required
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    HttpResponseServerError,
)
from django.shortcuts import render
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.views.decorators.http import require_GET

log = logging.getLogger(__name__)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The 404 page (handler404)."""
    return render(request, "site/not_found.html", {"path": request.path}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """The 500 page (handler500). Drawn without the database or the session, which may be
    what failed: a page of its own with links, not the frame that names the person."""
    try:
        return HttpResponseServerError(render_to_string("site/server_error.html"))
    except Exception:  # the page must come out whatever broke
        log.exception("the 500 page could not be drawn")
        return HttpResponseServerError(
            "<!doctype html><title>Server error · Cronos</title><h1>Something went wrong</h1>"
            '<p data-problem>Cronos failed to answer. Try again in a moment.</p><p><a href="/">'
            "Agents</a></p>"
        )


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """The page for a form Django's CSRF check refused (CSRF_FAILURE_VIEW): mostly a form from
    before a logout or a login in another tab, whose token no longer matches."""
    log.warning("form refused by the CSRF check", extra={"reason": reason, "path": request.path})
    return render(request, "site/csrf_failure.html", {"reason": reason}, status=403)


@login_not_required
@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on their own; the icon lives with the static files."""
    return HttpResponsePermanentRedirect(static("favicon.ico"))
