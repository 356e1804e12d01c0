"""The audit log's page (`/audit/`, admins) and its downloads (`/audit/export.jsonl`,
`/audit/export.csv`).

The page lists entries newest first, filtered by who (a user name, exactly), action (exactly,
or a dotted prefix: `run`), object (part of its name), source and days (From/To, whole days in
the site's TIME_ZONE), the filters applied as they are typed (HTMX swaps the results, as on the
runs page) and pages by id (keyset: no COUNT, no OFFSET). The downloads apply the page's
filters, not its paging, through the exporter `cronos_audit export` uses (audit/export.py),
and are audited as the web's, with the person's address.

Who may: those with `audit.view_auditentry` (the admin role, which has every permission, and
superusers; the admin's own audit-entries list asks for the same), others get the 403 page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import Http404, HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from audit import export
from audit.models import AuditEntry
from cronos_site.web.access import (
    HtmxHttpRequest,
    actor,
    refused_status,
    require_perm,
    wants_fragment,
)
from cronos_site.web.params import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    Refused,
    Unusable,
    day_param,
    id_param,
)
from cronos_site.web.streaming import streamed

ENTRIES_PER_PAGE = 50
SOURCE_CHOICES = [("", "Any source"), *AuditEntry.Source.choices]
# A user name is at most 150 characters (Django's User), an action 64, an object name 200.
TEXT_LIMIT = 200
DAMAGED_LINK = "That page link is damaged or out of date: the newest entries are shown."


@dataclass(frozen=True)
class AuditQuery:
    """What the audit page shows, read from (and written back into) its URL."""

    who: str = ""
    action: str = ""
    object: str = ""
    source: str = ""
    since: date | None = None
    until: date | None = None
    before: int | None = None  # keyset cursors: entries older (lower id) / newer than this id
    after: int | None = None
    # Filters the URL gave that the page cannot use, said to the person; they are ignored.
    problems: tuple[str, ...] = ()
    damaged_cursor: bool = False

    @classmethod
    def from_params(cls, params: QueryDict) -> AuditQuery:
        problems: list[str] = []

        def day(name: str, what: str) -> date | None:
            try:
                return day_param(params.get(name, ""), what)
            except Refused as exc:
                problems.append(str(exc))
                return None

        def cursor(name: str) -> int | None:
            return id_param(params.get(name, ""))

        source = params.get("source", "")
        if source and source not in AuditEntry.Source.values:
            problems.append(
                f"“{source[:40]}” is not a source ({', '.join(AuditEntry.Source.values)}): "
                "the source filter is ignored."
            )
            source = ""
        damaged = any(params.get(name, "") and cursor(name) is None for name in ("before", "after"))
        return cls(
            who=params.get("who", "").strip()[:TEXT_LIMIT],
            action=params.get("action", "").strip()[:TEXT_LIMIT],
            object=params.get("object", "").strip()[:TEXT_LIMIT],
            source=source,
            since=day("since", "the From filter is"),
            until=day("until", "the To filter is"),
            before=cursor("before"),
            after=cursor("after"),
            problems=tuple(dict.fromkeys(problems)),
            damaged_cursor=damaged,
        )

    @property
    def filtered(self) -> bool:
        return bool(
            self.who or self.action or self.object or self.source or self.since or self.until
        )

    def filters(self) -> export.Filters:
        """The filters as the exporter takes them: days as instants in the site's zone."""
        return export.Filters(
            since=export.day_start(self.since) if self.since else None,
            until=export.day_end(self.until) if self.until else None,
            actor=self.who,
            action=self.action,
            object=self.object,
            source=self.source,
        )

    def querystring(self, **changes: Any) -> str:
        values: dict[str, Any] = {
            "who": self.who,
            "action": self.action,
            "object": self.object,
            "source": self.source,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "before": self.before or "",
            "after": self.after or "",
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})


