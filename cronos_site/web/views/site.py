"""The site's own answers: the pages for a request that cannot be read (400, 413 for one too
large), a missing page (404), a server error (500) and a refused form (CSRF), inside the
site's frame with its navigation, and /favicon.ico.

Each says what happened in an element marked `data-problem`: static/cronos.js shows that text
when an HTMX request gets one of these pages back, instead of failing silently.
The 403 page is access.forbidden, next to the permission checks it explains.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponsePermanentRedirect,
    HttpResponseServerError,
)
from django.shortcuts import render
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.views.decorators.http import require_GET

from agents import limits
from cronos_site.web.params import Unusable

log = logging.getLogger(__name__)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The 400 page (handler400): a request Django refused to read. Mostly a form too large
    (DATA_UPLOAD_MAX_MEMORY_SIZE: a prompt pasted many times over), answered 413 with what the
    limits are, since nothing of it was read and so nothing can be drawn back into the form."""
    too_large = isinstance(exception, RequestDataTooBig)
    context = {
        "too_large": too_large,
        "too_many": isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)),
        "sent": _megabytes(request.META.get("CONTENT_LENGTH")),
        "most": _megabytes(settings.DATA_UPLOAD_MAX_MEMORY_SIZE),
        "prompt_chars": f"{limits.PROMPT_CHARS:,}",
        "description_chars": f"{limits.DESCRIPTION_CHARS:,}",
        "command_chars": f"{limits.COMMAND_CHARS:,}",
        # Cronos's own refusals (params.Unusable, UsableRequestMiddleware) say what was wrong;
        # Django's other reasons (a bad Host, a malformed form) stay undetailed.
        "message": str(exception) if isinstance(exception, Unusable) else "",
    }
    status = 413 if too_large else 400
    try:
        return render(request, "site/bad_request.html", context, status=status)
    except Exception:  # a request this broken may break the frame too (its host, its session)
        log.exception("the 400 page could not be drawn")
        return HttpResponseBadRequest(
            "<!doctype html><title>Bad request · Cronos</title><h1>Cronos could not read this "
            'request</h1><p data-problem>Nothing was done. Go back and try again.</p><p><a href="/">'
            "Agents</a></p>",
            status=status,
        )


def _megabytes(value) -> str:
    """A byte count (a header's text or a number) as "2.5 MB"; "" if it is not one."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return ""
    return f"{size / 1_000_000:.1f} MB"


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
