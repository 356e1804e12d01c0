"""The run-side pages: runs, one run, health, upcoming runs, notifications."""

from __future__ import annotations

from django.urls import path

from runs import views

app_name = "runs"

urlpatterns = [
    path("runs/", views.run_list, name="list"),
    path("runs/<int:run_id>/", views.run_detail, name="detail"),
    path("runs/<int:run_id>/output/", views.run_output, name="output"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="cancel"),
    path("health/", views.health_page, name="health"),
    path("health/<slug:name>/", views.agent_health, name="agent_health"),
    path("upcoming/", views.upcoming, name="upcoming"),
    path("notifications/", views.notification_list, name="notifications"),
    path("notifications/read/", views.notifications_read, name="notifications_read"),
]
