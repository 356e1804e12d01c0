"""The agents pages, at the site's root (the agents page is the home page)."""

from __future__ import annotations

from django.urls import path

from agents import views

app_name = "agents"

urlpatterns = [
    path("", views.agent_list, name="list"),
    path("bulk/", views.bulk, name="bulk"),
    path("agents/new/", views.agent_new, name="new"),
    path("agents/<slug:name>/", views.agent_detail, name="detail"),
    path("agents/<slug:name>/edit/", views.agent_edit, name="edit"),
    path("agents/<slug:name>/run/", views.run_now, name="run"),
    path("agents/<slug:name>/enabled/", views.toggle, name="toggle"),
    path("agents/<slug:name>/cancel/", views.cancel, name="cancel"),
    path("agents/<slug:name>/versions/diff/", views.version_diff, name="diff"),
    path(
        "agents/<slug:name>/versions/<int:history_id>/rollback/",
        views.rollback,
        name="rollback",
    ),
    path("cron/", views.cron_page, name="cron"),
    path("cron/preview/", views.cron_preview, name="cron_preview"),
]
