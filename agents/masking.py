"""Secrets masked in what an agent prints: one rule for every place a person or a file could see
them (DESIGN.md §4 "Secrets, precisely"). The executor masks a run's output as bytes before it
is stored (runs.execution.output, across reads), and the claude runner's timeline, result and
reasons as text (agents.secrets.mask_text); both come here.

What is looked for (the *pieces* of a secret value, each in every *spelling*):

- the value; when it has several lines, also each line of at least MIN_SECRET_CHARS characters
  on its own (spaces around a line ignored): a PEM body line printed alone is masked. A value
  shorter than MIN_SECRET_CHARS is refused at save (agents.validation); one kept by an agent
  saved before that rule is masked only where it stands as a whole word (not inside a longer
  run of letters, digits or `_`): masking every "e" of the output would reveal it, not hide it.
- each piece as printed, and as JSON writes it (the claude runner's stream): a quote, a
  backslash, a newline or non-ASCII escaped, `<>&` and `/` as some encoders escape them.

Where it is looked for (*views* of the output; a match in any view masks its whole original
span, escape sequences inside it included, with one MASK):

- the bytes as they are;
- the bytes as a terminal or the run page shows them: every escape sequence removed (CSI, OSC
  with hyperlinks ended by BEL or ESC \\, two-character escapes, a lone ESC), the control
  characters but tab, newline and carriage return, C1 controls and the invisible format
  characters (zero-width space and joiners, soft hyphen, bidi marks, BOM, variation selectors).
  The page's own rule (cronos_site.web.ansi) is ESCAPE_SEQUENCE below, a part of this one:
  whatever the page joins, this view joins too;
- the bytes as a JSON line shows once decoded (the claude stream read with `jq`): the same,
  and the same written as JSON escapes (`\\u001b[31m`, `\\u200b`, `\\b`);
- when there is a backspace, the overstrike view, where a character followed by a backspace is
  overwritten (`T\\bT` bold, `_\\bT` underlined, as `man` and `less` show them).

A masked span takes in the overstrike pairs and the JSON escapes at its ends, so a masked JSON
line is still JSON. Output that arrives in reads is masked at least as the whole would be: the
end of a read that could start a secret in any view, or that is an escape sequence, a JSON
escape or a character not finished, is held back for the next read (at most MAX_HELD_BYTES).

Not emulated: cursor movements and carriage-return overwrites. Telling what they leave on a
screen takes a terminal emulator, and an agent that builds its secret on the screen that way
means to show it; masking keeps a secret from being printed by accident, it cannot stop an agent
set on disclosing one (which could as well print it reversed or encoded).

Cost: a few `bytes.find` per spelling over each view; a view is made (one regular expression
substitution) only when the output holds a byte that can start what it hides, and is mapped
back to the bytes only as far as a secret found in it. No pattern is built from a secret but a
literal, so no output makes it backtrack (10 MB: about 0.05 s plain, 0.2 s of JSON, 1 s when
every line is coloured, on the 2-core machine).
"""

from __future__ import annotations

import functools
import json
import re
from bisect import bisect_right
from collections.abc import Iterable

MASK = "••••••••"
MASK_BYTES = MASK.encode()
# A secret value (and a line of a multi-line one, to be masked on its own) has at least this
# many characters: a shorter one masked everywhere would show where it is, and so what it is.
MIN_SECRET_CHARS = 6
# At most this much output is held back waiting to know whether it is a secret (a start of one
# cut by the end of a read, an escape sequence not finished yet). More is released: a secret
# spread over a longer escape sequence than this is not recognised.
MAX_HELD_BYTES = 64 * 1024

# One escape sequence or control character as terminals and the run page hide them: CSI
# (ESC [ parameters intermediates final), OSC (ESC ] ... BEL or ESC \, links included), a
# two-character escape, or a C0 control character other than tab, newline, carriage return and
# ESC, or DEL. cronos_site.web.ansi renders output with exactly this.
ESCAPE_SEQUENCE = (
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[ -/]*[0-~]"
    r"|[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]"
)

