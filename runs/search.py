"""Full-text search over runs' output and claude results (DESIGN.md §7.10), one interface on
both databases.

What is indexed: every `RunChunk` (a run's output as stored: secrets already masked) and every
non-empty `Run.result_text`. A chunk is a flush of output, not a line: it may hold many lines,
and a line (or a word) may be cut between two chunks; a phrase is found within one chunk. Words
are runs of letters and digits (an underscore, a dot, a dash separate them), matched whole and
case-insensitively, accents kept (no stemming: `simple` on PostgreSQL, `unicode61
remove_diacritics 0` on SQLite), so the two shapes find the same runs.

What a person may type, on both databases (PostgreSQL's `websearch_to_tsquery` grammar):
words (all of them, anywhere in one chunk), `"a phrase"`, `OR` between alternatives, and `-word`
or `-"a phrase"` to exclude. Nothing else is an operator: `*`, `NEAR`, `:`, `^`, parentheses,
`AND`, `NOT` are text. The query is parsed here, in Python, and never reaches either database
as syntax: each term becomes a string of its words only (which hold no quote), joined by
operators written here: an FTS5 expression on SQLite; on PostgreSQL a bound parameter of
`websearch_to_tsquery`, which raises no syntax error whatever it is given. At most
MAX_QUERY_CHARS characters and MAX_TERMS terms are read.

The shapes (hand-written SQL, because the ORM has neither FTS5 nor a way to walk an index in
bounded steps; the index objects are made by runs/migrations/0014_search.py through `install`):

- SQLite: `runs_search`, an FTS5 table *without content* (`content=''`), fed by triggers on
  `runs_runchunk` and `runs_run`. Its rowid says where a text is: `run_id << 24 | seq` for a
  chunk, `run_id << 24 | RESULT_SEQ` for a result. So the index itself is in "newest run first"
  order: a search walks it downwards from a cursor with
  `SELECT rowid FROM runs_search WHERE runs_search MATCH %s AND rowid < %s ORDER BY rowid DESC
  LIMIT 64`, which FTS5 answers from its doclists without sorting, and skips the rest of each
  run it meets (one hit a run: its newest). An external-content table would have to use
  RunChunk's own id as rowid, so the run order would need a join and a sort over every match
  (a common word at a million runs); contentless also does not keep a second copy of every
  log. Its cost: a delete must give the text that was indexed, which the triggers have (OLD).
  Chunks numbered RESULT_SEQ or above (a run printing for weeks) are not indexed.
- PostgreSQL: a stored generated column `search_vector` on `runs_runchunk` (of `text`) and on
  `runs_run` (of a non-empty `result_text`), `to_tsvector('simple', <the text, punctuation made
  blank>)` (`_pg_vector`), each with a GIN index (the result's partial: runs that have one).
  Blanking punctuation makes PostgreSQL's words SQLite's (a path, an address or a dotted name
  is several words on both). A search walks windows of run ids downwards (`run_id >= %s AND
  run_id < %s`, the window growing while it finds few runs), one query each, grouped by run.
  The vectors are stored, not only indexed, because the planner reads a small window of a word
  most runs printed by run id and tests each row: against a stored vector that costs
  microseconds, where computing it again from a 64 KiB chunk costs ~10 ms a row. The columns
  are not the models' (Django never reads or writes them); a later migration changing the type
  of `text` or `result_text` must drop and re-add them (`install`). `left(...)` keeps a
  tsvector under PostgreSQL's 1 MB limit: an insert never fails on a huge text (the rest of
  such a text is not searchable on PostgreSQL).

Retention deletes chunks, and deleting a run deletes its chunks: SQLite's triggers remove them
from the index in the same statement, PostgreSQL's indexes are the table's own. A hit whose
text has gone since is dropped, never an error.

Bounded work: a page of results takes at most MAX_PROBES index queries, then says where it
stopped (`Found.reached`), and the next page goes on from there.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models import Q
from django.utils.safestring import SafeString, mark_safe

from agents.masking import ESCAPE_SEQUENCE
from runs.models import Run, RunChunk

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

MAX_QUERY_CHARS = 200
MAX_TERMS = 16
# The rowid of a text in the SQLite index: the run's id shifted by SEQ_BITS, then the chunk's
# seq, or RESULT_SEQ for the run's result (above every chunk: a run's result comes first).
SEQ_BITS = 24
RESULT_SEQ = (1 << SEQ_BITS) - 1
# The largest run id a rowid can hold (SQLite's are signed 64-bit).
LAST_RUN_ID = (1 << (63 - SEQ_BITS)) - 2
# Index queries one page of results may make, and the rows each reads (SQLite).
MAX_PROBES = 30
PROBE_ROWS = 64
# PostgreSQL: the first window of run ids, how much it grows while it finds few runs, and how
# many matching runs make a window big enough (it grows no more). Small first: for a word most
# runs printed, PostgreSQL reads the window's chunks by run id and checks each one's words
# (cheaper than the GIN index's list of nearly every chunk), so a window costs its size.
FIRST_WINDOW = 128
WINDOW_GROWTH = 4
ENOUGH_IN_WINDOW = 64
# A snippet: about this many characters of the matching line around its first match.
SNIPPET_CHARS = 180
SNIPPET_BEFORE = 50
# Matches looked at in one text to choose the line shown.
MAX_MATCHES_READ = 500
# PostgreSQL: at most this much of one text is indexed (see the module).
PG_INDEXED_CHARS = 200_000

# A word, as both databases' tokenizers cut text: letters and digits (no underscore).
_WORD = re.compile(r"[^\W_]+")
_HIDDEN = re.compile(ESCAPE_SEQUENCE)


# --- The query ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """A word or a phrase as typed (`text`) and its words, lower-cased."""

    text: str
    words: tuple[str, ...]

    def pattern(self) -> str:
        """A regular expression finding the term in text: its words, in order, whole."""
        inner = r"[\W_]+".join(re.escape(word) for word in self.words)
        return rf"(?<![^\W_]){inner}(?![^\W_])"


@dataclass(frozen=True)
class Group:
    """Terms that must all be there (`wanted`) and none of `unwanted`: one side of an OR."""

    wanted: tuple[Term, ...]
    unwanted: tuple[Term, ...] = ()


@dataclass(frozen=True)
class Search:
    """A parsed query: alternatives (OR), each a Group."""

    text: str
    groups: tuple[Group, ...]

    @classmethod
    def parse(cls, text: str) -> Search | None:
        """The search a person typed, or None when there is nothing to look for (no word,
        or only words to exclude)."""
        text = text[:MAX_QUERY_CHARS]
        groups: list[Group] = []
        wanted: list[Term] = []
        unwanted: list[Term] = []
        terms, i, n = 0, 0, len(text)
        while i < n:
            if text[i].isspace():
                i += 1
                continue
            negate = text[i] == "-" and i + 1 < n and not text[i + 1].isspace()
            if negate:
                i += 1
            if text[i] == '"':
                end = text.find('"', i + 1)
                end = n if end == -1 else end
                raw, quoted, i = text[i + 1 : end], True, end + 1
            else:
                j = i
                while j < n and not text[j].isspace() and text[j] != '"':
                    j += 1
                raw, quoted, i = text[i:j], False, j
            if raw.lower() == "or" and not quoted and not negate:
                groups.append(Group(tuple(wanted), tuple(unwanted)))
                wanted, unwanted = [], []
                continue
            words = tuple(word.lower() for word in _WORD.findall(raw))
            if not words or terms >= MAX_TERMS:
                continue
            terms += 1
            (unwanted if negate else wanted).append(Term(raw, words))
        groups.append(Group(tuple(wanted), tuple(unwanted)))
        # A side with nothing wanted would match almost every text (and FTS5 cannot say
        # "not x" alone): it is dropped.
        kept = tuple(group for group in groups if group.wanted)
        return cls(text, kept) if kept else None

    def fts5(self) -> str:
        """The FTS5 expression: each term a quoted string of its words (no quote can be in
        them), the operators written here."""

        def string(term: Term) -> str:
            return '"' + " ".join(term.words) + '"'

        sides = []
        for group in self.groups:
            expression = "(" + " AND ".join(string(term) for term in group.wanted) + ")"
            for term in group.unwanted:
                expression = f"({expression} NOT {string(term)})"
            sides.append(expression)
        return " OR ".join(sides)

    def websearch(self) -> str:
        """The text for `websearch_to_tsquery`: the same terms and operators in its grammar,
        each term a quoted phrase of its words (as the index holds them: `_pg_vector`)."""

        def term_text(term: Term) -> str:
            return '"' + " ".join(term.words) + '"'

        sides = []
        for group in self.groups:
            parts = [term_text(term) for term in group.wanted]
            parts += ["-" + term_text(term) for term in group.unwanted]
            sides.append(" ".join(parts))
        return " or ".join(sides)

    @property
    def wanted(self) -> list[Term]:
        return [term for group in self.groups for term in group.wanted]

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """Any wanted term, in text (case-insensitive)."""
        return re.compile("|".join(term.pattern() for term in self.wanted), re.IGNORECASE)


# --- Hits -----------------------------------------------------------------------------------


@dataclass
class Hit:
    """Where a run matched: a chunk of its output (`seq`, the matching `line` counted from 1
    within that chunk) or its result (`seq` None), and the line shown with the match marked."""

    run: Run  # as the caller's `keep` loaded it
    seq: int | None
    line: int
    snippet: SafeString

    @property
    def in_result(self) -> bool:
        return self.seq is None

    @property
    def anchor(self) -> str:
        """The id of the place on the run page (runpage.output_window marks it)."""
        return "result" if self.seq is None else f"line-{self.seq}-{self.line}"


@dataclass
class Found:
    """One page of hits, newest run first. `more`: there may be matching runs beyond the page
    in the direction walked. `reached`: when the page stopped on its budget rather than full,
    the run id the walk got to (every run from the cursor to it was searched)."""

    hits: list[Hit]
    more: bool
    reached: int | None = None


# Given run ids, the runs among them that the page's other filters keep, by id.
Keep = Callable[[list[int]], dict[int, Run]]


def search_runs(
    search: Search,
    keep: Keep,
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = 50,
) -> Found:
    """A page of runs whose output or result matches, newest first, one hit each (its newest
    match): those with an id below `before` (or above `after`, the page just newer than a
    cursor; else from the newest), that `keep` keeps, at most `size`."""
    walk = _walker(connection)(search, before=before, after=after)
    places: list[tuple[int, int]] = []
    runs: dict[int, Run] = {}
    for batch in walk:
        kept = keep([run_id for run_id, _ in batch]) if batch else {}
        for run_id, seq in batch:
            if run_id in kept and len(places) <= size:
                places.append((run_id, seq))
                runs[run_id] = kept[run_id]
        if len(places) > size:
            break
    more = len(places) > size or not walk.exhausted
    reached = None if len(places) > size or walk.exhausted else walk.reached
    places = places[:size]
    if after is not None:
        # Walked upwards: each run was met at its oldest match. Its newest, as the other
        # direction shows it; then newest first.
        places = [(run_id, _newest_place(search, run_id)) for run_id, _ in reversed(places)]
    hits = []
    for (run_id, seq), snippet in zip(places, _snippets(search, places), strict=True):
        if snippet is None:
            continue  # its text went (retention) since the index was read
        text_line, shown = snippet
        hits.append(Hit(runs[run_id], None if seq == RESULT_SEQ else seq, text_line, shown))
    return Found(hits, more, reached)


# --- Walking the index ----------------------------------------------------------------------


class _Walk:
    """Batches of (run id, seq or RESULT_SEQ), one entry a run, in the order walked; at most
    MAX_PROBES index queries. `exhausted`: nothing more matches that way; `reached`: the run
    id bound up to which everything was searched."""

    def __init__(self, search: Search, *, before: int | None, after: int | None) -> None:
        self.search = search
        self.descending = after is None
        self.start = before if self.descending else after
        self.reached: int | None = None
        self.exhausted = False

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        raise NotImplementedError


class _SqliteWalk(_Walk):
    """The FTS5 rowids, downwards (or upwards) from the cursor; after a batch the walk goes on
    past the last run it met, so a run with many matching chunks costs one query, not many."""

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        expression = self.search.fts5()
        # A cursor past any run id the rowids can hold (a forged link) is the newest end.
        start = None if self.start is None else min(self.start, LAST_RUN_ID + 1)
        if self.descending:
            bound = (start << SEQ_BITS) if start is not None else (LAST_RUN_ID + 1) << SEQ_BITS
            sql = (
                "SELECT rowid FROM runs_search WHERE runs_search MATCH %s AND rowid < %s "
                "ORDER BY rowid DESC LIMIT %s"
            )
        else:
            if start is not None and start >= LAST_RUN_ID:
                self.exhausted = True
                return
            bound = ((start or 0) + 1) << SEQ_BITS
            sql = (
                "SELECT rowid FROM runs_search WHERE runs_search MATCH %s AND rowid >= %s "
                "ORDER BY rowid ASC LIMIT %s"
            )
        for _ in range(MAX_PROBES):
            with connection.cursor() as cursor:
                cursor.execute(sql, [expression, bound, PROBE_ROWS])
                rowids = [row[0] for row in cursor.fetchall()]
            batch: list[tuple[int, int]] = []
            for rowid in rowids:
                run_id = rowid >> SEQ_BITS
                if not batch or batch[-1][0] != run_id:
                    batch.append((run_id, rowid & RESULT_SEQ))
            if not batch:
                self.exhausted = True
                return
            last = batch[-1][0]
            # Past the last run met, whole: its other matches are not wanted.
            bound = (last << SEQ_BITS) if self.descending else (last + 1) << SEQ_BITS
            self.reached = last
            yield batch
            if len(rowids) < PROBE_ROWS:
                self.exhausted = True
                return


def _pg_vector(column: str) -> str:
    # Punctuation made blank first: PostgreSQL's parser would keep `/dev/sda1`, `x.com` or
    # `django.db.utils.OperationalError` as one word, where a person searches `sda1` or
    # `OperationalError` (and SQLite's tokenizer cuts them into words).
    text = f"regexp_replace(left({column}, {PG_INDEXED_CHARS}), '[[:punct:]]+', ' ', 'g')"
    return f"to_tsvector('simple'::regconfig, {text})"


class _PostgresWalk(_Walk):
    """Windows of run ids, downwards (or upwards) from the cursor: each one query, for the
    chunks (newest matching chunk per run) and the results, through the GIN indexes. A
    window grows (x WINDOW_GROWTH) while it finds fewer than ENOUGH_IN_WINDOW runs, so a
    rare word covers a million runs in a few windows and a common one stays in small ones."""

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        query = self.search.websearch()
        with connection.cursor() as cursor:
            cursor.execute("SELECT MIN(id), MAX(id) FROM runs_run")
            lowest, highest = cursor.fetchone()
        if lowest is None:
            self.exhausted = True
            return
        width = FIRST_WINDOW
        if self.descending:
            high = min(self.start if self.start is not None else highest + 1, highest + 1)
        else:
            low = max((self.start or 0) + 1, lowest)
        for _ in range(MAX_PROBES):
            if self.descending:
                low = max(high - width, lowest)
            else:
                high = min(low + width, highest + 1)
            if low >= high:
                self.exhausted = True
                return
            found = self._window(query, low, high)
            batch = sorted(found.items(), reverse=self.descending)
            self.reached = low if self.descending else high - 1
            yield batch
            if len(batch) < ENOUGH_IN_WINDOW:
                width *= WINDOW_GROWTH
            if self.descending:
                high = low
            else:
                low = high
            if high <= lowest or low > highest:
                self.exhausted = True
                return

    @staticmethod
    def _window(query: str, low: int, high: int) -> dict[int, int]:
        """The runs with ids in [low, high) that match: run id -> its newest matching chunk,
        or RESULT_SEQ when its result matches (the result first, as on SQLite)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT run_id, MAX(seq) FROM runs_runchunk "
                "WHERE run_id >= %s AND run_id < %s AND search_vector @@ "
                "websearch_to_tsquery('simple', %s) GROUP BY run_id "
                f"UNION ALL SELECT id, {RESULT_SEQ} FROM runs_run "
                "WHERE id >= %s AND id < %s AND result_text <> '' "
                "AND search_vector @@ websearch_to_tsquery('simple', %s)",
                [low, high, query, low, high, query],
            )
            found: dict[int, int] = {}
            for run_id, seq in cursor.fetchall():
                found[run_id] = max(seq, found.get(run_id, -1))
        return found


