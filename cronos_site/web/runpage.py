"""What the run page shows besides the run itself: a window of its output as safe HTML (the
tail first, earlier output on demand), the claude timeline, and the agent version it ran with.
Queries for the page live here, so the view module only parses, calls and renders."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from django.db.models import Q
from django.db.models.functions import Length
from django.urls import reverse
from django.utils.safestring import mark_safe

from agents.versions import version_number
from cronos_site.web import ansi
from runs.models import Run, RunChunk

# The run page renders only the end of a long log: at most this many chunks and about this
# many characters (a chunk holds up to 64 KiB); earlier output comes on demand.
TAIL_CHUNKS = 200
TAIL_CHARS = 256 * 1024
# How far back the colours in force where a window starts are looked for: to the newest
# sequence that sets every attribute (a reset), or this many chunks; past that, the default.
STATE_LOOKBACK_CHUNKS = 64
STATE_BATCH = 8


@dataclass
class OutputWindow:
    """Some consecutive output of a run, as safe HTML."""

    html: str
    first_seq: int | None
    last_seq: int | None
    has_earlier: bool
    state: ansi.AnsiState
    marked: bool = False  # the line asked for (`mark`) is in it, highlighted


def output_window(
    run: Run, before: int | None = None, mark: tuple[int, int] | None = None
) -> OutputWindow:
    """The output before chunk `before` (up to the end of the log when None), within the budget.

    Chunks are cut wherever the output was flushed, so one may start in the middle of a line.
    Every window therefore starts at the first line start at or after the start of its first
    chunk (`_line_start`), and the window before it (`before=` that chunk) ends exactly there:
    the tail starts at a line, "load earlier" joins seamlessly, and the pages read the same
    without JavaScript. A window is rendered with the colours in force where it starts
    (`_state_at`). The tail ends where the log ends, and the live stream resumes after it.

    Three small queries: the sizes of the candidate chunks (newest first), then the texts of
    the ones that fit (and of their neighbours, for the boundaries), and the colours; so a log
    of a million chunks costs what a short one does.
    """
    chunks = RunChunk.objects.filter(run_id=run.pk)
    scope = chunks if before is None else chunks.filter(seq__lt=before)
    sizes = list(
        scope.order_by("-seq")
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
    wanted = Q(seq__gte=first - 1, seq__lte=last)
    if before is not None:
        wanted |= Q(seq=before)
    texts = dict(chunks.filter(wanted).values_list("seq", "text"))
    body = "".join(texts.get(seq, "") for seq in range(first, last + 1))
    if before is not None and before in texts:
        # Up to where the window after this one starts: the end of a line.
        body += texts[before][: _line_start(texts.get(before - 1), texts[before])]
    start = _line_start(texts.get(first - 1), texts.get(first, ""))
    # The part of the first chunk before its first line start belongs to the window before.
    _, state = ansi.convert(body[:start], _state_at(run.pk, first))
    line = _marked_line(texts, first, last, start, body, mark)
    if line is None:
        html, state = ansi.convert(body[start:], state)
        return OutputWindow(html, first, last, first - 1 in texts, state)
    # The line a search link points to (runs.search.Hit.anchor), in a span of its own: each
    # piece is converted with the colours the one before left, as chunks are.
    line_start, line_end = line
    before_html, state = ansi.convert(body[start:line_start], state)
    line_html, state = ansi.convert(body[line_start:line_end], state)
    after_html, state = ansi.convert(body[line_end:], state)
    assert mark is not None
    anchor = f"line-{mark[0]}-{mark[1]}"
    # Safe: the three pieces are ansi.convert's (escaped), the anchor two integers.
    html = mark_safe(
        f'{before_html}<span class="hit" id="{anchor}" data-hit>{line_html}</span>{after_html}'
    )
    return OutputWindow(html, first, last, first - 1 in texts, state, marked=True)


def _marked_line(
    texts: dict[int, str],
    first: int,
    last: int,
    start: int,
    body: str,
    mark: tuple[int, int] | None,
) -> tuple[int, int] | None:
    """Where in `body` (the window's text, shown from `start`) the line `mark` is: line
    `mark[1]` (from 1) of chunk `mark[0]`; None when it is not in the window. A line cut between
    chunks is marked whole, from where it starts (in the chunk before, for line 1)."""
    if mark is None or not first <= mark[0] <= last or mark[0] not in texts:
        return None
    seq, number = mark
    offset = sum(len(texts.get(s, "")) for s in range(first, seq))
    text = texts[seq]
    position = 0
    for _ in range(number - 1):
        position = text.find("\n", position) + 1
        if position == 0:
            return None  # the chunk has fewer lines
    if number == 1:
        line_start = body.rfind("\n", 0, offset) + 1
    else:
        line_start = offset + position
    if line_start < start:
        return None  # it starts in the part of the first chunk the window before shows
    end = body.find("\n", offset + position)
    return line_start, len(body) if end == -1 else end


def output_at(run: Run, mark: tuple[int, int] | None) -> tuple[OutputWindow, bool]:
    """The run page's output: the tail, with the line `mark` (chunk, line from 1) highlighted
    when it is there; else, for an older line, the window around it (and True: that window is
    not the end of the log, so the page does not follow live output from it). A line no longer
    stored (retention) or never there gives the tail, unmarked."""
    window = output_window(run, mark=mark)
    if mark is None or window.marked or window.first_seq is None or mark[0] >= window.first_seq:
        return window, False
    around = output_window(run, before=window_around(run, mark[0]), mark=mark)
    return (around, True) if around.marked else (window, False)


def window_around(run: Run, seq: int) -> int:
    """The `before` of a window of output that holds chunk `seq` and about a quarter of the
    budget after it (the rest before it): where a link to an old line opens the run page."""
    after = (
        RunChunk.objects.filter(run_id=run.pk, seq__gt=seq)
        .order_by("seq")
        .annotate(size=Length("text"))
        .values_list("seq", "size")[: TAIL_CHUNKS // 4]
    )
    end, budget = seq + 1, 0
    for chunk_seq, size in after:
        if budget + size > TAIL_CHARS // 4:
            break
        budget += size
        end = chunk_seq + 1
    return end


def _line_start(previous: str | None, text: str) -> int:
    """Where the first line that starts in chunk `text` starts: at the chunk's start when the
    chunk before it ended a line as shown (an escape sequence after the line break, or cut
    off at the end, shows nothing), or there is none; else just after its first line break.
    A chunk without one is in the middle of a line longer than a chunk: it is cut at its
    start. static/runs.js decides the same way when it trims live output."""
    if previous is None or _ends_line(previous):
        return 0
    return text.find("\n") + 1


_TAG = re.compile(r"<[^>]*>")


def _ends_line(text: str) -> bool:
    if text.endswith("\n"):
        return True
    # What it shows: its text as the page has it (escaped, so "<" only starts a tag).
    return _TAG.sub("", ansi.convert(text)[0]).endswith("\n")


# An SGR sequence in raw output (runs/ansi.py's rules).
_SGR = re.compile(r"\x1b\[([0-?]*)[ -/]*m")
_EVERY_ATTRIBUTE = ansi.AnsiState(
    bold=True, dim=True, italic=True, underline=True, fg="red", bg="red"
)


def _resets(text: str) -> bool:
    """Whether `text` holds a sequence that sets every attribute (a reset, mostly): what the
    colours were before it does not matter after it."""
    return any(
        ansi.apply_sgr(_EVERY_ATTRIBUTE, m.group(1)) == ansi.apply_sgr(ansi.AnsiState(), m.group(1))
        for m in _SGR.finditer(text)
    )


def _state_at(run_id: int, seq: int) -> ansi.AnsiState:
    """The colours in force, and any escape sequence cut off, where chunk `seq` starts.

    Only chunks with an escape character can change them: those before `seq` are read newest
    first, a few at a time, back to the newest one that resets them (or the lookback's
    limit), then applied in order. A sequence cut at the end of one of them is completed by
    the chunks after it, which are read for that alone.
    """
    if seq <= 0:
        return ansi.AnsiState()
    marked = RunChunk.objects.filter(
        run_id=run_id,
        seq__gte=max(0, seq - STATE_LOOKBACK_CHUNKS),
        seq__lt=seq,
        text__contains="\x1b",
    ).order_by("-seq")
    found: list[tuple[int, str]] = []  # newest first
    reset = False
    while not reset:
        batch = list(marked.values_list("seq", "text")[len(found) : len(found) + STATE_BATCH])
        for chunk in batch:
            found.append(chunk)
            if _resets(chunk[1]):
                reset = True
                break
        if len(batch) < STATE_BATCH:
            break
    state = ansi.AnsiState()
    after = None  # the chunk after the last one applied
    for chunk_seq, text in reversed(found):
        if after is not None:
            state = _complete(run_id, after, chunk_seq, state)
        state = ansi.convert(text, state)[1]
        after = chunk_seq + 1
    if after is not None:
        state = _complete(run_id, after, seq, state)
    return state


def _complete(run_id: int, start: int, end: int, state: ansi.AnsiState) -> ansi.AnsiState:
    """`state` after chunks `start` to `end` (excluded), which hold no escape character: they
    can only complete (or outgrow) a sequence that was cut off."""
    seq = start
    while state.pending and seq < end:
        text = RunChunk.objects.filter(run_id=run_id, seq=seq).values_list("text", flat=True)
        state = ansi.convert(text.first() or "", state)[1]
        seq += 1
    return state


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


def patch_lines(patch: str, limit: int = 20000) -> list[tuple[str, str]]:
    """A unified diff (git diff) as (kind, text) lines for the review page to colour: "file"
    (a `diff --git` header), "meta" (index, mode, rename, binary lines), "hunk" (@@), "added",
    "removed", "same". At most `limit` lines (the rest is counted in a last "meta" line)."""
    lines: list[tuple[str, str]] = []
    in_header = False
    raw = patch.splitlines()
    for text in raw[:limit]:
        if text.startswith("diff --git "):
            kind, in_header = "file", True
        elif text.startswith("@@"):
            kind, in_header = "hunk", False
        elif in_header:
            kind = "meta"
        elif text.startswith("+"):
            kind = "added"
        elif text.startswith("-"):
            kind = "removed"
        else:
            kind = "same"
        lines.append((kind, text))
    if len(raw) > limit:
        lines.append(("meta", f"… {len(raw) - limit} more lines not shown"))
    return lines
