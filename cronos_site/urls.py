from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from cronos_site.api.views import api_urls
from cronos_site.web.urls import account_urls, agent_urls, audit_urls, run_urls
from cronos_site.web.views import hooks

admin.site.site_header = "Cronos"
admin.site.site_title = "Cronos"
admin.site.index_title = "Agents, runs and audit"

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # Webhook deliveries: authenticated by the trigger's token or signature, not by a session.
    path("hooks/<str:hook_id>", hooks.receive, name="hook"),
    path("hooks/<str:hook_id>/", hooks.receive),
    # The JSON API: authenticated by a personal access token, not by a session.
    path("api/v1/", api_urls()),
    path("", include(account_urls)),
    path("", include(run_urls)),
    path("", include(audit_urls)),
    path("", include(agent_urls)),
]

# A refused action shows why, inside the site's pages.
handler400 = "cronos_site.web.views.site.bad_request"
handler403 = "cronos_site.web.access.forbidden"
handler404 = "cronos_site.web.views.site.page_not_found"
handler500 = "cronos_site.web.views.site.server_error"