def _walker(conn: BaseDatabaseWrapper) -> type[_Walk]:
    if conn.vendor == "sqlite":
        return _SqliteWalk
    if conn.vendor == "postgresql":
        return _PostgresWalk
    raise NotImplementedError(f"search on {conn.vendor}")


def _newest_place(search: Search, run_id: int) -> int:
    """The newest match in one run (its result, else its last matching chunk)."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT rowid FROM runs_search WHERE runs_search MATCH %s AND rowid >= %s "
                "AND rowid <= %s ORDER BY rowid DESC LIMIT 1",
                [search.fts5(), run_id << SEQ_BITS, (run_id << SEQ_BITS) | RESULT_SEQ],
            )
            row = cursor.fetchone()
        return row[0] & RESULT_SEQ if row else RESULT_SEQ
    found = _PostgresWalk._window(search.websearch(), run_id, run_id + 1)
    return found.get(run_id, RESULT_SEQ)


# --- Snippets -------------------------------------------------------------------------------


def _snippets(
    search: Search, places: Sequence[tuple[int, int]]
) -> list[tuple[int, SafeString] | None]:
    """For each place, the number of the matching line in its text and that line as safe
    HTML; None where the text is gone. Two queries, whatever the page's size."""
    chunks = [(run_id, seq) for run_id, seq in places if seq != RESULT_SEQ]
    results = [run_id for run_id, seq in places if seq == RESULT_SEQ]
    texts: dict[tuple[int, int], str] = {}
    if chunks:
        wanted = Q()
        for run_id, seq in chunks:
            wanted |= Q(run_id=run_id, seq=seq)
        for run_id, seq, text in RunChunk.objects.filter(wanted).values_list(
            "run_id", "seq", "text"
        ):
            texts[(run_id, seq)] = text
    if results:
        for run_id, text in Run.objects.filter(pk__in=results).values_list("pk", "result_text"):
            texts[(run_id, RESULT_SEQ)] = text
    out: list[tuple[int, SafeString] | None] = []
    for place in places:
        found = texts.get(place)
        out.append(snippet(search, found) if found else None)
    return out