# What a terminal or the page hides: ESCAPE_SEQUENCE, a lone ESC, and invisible characters
# (UTF-8). Written as one first byte (a class, so that the regular expression engine skips every
# other byte fast) and what follows it for each.
_SHOWN_HIDDEN_FIRST = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\xc2\xe2\xef]"
_SHOWN_HIDDEN_AFTER = (
    # ESCAPE_SEQUENCE's escape sequences, in its order, or ESC alone.
    r"(?<=\x1b)(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*+(?:\x07|\x1b\\)|[ -/]*[0-~])?"
    r"|(?<=[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f])"
    # C1 controls, soft hyphen; zero-width space, joiners, marks; bidi embeddings; word joiner,
    # invisible operators, isolates; BOM (zero-width no-break space); variation selectors.
    r"|(?<=\xc2)[\x80-\x9f\xad]"
    r"|(?<=\xe2)(?:\x80[\x8b-\x8f\xaa-\xae]|\x81[\xa0-\xa4\xa6-\xaf])"
    r"|(?<=\xef)(?:\xbb\xbf|\xb8[\x80-\x8f])"
)
# The same written as JSON escapes (what a JSON line shows once decoded, as the claude stream's
# are by `jq`): \u001b then the rest of a sequence (an OSC's text may hold escapes of its own),
# \u00XX / \uXXXX of an invisible character, \b or \f. (In that view every escaped backslash,
# `\\\\`, is _ESCAPED_BACKSLASH first: what follows one is text, not an escape.)
_JSON_HIDDEN_AFTER = (
    r"(?<=\\)u(?:001[bB](?:\[[0-?]*[ -/]*(?:[@-\[\]-~]|\xff\xff)"
    r"|\](?:[^\\\x07\x1b]|\\[^u]|\\u(?!001[bB]|0007)[0-9a-fA-F]{4})*+(?:\\u0007|\\u001[bB]\xff\xff)"
    r"|[ -/]*(?:[0-\[\]-~]|\xff\xff))?"
    r"|00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F]|[89][0-9a-fA-F]|[aA][dD])|007[fF]"
    r"|200[b-fB-F]|202[a-eA-E]|206[0-46-9a-fA-F]|[fF][eE][fF][fF]|[fF][eE]0[0-9a-fA-F])"
    r"|(?<=\\)[bf]"
)
_BACKSLASHES = b"\\\\"
# Of the same length, so the view's offsets are the output's; never in UTF-8 text.
_ESCAPED_BACKSLASH = b"\xff\xff"
_SHOWN_HIDDEN_SOURCE = f"{_SHOWN_HIDDEN_FIRST}(?:{_SHOWN_HIDDEN_AFTER})"
# The views (see the module's docstring): as shown; as shown once JSON is decoded; overstruck.
_SHOWN = re.compile(_SHOWN_HIDDEN_SOURCE.encode())
_DECODED = re.compile(
    rf"{_SHOWN_HIDDEN_FIRST[:-1]}\\](?:{_SHOWN_HIDDEN_AFTER}|{_JSON_HIDDEN_AFTER})".encode()
)
_OVERSTRUCK = re.compile(
    (
        r"(?:[ -~]|[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3})\x08|"
        + _SHOWN_HIDDEN_SOURCE
    ).encode()
)
# The bytes that can start something hidden when shown: output without any shows as it is.
_NOT_HIDING = bytes(
    b for b in range(256) if not re.fullmatch(_SHOWN_HIDDEN_FIRST.encode(), bytes([b]))
)
# The end of a read that may be the start of something hidden (or of a character): held back.
_CUT_OFF = re.compile(
    rb"(?:\x1b(?:\[[0-?]*[ -/]*|[ -/]*)?"
    rb"|(?<!\x1b)\\(?:u(?:[0-9a-fA-F]{0,3}|001[bB](?:\[[0-?]*[ -/]*|[ -/]*)?))?"
    rb"|[\xc0-\xdf]|[\xe0-\xef][\x80-\xbf]?|[\xf0-\xf7][\x80-\xbf]{0,2})\Z"
)
_CUT_OFF_WINDOW = 64
# What follows the backslash of a JSON escape.
_JSON_ESCAPED = frozenset(bytes([c]) for c in b'"\\/bfnrtu')
# Around a whole word: no letter, digit, `_` or part of a non-ASCII character.
_WORD_BYTE = rb"[0-9A-Za-z_\x80-\xff]"