def entries_page(query: AuditQuery) -> tuple[list[AuditEntry], bool, bool]:
    """One page of entries, newest first, and whether there are older and newer ones."""
    entries = query.filters().apply(AuditEntry.objects.all())
    if query.after is not None and query.before is None:
        # Newer than the cursor: walk the ids upwards from it, then show newest first.
        page = list(entries.filter(id__gt=query.after).order_by("id")[: ENTRIES_PER_PAGE + 1])
        has_newer = len(page) > ENTRIES_PER_PAGE
        return page[:ENTRIES_PER_PAGE][::-1], True, has_newer
    if query.before is not None:
        entries = entries.filter(id__lt=query.before)
    page = list(entries.order_by("-id")[: ENTRIES_PER_PAGE + 1])
    return page[:ENTRIES_PER_PAGE], len(page) > ENTRIES_PER_PAGE, query.before is not None


def readable_changes(changes: Any) -> list[dict[str, str]]:
    """An entry's changes as lines to read: {field, old, new} for a field's [old, new] (a
    configuration edit), {field, value} for anything else (an export's filters)."""
    if not isinstance(changes, dict):
        return [{"field": "", "value": _text(changes)}] if changes else []
    lines = []
    for name, value in changes.items():
        if isinstance(value, list) and len(value) == 2:
            lines.append({"field": str(name), "old": _text(value[0]), "new": _text(value[1])})
        else:
            lines.append({"field": str(name), "value": _text(value)})
    return lines


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "; ".join(value) or "(none)"  # roles, variables as lines
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@require_GET
@vary_on_headers("HX-Request")
def audit_list(request: HtmxHttpRequest) -> HttpResponse:
    require_perm(request, export.VIEW_PERMISSION)
    query = AuditQuery.from_params(request.GET)
    for problem in query.problems:
        messages.warning(request, problem)
    if query.damaged_cursor:
        messages.warning(request, DAMAGED_LINK)
    page, has_older, has_newer = entries_page(query)
    base = reverse("audit:list")

    def link(**changes: Any) -> str:
        qs = query.querystring(**changes)
        return f"{base}?{qs}" if qs else base

    links = {}
    if page and has_older:
        links["older"] = link(before=page[-1].pk, after="")
    if page and has_newer:
        links["newer"] = link(after=page[0].pk, before="")
        links["newest"] = link(before="", after="")
    filters_only = query.querystring(before="", after="")
    downloads = [
        (name, reverse("audit:export", args=[fmt]) + (f"?{filters_only}" if filters_only else ""))
        for fmt, (name, _media, _extension) in export.FORMATS.items()
    ]
    context = {
        "section": "audit",
        "query": query,
        "rows": [(entry, readable_changes(entry.changes)) for entry in page],
        "links": links,
        "downloads": downloads,
        "sources": SOURCE_CHOICES,
        # Suggestions for the Who field: the site's people (the log also names shell
        # accounts, "name (shell)", and "system").
        "people": get_user_model()
        .objects.order_by("username")
        .values_list("username", flat=True)[:500],
        "time_zone": settings.TIME_ZONE,
        "date_min": f"{EARLIEST_YEAR}-01-01",
        "date_max": f"{LATEST_YEAR}-12-31",
    }
    template = "audit/entries.html" if wants_fragment(request) else "audit/audit.html"
    return render(request, template, context, status=refused_status(request, bool(query.problems)))


@require_GET
def audit_export(request: HttpRequest, fmt: str) -> StreamingHttpResponse:
    """The entries the page's filters match, all of them, oldest first, as a file to save:
    `fmt` is jsonl or csv. Audited (`audit.export`) before the first byte is sent. A filter
    the page would ignore is refused here (400), never dropped: a download must not hold more
    than was asked for."""
    require_perm(request, export.VIEW_PERMISSION)
    if fmt not in export.FORMATS:
        raise Http404(f"There is no {fmt} export: {' or '.join(export.FORMATS)}.")
    query = AuditQuery.from_params(request.GET)
    if query.problems:
        raise Unusable(
            "This download link has a filter the audit page would ignore: "
            f"{' '.join(query.problems)} Nothing was downloaded: download from the audit page."
        )
    started = export.start(query.filters(), fmt, actor(request), destination="a download")
    _name, media, extension = export.FORMATS[fmt]
    pieces = export.chunks(started)
    content = streamed(request, pieces)
    response = StreamingHttpResponse(content, content_type=media)
    day = timezone.localdate()
    response["Content-Disposition"] = f'attachment; filename="cronos-audit-{day}.{extension}"'
    return response
