from __future__ import annotations

from django.apps import AppConfig


class WebConfig(AppConfig):
    """The pages above every app: views, forms, template tags, websocket consumers."""

    name = "cronos_site.web"
    label = "web"
