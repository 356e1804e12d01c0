"""The static files as the ASGI server serves them, in front of Django (cronos_site.asgi).

Django's ASGIStaticFilesHandler answers a missing file with the 404 page but lets the
SuspiciousFileOperation of a path outside the static folders (`GET /static/../x`, sent as it
is by `curl --path-as-is`) escape to daphne, which answers 500. Here that path is a missing
file too: nothing is served from outside the folders, and the answer says so.
"""

from __future__ import annotations

from csp.constants import HEADER as CSP_HEADER
from csp.utils import build_policy
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousFileOperation
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase


class StaticFilesHandler(ASGIStaticFilesHandler):
    """Django's static file handler; a path outside the static folders is a 404."""

    def serve(self, request: HttpRequest) -> HttpResponse | FileResponse:
        try:
            return super().serve(request)
        except SuspiciousFileOperation:
            # The handler's get_response_async turns Http404 into the site's 404 page.
            raise Http404(f"{request.path} is outside the static files") from None

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response = await super().get_response_async(request)
        # Answered before Django's middleware: the Content-Security-Policy its CSPMiddleware
        # gives every other response (the 404 here is the site's page; an SVG is a document).
        if CSP_HEADER not in response:
            response[CSP_HEADER] = build_policy()
        return response