def snippet(search: Search, text: str) -> tuple[int, SafeString]:
    """The line of `text` that matches best (every word of one side of the search, else the
    most of them; the last such line), counted from 1, and about SNIPPET_CHARS of it around
    the match as safe HTML: the text escaped, each wanted term in <mark>."""
    regex = search.regex
    best: tuple[int, int, int] | None = None  # (score, line start, line end)
    line_start, line_end = -1, -1
    found: set[str] = set()
    for count, match in enumerate(regex.finditer(text)):
        if count >= MAX_MATCHES_READ:
            break
        if match.start() >= line_end:
            if line_start >= 0:
                best = _better(best, search, found, line_start, line_end)
            line_start = text.rfind("\n", 0, match.start()) + 1
            end = text.find("\n", match.end())
            line_end = len(text) if end == -1 else end
            found = set()
        found.add(match.group().lower())
    if line_start >= 0:
        best = _better(best, search, found, line_start, line_end)
    if best is None:
        # Nothing found here (the database's tokenizer cut differently): the first line.
        end = text.find("\n")
        best = (0, 0, len(text) if end == -1 else end)
    _, start, end = best
    number = text.count("\n", 0, start) + 1
    return number, _marked(search, text[start:end])


def _better(
    best: tuple[int, int, int] | None, search: Search, found: set[str], start: int, end: int
) -> tuple[int, int, int]:
    """The better of `best` and the line [start, end) whose matched terms are `found`."""
    words = {" ".join(_WORD.findall(text)).lower() for text in found}
    score = 0
    for group in search.groups:
        have = sum(" ".join(term.words) in words for term in group.wanted)
        # A side wholly there beats any count of words.
        score = max(score, 1000 if have == len(group.wanted) else have)
    if best is None or score >= best[0]:
        return (score, start, end)
    return best


