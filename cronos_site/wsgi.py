"""WSGI entry point (the admin works under any WSGI server; live output needs ASGI)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cronos_site.settings")
application = get_wsgi_application()
