"""What the run page shows besides the run itself: a window of its output as safe HTML (the
tail first, earlier output on demand), the claude timeline, and the agent version it ran with.
Queries for the page live here, so the view module only parses, calls and renders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

from django.db.models.functions import Length
from django.urls import reverse

from agents.versions import version_number
from cronos_site.web import ansi
from runs.models import Run, RunChunk

# The run page renders only the end of a long log: at most this many chunks and about this
# many characters (a chunk holds up to 64 KiB); earlier output comes on demand.
TAIL_CHUNKS = 200
TAIL_CHARS = 256 * 1024


@dataclass
class OutputWindow:
    """Some consecutive chunks of a run's output, as safe HTML."""

    html: str
    first_seq: int | None
    last_seq: int | None
    has_earlier: bool
    state: ansi.AnsiState


def output_window(run: Run, before: int | None = None) -> OutputWindow:
    """The last chunks before `before` (the end of the log when None), within the budget.

    Two small queries: the sizes of the candidate chunks (newest first), then the texts of the
    ones that fit, so a log of a million chunks costs what a short one does.
    """
    chunks = RunChunk.objects.filter(run_id=run.pk)
    if before is not None:
        chunks = chunks.filter(seq__lt=before)
    sizes = list(
        chunks.order_by("-seq")
        .annotate(size=Length("text"))
        .values_list("seq", "size")[:TAIL_CHUNKS]
    )
    if not sizes:
        return OutputWindow("", None, None, False, ansi.AnsiState())
    budget, first = 0, sizes[0][0]
    for seq, size in sizes:
        if budget and budget + size > TAIL_CHARS:
            break
        budget += size
        first = seq
    last = sizes[0][0]
    texts = (
        chunks.filter(seq__gte=first, seq__lte=last).order_by("seq").values_list("text", flat=True)
    )
    html, state = ansi.convert("".join(texts))
    has_earlier = RunChunk.objects.filter(run_id=run.pk, seq__lt=first).exists()
    return OutputWindow(html, first, last, has_earlier, state)


def timeline_events(run: Run) -> list[dict]:
    """The claude timeline, with each tool call's input pretty-printed for reading."""
    events = []
    for event in run.timeline or []:
        if not isinstance(event, dict):
            continue
        data = event.get("data")
        if not isinstance(data, dict):
            data = {}
        item = {"kind": event.get("kind", ""), "text": event.get("text", ""), "data": data}
        if item["kind"] == "tool_use" and data.get("input") not in (None, {}, ""):
            item["input"] = json.dumps(data["input"], indent=2, ensure_ascii=False)
        events.append(item)
    return events


def version_info(run: Run) -> dict | None:
    """The configuration version the run was made from: its number and where to read it."""
    version = run.agent_version
    if version is None:
        return None
    latest = (
        type(version)
        .objects.filter(id=version.id)
        .order_by("-history_id")
        .values_list("history_id", flat=True)
        .first()
    )
    info = {
        "number": version_number(version),
        "history_id": version.history_id,
        "date": version.history_date,
        "is_current": latest == version.history_id,
        "agent_url": reverse("agents:detail", args=[run.agent.name]) + "#versions",
    }
    if latest and latest != version.history_id:
        query = urlencode({"from": version.history_id, "to": latest})
        info["diff_url"] = f"{reverse('agents:diff', args=[run.agent.name])}?{query}"
    return info