def _marked(search: Search, line: str) -> SafeString:
    """`line` without escape sequences and control characters, cut to about SNIPPET_CHARS
    around its first match, escaped, with every wanted term in <mark>."""
    plain = re.sub(r"[\t\r\n]", " ", _HIDDEN.sub("", line))
    regex = search.regex
    first = regex.search(plain)
    start = max(0, (first.start() if first else 0) - SNIPPET_BEFORE)
    # Not inside a word: back to the start of the one the cut falls in (unless it is long).
    back = start
    while 0 < back and plain[back - 1].isalnum() and start - back < 20:
        back -= 1
    if back == 0 or not plain[back - 1].isalnum():
        start = back
    end = min(len(plain), start + SNIPPET_CHARS)
    piece = plain[start:end]
    parts = ["…" if start > 0 else ""]
    position = 0
    for match in regex.finditer(piece):
        parts.append(html.escape(piece[position : match.start()]))
        parts.append(f"<mark>{html.escape(match.group())}</mark>")
        position = match.end()
    parts.append(html.escape(piece[position:]))
    parts.append("…" if end < len(plain) else "")
    # Safe: every character of the output went through html.escape; <mark> is ours.
    return mark_safe("".join(parts).strip())


# --- The index objects (runs/migrations/0014_search.py, and after every migrate) ----------

