#!/usr/bin/env python
"""Django's command-line utility for Cronos."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cronos_site.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A setting from the environment that cannot be used: one line naming the variable,
        # not a traceback (cronos_site/settings.py raises these).
        sys.exit(f"cronos: {exc}")
