"""The templates name their links: `{% url %}` for pages, `{% static %}` for files.

A hard-coded path ("/runs/") still works until a URL moves; then it is a dead link nobody
notices. Seven of them had crept in before this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

# An attribute that makes the browser fetch or go somewhere, whose value starts with "/" (a
# site path, or "//host" for another site's file). `{% url %}` and `{% static %}` values start
# with "{%", and a value computed in the view with "{{": neither matches.
HARD_CODED_URL = re.compile(
    r"""\b(?:href|src|action|formaction|hx-(?:get|post|put|patch|delete))\s*=\s*["']/"""
)


def template_files() -> list[Path]:
    return sorted(
        path for folder in settings.TEMPLATES[0]["DIRS"] for path in Path(folder).rglob("*.html")
    )


def hard_coded_urls(text: str) -> list[tuple[int, str]]:
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if HARD_CODED_URL.search(line)
    ]


def test_no_template_hard_codes_a_site_url():
    files = template_files()
    assert files, "no templates found: is TEMPLATES['DIRS'] still the templates folder?"
    found = [
        f"{path.relative_to(settings.BASE_DIR)}:{number}: {line}"
        for path in files
        for number, line in hard_coded_urls(path.read_text())
    ]
    assert not found, "use {% url %} or {% static %}:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("line", "hard_coded"),
    [
        ('<a href="/runs/">Runs</a>', True),
        ("<form method='post' action='/agents/x/run/'>", True),
        ('<div hx-get="/cron/preview/">', True),
        ('<button hx-post="/bulk/">', True),
        ('<script src="//cdn.example.com/htmx.js">', True),
        ('<img src="/static/logo.png">', True),
        ("<a href=\"{% url 'runs:list' %}\">Runs</a>", False),
        ("<script src=\"{% static 'vendor/htmx.min.js' %}\">", False),
        ('<a href="{{ link }}">next</a>', False),
        ('<a href="#versions">Versions</a>', False),
        ('<a href="https://example.com/">docs</a>', False),
    ],
)
def test_the_check_tells_a_hard_coded_url_from_a_named_one(line, hard_coded):
    assert bool(hard_coded_urls(line)) is hard_coded