def secret_pieces(value: str) -> tuple[set[str], set[str]]:
    """What of a secret value is masked: (pieces masked wherever they appear, pieces masked
    only as whole words, for a value shorter than MIN_SECRET_CHARS)."""
    whole = value.strip()
    if not whole:
        return set(), set()
    if len(whole) < MIN_SECRET_CHARS:
        return set(), {whole}
    pieces = {value, whole}
    for line in value.splitlines():
        line = line.strip()
        if len(line) >= MIN_SECRET_CHARS:
            pieces.add(line)
    return pieces, set()


def spellings(piece: str) -> set[bytes]:
    """`piece` as printed and as JSON encoders write it inside a string."""
    escaped = json.dumps(piece)[1:-1]
    forms = {
        piece,
        json.dumps(piece, ensure_ascii=False)[1:-1],
        escaped,
        # Go (and others) escape <, > and & for HTML; PHP escapes /.
        escaped.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
        escaped.replace("/", "\\/"),
    }
    return {form.encode("utf-8", "surrogatepass") for form in forms}


class _Spellings:
    """The spellings to look for in a view: anywhere, or (short secrets) as whole words."""

    def __init__(self, anywhere: set[bytes], words: set[bytes]) -> None:
        self.anywhere = sorted(anywhere, key=len, reverse=True)
        self.words = sorted(words, key=len, reverse=True)
        # Literal first (the engine's fast scan), then the look around for the word's edges.
        self.word_patterns = [
            re.compile(rb"%s(?<!%s%s)(?!%s)" % (word, _WORD_BYTE, word, _WORD_BYTE))
            for word in map(re.escape, self.words)
        ]

    def __bool__(self) -> bool:
        return bool(self.anywhere or self.words)

    def found(self, text: bytes) -> list[tuple[int, int]]:
        """Where they are in `text` (overlapping ones too: both are masked whole)."""
        found = []
        for spelling in self.anywhere:
            i = text.find(spelling)
            while i != -1:
                found.append((i, i + len(spelling)))
                i = text.find(spelling, i + 1)
        for pattern in self.word_patterns:
            found += [match.span() for match in pattern.finditer(text)]
        return found

    def start_at_end(self, text: bytes) -> int:
        """Where the end of `text` that could be the start of one starts (len(text) if none)."""
        start = len(text)
        for spelling in self.anywhere:
            start = min(start, _suffix_prefix(text, spelling, whole=False))
        for spelling in self.words:
            # A whole word at the end may be one, or the start of a longer word: the next byte
            # decides.
            start = min(start, _suffix_prefix(text, spelling, whole=True))
        return start


