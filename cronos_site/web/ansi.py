"""Run output as safe HTML: escaped first, then ANSI colour codes made into spans.

Agents print whatever they like: HTML, script tags, terminal colours, progress bars. The page
must show all of it as text, never as markup, and colours readably. So the text is HTML-escaped
*first* (`&`, `<`, `>` only: escaping cannot touch an escape sequence, whose bytes are ESC, `[`,
digits, `;` and a final letter) and only then are escape sequences replaced:

- SGR (`ESC [ ... m`): reset, bold, dim, italic, underline, the 8 colours and their bright
  forms, foreground and background, and the codes that undo each. These become
  `<span class="ansi-...">`; classes come from a fixed table, never from the output.
- Every other escape sequence (cursor moves, 256/true colour, OSC titles and links) and the
  C0 control characters other than tab, newline and carriage return are dropped.

What an escape sequence is, is agents.masking's ESCAPE_SEQUENCE: secrets are masked in the text
as it shows here, so the page cannot join what the masking kept apart.

The same rules are in static/runs.js for chunks that arrive live; both keep their state between
pieces of output, because a colour set in one chunk goes on in the next and an escape sequence
may be cut in two by a chunk boundary.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field, replace

from django.utils.safestring import SafeString, mark_safe

from agents.masking import ESCAPE_SEQUENCE

COLOURS = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")

# One token: an escape sequence (CSI, OSC, or a two-character escape), or a control character.
# CSI: ESC [ parameters (0x30-0x3F) intermediates (0x20-0x2F) final (0x40-0x7E).
# OSC: ESC ] ... terminated by BEL or ESC \ (after escaping, its text may hold entities).
_TOKEN = re.compile(ESCAPE_SEQUENCE)
# A token that sets the graphic rendition (SGR): its parameters.
_SGR = re.compile(r"\x1b\[([0-?]*)[ -/]*m")
# An escape sequence cut off by the end of a piece of output: kept for the next piece.
_PARTIAL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|[ -/]*)?$")
# An unterminated OSC this long is not waiting for its end any more: drop it.
MAX_PENDING = 256


@dataclass(frozen=True)
class AnsiState:
    """The graphic rendition in force, plus an escape sequence cut off at the end of a piece."""

    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    fg: str = ""  # "red", "bright-red", or "" (the default)
    bg: str = ""
    pending: str = field(default="", compare=False)

    def classes(self) -> list[str]:
        names = []
        if self.bold:
            names.append("ansi-bold")
        if self.dim:
            names.append("ansi-dim")
        if self.italic:
            names.append("ansi-italic")
        if self.underline:
            names.append("ansi-underline")
        if self.fg:
            names.append(f"ansi-{self.fg}")
        if self.bg:
            names.append(f"ansi-bg-{self.bg}")
        return names

    def as_attr(self) -> str:
        """The state as a data attribute value, for the browser to carry on from."""
        return " ".join(self.classes())

    @classmethod
    def from_attr(cls, value: str) -> AnsiState:
        state = cls()
        for name in value.split():
            if name == "ansi-bold":
                state = replace(state, bold=True)
            elif name == "ansi-dim":
                state = replace(state, dim=True)
            elif name == "ansi-italic":
                state = replace(state, italic=True)
            elif name == "ansi-underline":
                state = replace(state, underline=True)
            elif name.startswith("ansi-bg-") and _known_colour(name[8:]):
                state = replace(state, bg=name[8:])
            elif name.startswith("ansi-") and _known_colour(name[5:]):
                state = replace(state, fg=name[5:])
        return state


def _known_colour(name: str) -> bool:
    return name.removeprefix("bright-") in COLOURS


def apply_sgr(state: AnsiState, params: str) -> AnsiState:
    """The state after one SGR sequence; codes outside the supported set are ignored."""
    codes = params.replace(":", ";").split(";") if params else ["0"]
    values = [int(code) if code.isdigit() else 0 for code in codes]
    i = 0
    while i < len(values):
        code = values[i]
        i += 1
        if code == 0:
            state = AnsiState()
        elif code == 1:
            state = replace(state, bold=True)
        elif code == 2:
            state = replace(state, dim=True)
        elif code == 3:
            state = replace(state, italic=True)
        elif code == 4:
            state = replace(state, underline=True)
        elif code == 22:
            state = replace(state, bold=False, dim=False)
        elif code == 23:
            state = replace(state, italic=False)
        elif code == 24:
            state = replace(state, underline=False)
        elif 30 <= code <= 37:
            state = replace(state, fg=COLOURS[code - 30])
        elif code == 39:
            state = replace(state, fg="")
        elif 40 <= code <= 47:
            state = replace(state, bg=COLOURS[code - 40])
        elif code == 49:
            state = replace(state, bg="")
        elif 90 <= code <= 97:
            state = replace(state, fg=f"bright-{COLOURS[code - 90]}")
        elif 100 <= code <= 107:
            state = replace(state, bg=f"bright-{COLOURS[code - 100]}")
        elif code in (38, 48, 58):
            # 256-colour (5;n) and true colour (2;r;g;b): not shown, their arguments skipped.
            if i < len(values) and values[i] == 5:
                i += 2
            elif i < len(values) and values[i] == 2:
                i += 4
    return state


def _wrap(text: str, state: AnsiState) -> str:
    classes = state.classes()
    if not classes or not text:
        return text
    return f'<span class="{" ".join(classes)}">{text}</span>'


def convert(text: str, state: AnsiState | None = None) -> tuple[SafeString, AnsiState]:
    """`text` as safe HTML, and the state to carry on with for the text that follows it."""
    state = state or AnsiState()
    text = state.pending + text
    pending = ""
    partial = _PARTIAL.search(text)
    if partial is not None:
        # Held for the next piece; one that long is not waiting for its end: dropped.
        if len(text) - partial.start() <= MAX_PENDING:
            pending = text[partial.start() :]
        text = text[: partial.start()]
    escaped = html.escape(text, quote=False)  # escape first: nothing below sees raw markup
    out: list[str] = []
    position = 0
    for match in _TOKEN.finditer(escaped):
        out.append(_wrap(escaped[position : match.start()], state))
        position = match.end()
        token = match.group()
        if token[-1] == "m" and (sgr := _SGR.fullmatch(token)):
            state = apply_sgr(state, sgr.group(1))
    out.append(_wrap(escaped[position:], state))
    # Safe: every character of the output was escaped above; the spans come from a fixed table.
    return mark_safe("".join(out)), replace(state, pending=pending)


def to_html(text: str) -> SafeString:
    """A whole piece of output as safe HTML, starting from the default rendition."""
    return convert(text)[0]


def plain(text: str) -> str:
    """The output as plain text: every escape sequence and stray control character removed."""
    text = _TOKEN.sub("", text)
    return _PARTIAL.sub("", text)
