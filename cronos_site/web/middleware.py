"""What every answer needs beyond its view, for every page at once.

- Pages are private: `Cache-Control: no-store, private` on everything Django answers (the
  pages, their fragments, the admin, the login page with its CSRF token), so no browser
  history, shared cache or proxy keeps a copy of a person's agents and runs after they log out.
  A view that set its own Cache-Control keeps it. Static files never come through here: the
  static handler in front of Django (cronos_site.asgi) serves them.
- A request no page can use (a NUL character, bytes that are not UTF-8, a 5,000-character
  parameter, a date at the edge of the calendar in the admin's filters) is answered with the
  400 page saying why, before any view sees it (cronos_site.web.params.check_request).

And what an HTMX request's answer needs:

- A request whose session is gone is answered by LoginRequiredMiddleware with a redirect to
  the login page. The browser's XMLHttpRequest follows it silently, and HTMX would swap a
  whole login page into the part of the page it refreshes (a poll, a button). Such an answer
  becomes an `HX-Redirect`: the browser goes to the login page, whose `next` is the page the
  person was on (not the fragment's URL).
- A fragment answering an action does not draw the page's messages area, so a message the
  action added ("Asked run #8 to stop…") would wait for the next full page. It is sent along
  as an out-of-band swap of the messages area.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.contrib.messages import get_messages
from django.core.exceptions import FieldDoesNotExist
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import resolve_url
from django.template.loader import render_to_string
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect

from cronos_site.web import params
from cronos_site.web.access import HtmxHttpRequest
from cronos_site.web.views import site

log = logging.getLogger(__name__)


class NoStoreMiddleware:
    """`Cache-Control: no-store, private` on every answer whose view did not choose its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Cache-Control" not in response:
            patch_cache_control(response, no_store=True, private=True)
        return response


RAW_BODY_PREFIXES = ("/hooks/", "/api/")


class UsableRequestMiddleware:
    """The 400 page, saying why, for a request no page can use (params.check_request)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Webhooks and the JSON API read their own raw body (a signature is over its bytes):
        # parsing it as a form here would consume it, and a multipart body would then be a 500.
        form = QueryDict() if request.path.startswith(RAW_BODY_PREFIXES) else request.POST
        try:
            params.check_request(request.META.get("QUERY_STRING", ""), request.GET, form)
        except params.Unusable as refused:
            return _refuse(request, refused)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """The admin's list filters come from the address and reach the database layer
        unchecked (Django converts them only when the list is drawn), so a value check_request
        did not foresee can still overflow Python's calendar there, and an empty `_to_field`
        names no field: that is the address's fault, a 400, not a server error. Cronos's own
        pages read every parameter themselves, and an error there stays a 500 to be fixed."""
        match = request.resolver_match
        if (
            match is not None
            and match.namespace == "admin"
            and request.method in ("GET", "HEAD")
            and request.META.get("QUERY_STRING")
            and isinstance(exception, OverflowError | ValueError | FieldDoesNotExist)
        ):
            reason = f"The admin cannot use the filters in this address ({exception})."
            # With the traceback: what check_request could learn to refuse itself.
            return _refuse(request, params.Unusable(reason), cause=exception)
        return None


def _refuse(
    request: HttpRequest, refused: params.Unusable, cause: Exception | None = None
) -> HttpResponse:
    """The 400 page (handler400's own view), logged in one line: a hostile address is not a
    fault of the site worth Django's traceback for each request."""
    log.warning(
        "request refused", extra={"path": request.path, "reason": str(refused)}, exc_info=cause
    )
    return site.bad_request(request, refused)


class HtmxResponsesMiddleware:
    """Login redirects as full navigations, and the messages an HTMX request added."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HtmxHttpRequest) -> HttpResponse:
        if not getattr(request, "htmx", False):
            return self.get_response(request)
        storage = get_messages(request)
        pending = len(storage)  # left by earlier requests: a full page will show those
        response = self.get_response(request)
        if _to_login(response):
            redirect = HttpResponseClientRedirect(_login_url(request))
            patch_vary_headers(redirect, ("HX-Request",))  # a page asked for without HTMX: a 302
            return redirect
        # A fragment that drew the messages itself (or a full page) has used them already.
        used = getattr(storage, "used", False)
        if len(storage) > pending and not used and _is_swapped_html(response):
            _add_messages(request, response)
        return response


def _to_login(response: HttpResponse) -> bool:
    if not 300 <= response.status_code < 400 or "Location" not in response:
        return False
    return urlsplit(response["Location"]).path == resolve_url(settings.LOGIN_URL)


def _login_url(request: HtmxHttpRequest) -> str:
    """The login page, coming back to the page in the address bar (HX-Current-URL)."""
    current = request.htmx.current_url or ""
    if current and url_has_allowed_host_and_scheme(
        current, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        parts = urlsplit(current)
        back = parts.path + (f"?{parts.query}" if parts.query else "")
    else:
        back = request.get_full_path()
    return redirect_to_login(back)["Location"]


def _is_swapped_html(response: HttpResponse) -> bool:
    """A fragment HTMX will swap in: HTML, successful, not a redirect or a stream."""
    return (
        200 <= response.status_code < 300
        and not response.streaming
        and response.get("Content-Type", "").startswith("text/html")
        and not any(h in response for h in ("HX-Redirect", "HX-Location", "HX-Refresh"))
    )


def _add_messages(request: HttpRequest, response: HttpResponse) -> None:
    html = render_to_string(
        "messages.html", {"messages": get_messages(request), "oob": True}, request=request
    )
    response.content = response.content + html.encode(response.charset)
    if "Content-Length" in response:
        response["Content-Length"] = str(len(response.content))