class _View:
    """`data` with every match of `hidden` removed, and the way back to `data`'s offsets."""

    def __init__(self, data: bytes, hidden: re.Pattern[bytes]) -> None:
        self.data = data
        self.hidden = hidden
        self.text = hidden.sub(b"", data)
        # The way back, read only as far as a secret found in `text` needs (none: not at all):
        # where each removed run was in `text`, and how many bytes were removed up to its end.
        self._runs = hidden.finditer(data)
        self._at: list[int] = []
        self._removed: list[int] = []
        self._total = 0

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The span of `data` that `text[start:end]` shows (what is hidden inside included)."""
        if not self._at or self._at[-1] < end:
            at, removed, total = self._at, self._removed, self._total
            for run in self._runs:
                run_start, run_end = run.span()
                at.append(run_start - total)
                total += run_end - run_start
                removed.append(total)
                if at[-1] >= end:
                    break
            self._total = total
        first = bisect_right(self._at, start)
        last = bisect_right(self._at, end - 1)
        return (
            start + (self._removed[first - 1] if first else 0),
            end + (self._removed[last - 1] if last else 0),
        )


class Masker:
    """The secrets of a run, masked in its output: `mask_bytes`, `mask_text`, and
    `mask_stream` for output that arrives in reads."""

    def __init__(self, values: Iterable[str]) -> None:
        anywhere: set[bytes] = set()
        words: set[bytes] = set()
        for value in values:
            pieces, short = secret_pieces(value)
            for piece in pieces:
                anywhere |= spellings(piece)
            for piece in short:
                words |= spellings(piece)
        self._printed = _Spellings(anywhere, words)
        # The decoded view has escaped backslashes marked (_ESCAPED_BACKSLASH).
        self._decoded = _Spellings(
            {spelling.replace(_BACKSLASHES, _ESCAPED_BACKSLASH) for spelling in anywhere},
            {spelling.replace(_BACKSLASHES, _ESCAPED_BACKSLASH) for spelling in words},
        )

    def __bool__(self) -> bool:
        return bool(self._printed)

    def mask_bytes(self, data: bytes) -> bytes:
        """`data` with every secret masked."""
        if not self or not data:
            return data
        return _replaced(data, self._spans(data))

    def mask_text(self, text: str) -> str:
        """`text` with every secret masked (by the same rule as bytes)."""
        if not self or not text:
            return text
        data = text.encode("utf-8", "surrogatepass")
        spans = self._spans(data)
        if not spans:
            return text
        return _replaced(data, spans).decode("utf-8", "surrogatepass")

    def mask_stream(self, data: bytes, final: bool = False) -> tuple[bytes, bytes]:
        """Output as it arrives: (what can be stored now, masked; what is held back for the next
        call, to be put before the output that follows it).

        Held back: an end that could be the start of a secret (in any view), or an escape
        sequence or a character not finished yet, at most MAX_HELD_BYTES. `final`: the output
        has ended, nothing is held.
        """
        if not self or not data:
            return data, b""
        if final:
            return self.mask_bytes(data), b""
        end = _cut_off(data)
        spans = self._spans(data[:end])
        cut = min(end, self._start_of_a_secret(data[:end]))
        cut = max(cut, len(data) - MAX_HELD_BYTES)
        # A complete secret across the cut (it may also be the start of a longer one) is held
        # back whole, and so is an escape sequence, a JSON escape or a character: the rest is
        # read again with what follows it, and must mean what it means here.
        moved = True
        while moved:
            moved = False
            whole = _whole_cut(data, cut)
            if whole < cut:
                cut, moved = whole, True
            for start, stop in spans:
                if start < cut < stop:
                    cut, moved = start, True
        return _replaced(data[:cut], [s for s in spans if s[1] <= cut]), data[cut:]

    # --- internals -------------------------------------------------------------------------

    def _spans(self, data: bytes) -> list[tuple[int, int]]:
        """The spans of `data` to mask, sorted and merged."""
        spans = self._printed.found(data)
        for view in _views(data):
            found = self._spellings(view).found(view.text)
            spans += [view.original(start, stop) for start, stop in found]
        return _merged([_widened(data, start, stop) for start, stop in spans])

    def _start_of_a_secret(self, data: bytes) -> int:
        """Where the end of `data` that could be the start of a secret starts, in any view
        (len(data) if there is none)."""
        start = self._printed.start_at_end(data)
        low = max(0, len(data) - MAX_HELD_BYTES)
        for view in _views(data[low:]):
            text = view.text
            if view.hidden is _OVERSTRUCK and text:
                # The last character shown may yet be overstruck by what follows.
                text = text[: _char_start(text, len(text) - 1)]
            found = self._spellings(view).start_at_end(text)
            if found < len(text):
                start = min(start, low + view.original(found, found + 1)[0])
        return start

    def _spellings(self, view: _View) -> _Spellings:
        return self._decoded if view.hidden is _DECODED else self._printed


@functools.lru_cache(maxsize=16)
def masker(values: tuple[str, ...]) -> Masker:
    """The masker of a set of secret values (made once: masking text is called per event)."""
    return Masker(values)


def _views(data: bytes) -> list[_View]:
    """The views of `data` besides the bytes themselves that could differ from them."""
    views = []
    if data.translate(None, _NOT_HIDING):
        views.append(_View(data, _SHOWN))
        if b"\x08" in data:
            views.append(_View(data, _OVERSTRUCK))
    if b"\\u" in data or b"\\b" in data or b"\\f" in data:
        views.append(_View(data.replace(_BACKSLASHES, _ESCAPED_BACKSLASH), _DECODED))
    return [view for view in views if len(view.text) != len(data)]


def _suffix_prefix(text: bytes, spelling: bytes, whole: bool) -> int:
    """Where the longest end of `text` that is a start of `spelling` starts (a proper start
    unless `whole`); len(text) if none."""
    first = spelling[:1]
    i = text.find(first, max(0, len(text) - len(spelling) + (0 if whole else 1)))
    while i != -1:
        if spelling.startswith(text[i:]):
            return i
        i = text.find(first, i + 1)
    return len(text)


def _cut_off(data: bytes) -> int:
    """Where an escape sequence or a character cut off by the end of `data` starts (len(data)
    if none): what it hides is known only once it is whole."""
    end = len(data)
    low = max(0, end - MAX_HELD_BYTES)
    match = _CUT_OFF.search(data, max(0, end - _CUT_OFF_WINDOW))
    if match:
        end = match.start()
    # An OSC (a title, a link) may be long: not ended while no BEL follows and no ESC but one
    # that may start its ESC \.
    i = data.rfind(b"\x1b]", low, end)
    if i != -1 and data.find(b"\x07", i, end) == -1:
        esc = data.find(b"\x1b", i + 1, end)
        if esc == -1 or esc == end - 1:
            end = i
    for opener in (b"\\u001b]", b"\\u001B]"):
        i = data.rfind(opener, low, end)
        if i != -1 and data.find(b"\\u0007", i, end) == -1:
            found = [data.find(e, i + len(opener), end) for e in (b"\\u001b", b"\\u001B")]
            esc = min((at for at in found if at != -1), default=-1)
            if esc == -1 or esc >= end - len(b"\\u001b\\"):
                end = i
    return end


def _whole_cut(data: bytes, cut: int) -> int:
    """`cut`, or the start of the escape sequence, JSON escape (or run of backslashes: `\\\\`
    then `u001b` is text, `\\u001b` an ESC) or UTF-8 character it would split."""
    cut = _char_start(data, cut) if cut < len(data) else cut
    while cut and data[cut - 1] == 0x5C:
        cut -= 1
    escape = _json_escape_around(data, cut)
    if escape:
        cut = escape[0]
        while cut and data[cut - 1] == 0x5C:
            cut -= 1
    esc = data.rfind(b"\x1b", max(0, cut - MAX_HELD_BYTES), cut)
    if esc != -1:
        sequence = _SHOWN.match(data, esc)
        if sequence and sequence.end() > cut:
            cut = esc
    return cut


def _widened(data: bytes, start: int, stop: int) -> tuple[int, int]:
    """A span with the overstrike pairs right around it, as `man` prints bold and underlined
    text (`T\\bT...N\\bN`, `_\\bT...`), and whole JSON escapes at its ends, so that a masked
    JSON line is still JSON."""
    first = data[start : _char_end(data, start)]
    while data[start - 1 : start] == b"\x08" and start >= 2:
        before = _char_start(data, start - 2)
        if data[before : start - 1] not in (first, b"_"):
            break
        start = before
    last = data[_char_start(data, stop - 1) : stop]
    while data[stop : stop + 1] == b"\x08" and data[stop + 1 : stop + 1 + len(last)] == last:
        stop += 1 + len(last)
    escape = _json_escape_around(data, start)
    if escape:
        start = escape[0]
    escape = _json_escape_around(data, stop)
    if escape:
        stop = escape[1]
    return start, stop


def _json_escape_around(data: bytes, i: int) -> tuple[int, int] | None:
    """The JSON escape (`\\"`, `\\n`, `\\u00e9`) that position `i` falls inside, after its
    backslash: its span."""
    backslash = data.rfind(b"\\", max(0, i - 5), i)
    if backslash == -1 or data[backslash + 1 : backslash + 2] not in _JSON_ESCAPED:
        return None
    first = backslash
    while first > 0 and data[first - 1] == 0x5C:
        first -= 1
    if (backslash - first) % 2:
        return None  # the second of `\\\\`: an escaped backslash, ended before `i`
    end = backslash + (6 if data[backslash + 1 : backslash + 2] == b"u" else 2)
    return (backslash, min(end, len(data))) if i < end else None


def _char_start(data: bytes, i: int) -> int:
    """The start of the UTF-8 character byte `i` is part of."""
    for _ in range(3):
        if i > 0 and data[i] & 0xC0 == 0x80:
            i -= 1
    return i


def _char_end(data: bytes, i: int) -> int:
    """Just after the UTF-8 character that starts at byte `i`."""
    i += 1
    for _ in range(3):
        if i < len(data) and data[i] & 0xC0 == 0x80:
            i += 1
    return i


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        # Overlapping: one MASK. Only touching (two secrets side by side): a MASK each, as
        # they are when a read ends between them.
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def _replaced(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """`data` with each (sorted, disjoint) span replaced by one MASK."""
    if not spans:
        return data
    out, position = [], 0
    for start, stop in spans:
        out += [data[position:start], MASK_BYTES]
        position = stop
    out.append(data[position:])
    return b"".join(out)