_CHUNK_ROWID = "({row}.run_id << 24) | {row}.seq"
_RESULT_ROWID = "({row}.id << 24) | 16777215"

SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS runs_search USING fts5("
    "text, content='', tokenize='unicode61 remove_diacritics 0')"
)
# The conditions of an insert and of its delete are the same, as a contentless table needs: a
# delete of a text never indexed, or with another text, would corrupt it.
SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS runs_search_chunk_insert AFTER INSERT ON runs_runchunk
    WHEN NEW.seq < 16777215 BEGIN
      INSERT INTO runs_search(rowid, text) VALUES ({_CHUNK_ROWID.format(row="NEW")}, NEW.text);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS runs_search_chunk_delete AFTER DELETE ON runs_runchunk
    WHEN OLD.seq < 16777215 BEGIN
      INSERT INTO runs_search(runs_search, rowid, text)
      VALUES ('delete', {_CHUNK_ROWID.format(row="OLD")}, OLD.text);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS runs_search_chunk_update
    AFTER UPDATE OF run_id, seq, text ON runs_runchunk BEGIN
      INSERT INTO runs_search(runs_search, rowid, text)
      SELECT 'delete', {_CHUNK_ROWID.format(row="OLD")}, OLD.text WHERE OLD.seq < 16777215;
      INSERT INTO runs_search(rowid, text)
      SELECT {_CHUNK_ROWID.format(row="NEW")}, NEW.text WHERE NEW.seq < 16777215;
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS runs_search_result_insert AFTER INSERT ON runs_run
    WHEN NEW.result_text <> '' BEGIN
      INSERT INTO runs_search(rowid, text)
      VALUES ({_RESULT_ROWID.format(row="NEW")}, NEW.result_text);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS runs_search_result_delete AFTER DELETE ON runs_run
    WHEN OLD.result_text <> '' BEGIN
      INSERT INTO runs_search(runs_search, rowid, text)
      VALUES ('delete', {_RESULT_ROWID.format(row="OLD")}, OLD.result_text);
    END""",
    # Only when the result changed: a run's row is saved whole many times in its life.
    f"""CREATE TRIGGER IF NOT EXISTS runs_search_result_update AFTER UPDATE OF result_text
    ON runs_run WHEN OLD.result_text IS NOT NEW.result_text BEGIN
      INSERT INTO runs_search(runs_search, rowid, text)
      SELECT 'delete', {_RESULT_ROWID.format(row="OLD")}, OLD.result_text
      WHERE OLD.result_text <> '';
      INSERT INTO runs_search(rowid, text)
      SELECT {_RESULT_ROWID.format(row="NEW")}, NEW.result_text WHERE NEW.result_text <> '';
    END""",
]
SQLITE_TRIGGER_NAMES = [sql.split()[5] for sql in SQLITE_TRIGGERS]
SQLITE_FILL = [
    "INSERT INTO runs_search(rowid, text) SELECT (run_id << 24) | seq, text "
    "FROM runs_runchunk WHERE seq < 16777215",
    "INSERT INTO runs_search(rowid, text) SELECT (id << 24) | 16777215, result_text "
    "FROM runs_run WHERE result_text <> ''",
]
POSTGRESQL_INDEXES = [
    # Computed for every row there is (the table is rewritten), then by PostgreSQL on write.
    "ALTER TABLE runs_runchunk ADD COLUMN IF NOT EXISTS search_vector tsvector "
    f"GENERATED ALWAYS AS ({_pg_vector('text')}) STORED",
    "ALTER TABLE runs_run ADD COLUMN IF NOT EXISTS search_vector tsvector GENERATED ALWAYS AS "
    f"(CASE WHEN result_text <> '' THEN {_pg_vector('result_text')} END) STORED",
    # The search through output (runs.search._PostgresWalk)...
    "CREATE INDEX IF NOT EXISTS runchunk_search_idx ON runs_runchunk USING gin (search_vector)",
    # ...and through claude results: only runs that have one.
    "CREATE INDEX IF NOT EXISTS run_result_search_idx ON runs_run USING gin (search_vector) "
    "WHERE result_text <> ''",
]


def install(conn: BaseDatabaseWrapper, *, fill: bool) -> None:
    """Make the index (filled from the rows there are, when `fill`) on SQLite or PostgreSQL."""
    with conn.cursor() as cursor:
        if conn.vendor == "sqlite":
            present = "runs_search" in conn.introspection.table_names(cursor)
            cursor.execute(SQLITE_TABLE)
            if fill and not present:
                for sql in SQLITE_FILL:
                    cursor.execute(sql)
            for sql in SQLITE_TRIGGERS:
                cursor.execute(sql)
        elif conn.vendor == "postgresql":
            for sql in POSTGRESQL_INDEXES:
                cursor.execute(sql)


def uninstall(conn: BaseDatabaseWrapper) -> None:
    """Remove the index (the migration's reverse)."""
    with conn.cursor() as cursor:
        if conn.vendor == "sqlite":
            for name in SQLITE_TRIGGER_NAMES:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            cursor.execute("DROP TABLE IF EXISTS runs_search")
        elif conn.vendor == "postgresql":
            # Their indexes go with them.
            cursor.execute("ALTER TABLE runs_runchunk DROP COLUMN IF EXISTS search_vector")
            cursor.execute("ALTER TABLE runs_run DROP COLUMN IF EXISTS search_vector")


def restore_triggers(conn: BaseDatabaseWrapper) -> bool:
    """Make the SQLite triggers again if they are gone; whether any was.

    Django's SQLite schema editor changes a table by copying it into a new one and dropping the
    old, and a dropped table takes its triggers with it: a later migration that alters
    `runs_run` or `runs_runchunk` would silently stop the index from following them. The copy
    changes no row, so the index is still right; only the triggers are made again, after every
    `migrate` (runs.apps). Nothing to do before the index exists (migrated back past 0014)."""
    if conn.vendor != "sqlite":
        return False
    with conn.cursor() as cursor:
        if "runs_search" not in conn.introspection.table_names(cursor):
            return False
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'runs_search_%'"
        )
        present = {row[0] for row in cursor.fetchall()}
        if present >= set(SQLITE_TRIGGER_NAMES):
            return False
        for sql in SQLITE_TRIGGERS:
            cursor.execute(sql)
    return True
