"""ASGI entry point: HTTP through Django, websockets through Channels (daphne serves both)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from cronos_site.web.hooks import WebhookSizeGuard, install_daphne_guard
from cronos_site.web.static import StaticFilesHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cronos_site.settings")
# Static files are served by the app itself so that the embedded shape needs nothing in
# front of it; a scaled-out site may put a proxy or CDN-less cache before /static/.
# Webhook bodies over the limit are refused from their Content-Length, before Django reads them
# (and, under daphne, before daphne reads them: cronos_site.web.hooks).
django_asgi_app = WebhookSizeGuard(StaticFilesHandler(get_asgi_application()))
install_daphne_guard()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs apps loaded)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from cronos_site.web.consumers import NotificationConsumer, RunOutputConsumer  # noqa: E402
from cronos_site.web.sockets import SameOriginValidator  # noqa: E402

# Every consumer is a sockets.GuardedConsumer (tests/test_websocket_security.py checks it):
# admitted with its page's permission, closed once the session, account or permission ends.
websocket_urlpatterns = [
    path("ws/runs/<int:run_id>/", RunOutputConsumer.as_asgi()),
    path("ws/notifications/", NotificationConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Scheme, host and port of the Origin, not the host name alone (sockets.origin_allowed).
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
