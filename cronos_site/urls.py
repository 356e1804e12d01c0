from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "Cronos"
admin.site.site_title = "Cronos"
admin.site.index_title = "Agents, runs and audit"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
]
