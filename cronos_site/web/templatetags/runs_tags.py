"""Template filters for the run pages."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from cronos_site.web import ansi as ansi_text
from cronos_site.web.charts import seconds_label

register = template.Library()


@register.filter
def ansi(value: object) -> SafeString:
    """Text from a run (escaped, then its ANSI colours as spans): never markup of its own."""
    return ansi_text.to_html("" if value is None else str(value))


@register.filter
def seconds(value: float | None) -> str:
    return "—" if value is None else seconds_label(value)


@register.filter
def number(value: int | None) -> str:
    """A count with thin separators: 1 234 567."""
    return "—" if value is None else f"{value:,}".replace(",", "\u2009")
