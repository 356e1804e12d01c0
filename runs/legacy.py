"""The prototype's run history: runs/{YYYY-MM-DD}/{agent}-{HHMMSS}.json plus the log beside it.

Import reads the source and never writes to it; each record is checked whole before its Run is
written, and a record already imported (same prototype id) is left as it is. Export writes the
same layout back for finished runs, so a directory round-trips: a run of Cronos's own is
exported as `cronos-{number}`, and that id is recognised on import as the run itself (same
number and start) or as one imported with it before, so export -> import adds nothing.

Only the folder's own files are read (agents.importfiles). A record's `log_file` is the bare
name of a file in the record's own folder: an absolute path or one that leads elsewhere (`..`,
`sub/x.log`) is refused without being looked at. A date folder, record or log that is a symbolic
link (wherever it leads) or a hard link, that is not a regular file (a FIFO, a device, a folder),
over its bound or (a record) not text is refused by name.

A record whose log is refused is refused whole, with the reason on its report line, and nothing
of its run is written: imported without its log, the run would be "already there" at every later
import and its log could never follow, while a refused record is imported whole once its log is
fixed (or its log_file removed, to import the run without a log).

Each record not imported is reported as the agents are (agents.legacy.Status): *refused* when
the import does not read a file (the record, or its log: a link, not a regular file, over its
bound or nested past it, not text, a log_file that is not the name of a file beside the
record), *failed* when what it read cannot become a run (not JSON, a missing or wrong key, an
unknown agent, a log_file naming no file). The hint after the reason says what to change for
that reason. Every line goes out through agents.legacy.printable, and a record's error is kept
as its run's reason the same way: a name or an error holding a newline or an escape sequence
stays one visible line.

The log is copied under CRONOS_LOG_DIR with a name made from the run (as Cronos names its own
logs), never from the record, into a file created for it alone (O_EXCL, mode 0600): a file
already there (the log of another run, of an earlier database) is never written through or
replaced, and the copy takes a name with a random part instead.

Status mapping: success -> succeeded; failure -> failed, or timed_out when its error says it
timed out (the prototype recorded timeouts as failures with exit 124); cancelled -> cancelled;
running -> lost (it was running when the prototype stopped, and nobody knows how it ended).
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils.text import slugify

from agents import secrets as agent_secrets
from agents.importfiles import MAX_RUN_RECORD_BYTES, ImportFolder, UnsafePath, size_in_words
from agents.legacy import Status, printable
from agents.masking import masker
from agents.models import Agent
from agents.validation import AGENT_NAME
from audit.actor import Actor
from audit.log import record
from runs import rawlog
from runs.execution.output import clean_text, log_path_for
from runs.models import Run, RunChunk

logger = logging.getLogger(__name__)

RECORD_NAME = re.compile(r"^(?P<agent>.+)-(?P<time>\d{6})\.json$")
# The name export gives a second run of the same second: {agent}-{HHMMSS}-{run number}.json.
RECORD_TIME = re.compile(r"^(?P<time>\d{6})(?:-\d+)?\.json$")
# The id export gives a run that has no prototype id: "cronos-" and its number in that database.
CRONOS_ID = re.compile(r"^cronos-(?P<pk>[0-9]{1,18})$")
LEGACY_ID_LENGTH = 64  # Run.legacy_id
# A log is copied to CRONOS_LOG_DIR and kept in the database as the run's output: bounded
# (settings.CRONOS_IMPORT_MAX_LOG_BYTES), so that a 200 MB or endless file is refused, not read.
STATUS = {
    "success": Run.State.SUCCEEDED,
    "failure": Run.State.FAILED,
    "cancelled": Run.State.CANCELLED,
    "running": Run.State.LOST,
}
TRIGGER = {"scheduled": Run.Trigger.SCHEDULE, "manual": Run.Trigger.MANUAL}
EXPORT_STATUS: dict[str, str] = {
    Run.State.SUCCEEDED: "success",
    Run.State.FAILED: "failure",
    Run.State.TIMED_OUT: "failure",
    Run.State.KILLED: "failure",
    Run.State.LOST: "failure",
    Run.State.CANCELLED: "cancelled",
}
CHUNK = 64 * 1024
# An exit status as a process reports it; a number beyond it is not one (and Run.exit_code, an
# IntegerField, cannot keep it).
EXIT_CODE_RANGE = range(-(2**31), 2**31)
# A new log file: only this import writes it, nobody else reads it, and it replaces nothing.
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class RunsReport:
    imported: int = 0
    unchanged: int = 0
    # (Status.REFUSED or Status.FAILED, "path: reason"), in the order the records were read.
    not_imported: list[tuple[Status, str]] = field(default_factory=list)

    def refuse(self, problem: str) -> None:
        self.not_imported.append((Status.REFUSED, problem))

    def fail(self, problem: str) -> None:
        self.not_imported.append((Status.FAILED, problem))

    @property
    def refused(self) -> list[str]:
        return [problem for status, problem in self.not_imported if status == Status.REFUSED]

    @property
    def failed(self) -> list[str]:
        return [problem for status, problem in self.not_imported if status == Status.FAILED]

    @property
    def problems(self) -> list[str]:
        """Every record not imported, refused or failed, with its reason."""
        return [problem for _, problem in self.not_imported]

    def lines(self) -> list[str]:
        """One line per record not imported, as agents.legacy.ImportReport writes an agent's."""
        return [printable(f"{status:<16}{problem}") for status, problem in self.not_imported]

    def summary(self, dry_run: bool) -> str:
        verb = "would import" if dry_run else "imported"
        return (
            f"runs/ history: {verb} {self.imported}, already there {self.unchanged}, "
            f"refused {len(self.refused)}, failed {len(self.failed)}"
            + ("; nothing written" if dry_run else "")
        )


def _instant(value, key: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be an ISO 8601 string, not {type(value).__name__}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # the prototype wrote UTC
    return parsed


def max_log_bytes() -> int:
    return settings.CRONOS_IMPORT_MAX_LOG_BYTES


def _read_record(folder: ImportFolder, path: Path) -> dict:
    """The record at path, checked; ValueError (UnsafePath among them) saying what is wrong."""
    # UTF-8 with or without a byte-order mark (a record saved on Windows), or UTF-16.
    text, _ = folder.read_text(path, "the record", limit=MAX_RUN_RECORD_BYTES)
    try:
        data = json.loads(text)
    except RecursionError as exc:  # [[[[... : the parser recurses once per level
        # Refused, as an agent.yaml nested past its bound is: not read, rather than wrong.
        raise UnsafePath("the record is nested too deeply for an import to read") from exc
    except ValueError as exc:  # JSONDecodeError, or a number of thousands of digits
        raise ValueError(f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"holds a JSON {type(data).__name__}, not an object")
    for key in ("id", "agent", "status"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"{key} is missing or not a string")
    if not data["id"].isprintable():
        # Kept as the run's legacy_id and shown; an id is matched as it is, so it is not escaped.
        raise ValueError(f"id {data['id']!r} holds characters that are not printable")
    if len(data["id"]) > LEGACY_ID_LENGTH:
        raise ValueError(
            f"id is {len(data['id'])} characters long; Cronos keeps ids of up to {LEGACY_ID_LENGTH}"
        )
    if data["status"] not in STATUS:
        raise ValueError(f"status {data['status']!r} is not one of {', '.join(STATUS)}")
    if data.get("trigger", "manual") not in TRIGGER:
        raise ValueError(f"trigger {data['trigger']!r} is not one of {', '.join(TRIGGER)}")
    exit_code = data.get("exit_code")
    if exit_code is not None and (
        not isinstance(exit_code, int)
        or isinstance(exit_code, bool)
        or exit_code not in EXIT_CODE_RANGE
    ):
        raise ValueError("exit_code must be a whole number, as a process exits with")
    if data.get("log_file") is not None and not isinstance(data["log_file"], str):
        raise ValueError("log_file must be the name of the log file beside the record")
    return data


def _slot(path: Path, agent: str) -> datetime | None:
    """When a run was asked for: its folder's date and the HHMMSS of its file name (UTC)."""
    rest = path.name.removeprefix(f"{agent}-") if path.name.startswith(f"{agent}-") else None
    match = RECORD_TIME.match(rest) if rest is not None else RECORD_NAME.match(path.name)
    try:
        day = datetime.strptime(path.parent.name, "%Y-%m-%d")
        clock = datetime.strptime(match["time"], "%H%M%S") if match else None
    except ValueError:
        return None
    if clock is None:
        return None
    return day.replace(hour=clock.hour, minute=clock.minute, second=clock.second, tzinfo=UTC)


def _records(folder: ImportFolder, runs_dir: Path, report: RunsReport) -> Iterator[Path]:
    """The run records under runs/, as runs/{date}/{name}.json paths inside the import folder.

    A date folder that is a symbolic link (wherever it leads) is reported, and nothing in it
    read; a file beside the date folders is passed over."""
    try:
        days = [runs_dir / name for name in folder.listdir(runs_dir, "the runs/ folder")]
    except UnsafePath as exc:
        report.refuse(f"{runs_dir}: {exc}")
        return
    for day in days:
        if day.name.startswith("."):
            continue
        try:
            if not folder.is_folder(day, "the folder"):
                continue  # a file beside the date folders: not a record
            names = folder.listdir(day, "the folder")
        except UnsafePath as exc:
            report.refuse(f"{day}: {exc}; none of its runs were imported")
            continue
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                yield day / name


def _unknown_agent(name: str, root: Path, incoming: Collection[str]) -> str:
    """Why the runs of agent `name` cannot be imported, and what to do about it."""
    if not AGENT_NAME.fullmatch(name):
        problem = f"agent {name!r} is not an agent name (letters, digits, - and _)"
        suggestion = slugify(name)[:100]
        if not suggestion:
            return problem + "; rename its agents/ folder and this record's agent"
        if Agent.objects.filter(name=suggestion).exists() or suggestion in incoming:
            return (
                problem + f"; if this is a run of the agent {suggestion!r}, set its "
                f'"agent" to {suggestion!r}'
            )
        return (
            problem + f"; rename its agents/ folder to {suggestion!r}, set this record's "
            f'"agent" to {suggestion!r}, and import again'
        )
    if os.path.lexists(root / "agents" / name):
        return (
            f"agent {name!r} is not in Cronos: its folder agents/{name} was not imported "
            "(see its problems above); fix it and import again"
        )
    return f"agent {name!r} is not in Cronos (import its agents/ folder too)"


def _already_there(agent: Agent, legacy_id: str, started: datetime) -> bool:
    """Whether the run of a record is in Cronos already: imported before, or exported from here."""
    runs = Run.objects.filter(agent=agent)
    match = CRONOS_ID.match(legacy_id)
    if match is None:
        return runs.filter(legacy_id=legacy_id).exists()
    # An id cronos_export gave a run of its own: the run itself, when it was exported from this
    # database, or a run imported with that id before. The number alone says nothing in another
    # database (its run N is another run), so the start, written to the millisecond, must agree.
    same_start = Q(started_at__gte=started, started_at__lt=started + timedelta(milliseconds=1))
    return runs.filter(Q(pk=int(match["pk"])) | Q(legacy_id=legacy_id), same_start).exists()


def _identity(legacy_id: str, started: datetime) -> tuple[str, datetime | None]:
    """What tells two records of one import apart (see _already_there)."""
    return (legacy_id, started if CRONOS_ID.match(legacy_id) else None)


def import_runs(
    root: Path, actor: Actor, *, dry_run: bool = False, incoming: Collection[str] = frozenset()
) -> RunsReport:
    """Import every run record under root/runs/; returns counts and per-file problems.

    `incoming` names agents a dry run would create, so their runs are checked, not refused.
    Every record, and the log each names, must be a regular file of root's own, the log beside
    its record: one that is not is reported and nothing of its run imported (module docstring).
    """
    report = RunsReport()
    folder = ImportFolder(root)
    runs_dir = folder.root / "runs"
    try:
        if not folder.is_folder(runs_dir, "the runs/ folder"):
            return report
    except UnsafePath as exc:
        report.refuse(f"{runs_dir}: {exc}; no run of it was imported")
        return report
    agents = {agent.name: agent for agent in Agent.objects.all()}
    seen: set[tuple[str, str, datetime | None]] = set()
    for path in _records(folder, runs_dir, report):
        log: BinaryIO | None = None
        try:
            try:
                data = _read_record(folder, path)
                agent = agents.get(data["agent"])
                if agent is None and not (dry_run and data["agent"] in incoming):
                    raise ValueError(_unknown_agent(data["agent"], folder.root, incoming))
                started = _instant(data.get("started_at"), "started_at")
                finished = (
                    _instant(data["finished_at"], "finished_at")
                    if data.get("finished_at")
                    else None
                )
                if data.get("log_file"):
                    log = _open_log(folder, path, data["log_file"])
            except UnsafePath as exc:  # the record or its log is not read
                report.refuse(f"{path}: {exc}")
                continue
            except ValueError as exc:  # what the record says cannot become a run
                report.fail(f"{path}: {exc}")
                continue
            key = (data["agent"], *_identity(data["id"], started))
            if key in seen or (agent is not None and _already_there(agent, data["id"], started)):
                report.unchanged += 1
                continue
            if dry_run:
                seen.add(key)  # a second record of the same run would be found there
                report.imported += 1
                continue
            try:
                _write_run(agent, path, data, started, finished, log, actor)
            except UnsafePath as exc:  # the log grew past its bound while it was copied
                report.refuse(f"{path}: {_log_refused(exc)}")
                continue
            except ValueError as exc:
                report.fail(f"{path}: {exc}")
                continue
            except Exception as exc:  # one record never stops the others; nothing of it kept
                logger.exception("importing a run failed", extra={"record": printable(path)})
                report.fail(f"{path}: not imported, internal error: {exc!r}")
                continue
            seen.add(key)
            report.imported += 1
        finally:
            if log is not None:
                log.close()
    return report


def _open_log(folder: ImportFolder, record: Path, name: str) -> BinaryIO:
    """The log file `name` beside `record`, opened for reading.

    UnsafePath if it is refused (ImportFolder.beside and open), ValueError if there is no such
    file; either says that the record is not imported and what to change for its reason."""
    shown = f"log file {name!r}"
    try:
        path = folder.beside(record, name, shown)
    except UnsafePath as exc:  # the name itself: absolute, or leading into another folder
        raise UnsafePath(f"not imported: {exc}; {FIX_LOG_FILE}") from exc
    try:
        missing = not folder.exists(path, shown)
    except UnsafePath as exc:
        raise UnsafePath(_log_refused(exc)) from exc
    if missing:
        raise ValueError(f"not imported: {shown} is not beside the record; {FIX_LOG_FILE}")
    try:
        log, _ = folder.open(path, shown, limit=max_log_bytes())
    except UnsafePath as exc:  # the file: a link, not a regular one, over the bound
        raise UnsafePath(_log_refused(exc)) from exc
    return log


# The hints of a record not imported for its log. When log_file itself is wrong (a path, a name
# of no file), log_file is what to fix. When the file it names is refused, log_file is right and
# the file is what to fix: the reason says what is wrong with it (and, for a link, to put a copy
# there), and removing log_file is the other way to import the run.
FIX_LOG_FILE = "fix its log_file (or remove it, to import the run without a log) and import again"


def _log_refused(exc: UnsafePath) -> str:
    return (
        f"not imported: {exc}; import again once that is fixed, or remove its log_file to "
        "import the run without a log"
    )


def _write_run(agent, path, data, started, finished, log, actor) -> None:
    state = STATUS[data["status"]]
    error = data.get("error") or ""
    if state == Run.State.FAILED and str(error).startswith("timed out"):
        state = Run.State.TIMED_OUT
    if state == Run.State.LOST and not error:
        error = "was running when the prototype stopped; its end is unknown"
    trigger = TRIGGER[data.get("trigger", "manual")]
    # The file's name carries when the run was asked for (a scheduled run's slot); it is kept
    # as created_at so that export writes the same name back.
    requested = _slot(path, data["agent"]) or started
    slot = requested if trigger == Run.Trigger.SCHEDULE and requested != started else None
    if slot is not None and Run.objects.filter(agent=agent, slot=slot).exists():
        slot = None  # Cronos already ran that slot; keep the record, not a second claim on it
    written: Path | None = None
    try:
        with transaction.atomic():
            run = Run.import_finished(
                agent=agent,
                legacy_id=data["id"],
                trigger=trigger,
                slot=slot,
                state=state,
                # Shown on one line by the pages and the commands, and written by the author
                # of the folder: kept escaped (printable), as the report shows it.
                reason=printable(error),
                exit_code=data.get("exit_code"),
                created_at=requested,
                started_at=started,
                finished_at=finished or started,
                triggered_by_name="prototype",
            )
            if log is not None:
                # Named as Cronos names its own logs, from the run: nothing of the record's
                # log_file reaches a path under CRONOS_LOG_DIR.
                relative, out = _create_log(log_path_for(run, started))
                written = settings.CRONOS_LOG_DIR / relative
                with out:
                    size = _copy_log(log, data["log_file"], out, run, finished or started)
                Run.objects.filter(pk=run.pk).update(log_path=relative, output_bytes=size)
            record(
                actor,
                "run.import",
                run,
                object_name=f"{agent.name} #{run.pk}",
                message=f"imported from {printable(path)}",
            )
    except BaseException:
        if written is not None:
            written.unlink(missing_ok=True)
        raise


def _create_log(relative: str) -> tuple[str, BinaryIO]:
    """A new, empty log file under CRONOS_LOG_DIR: its path relative to it, and the file.

    Created with O_EXCL and mode 0600 (the data folder's files are 0600): a file already at
    `relative` (another run's log, one left by an earlier database, a link) is never written
    through or replaced; the new file takes `relative` with a random part added instead."""
    root = Path(settings.CRONOS_LOG_DIR)
    (root / relative).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    stem, suffix = os.path.splitext(relative)
    candidate = relative
    for _ in range(16):
        try:
            handle = os.open(root / candidate, LOG_FLAGS, 0o600)
        except FileExistsError:
            candidate = f"{stem}-{secrets.token_hex(4)}{suffix}"
            continue
        return candidate, os.fdopen(handle, "wb")
    # 16 random names taken: something is making them on purpose.
    raise FileExistsError(f"no free name for the log beside {root / relative}")


def _copy_log(log: BinaryIO, name: str, out: BinaryIO, run: Run, at: datetime) -> int:
    """Copy an opened log into `out` and into the run's output chunks; its size.

    Read a piece at a time, up to the bound: a file that grew past it since it was checked is
    refused (UnsafePath); the caller removes what was written."""
    limit = max_log_bytes()
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    # The prototype stored output as printed: the agent's secrets are masked on the way in, as a
    # run's own output is (DESIGN.md §4), in the copied log and in the chunks alike.
    hide = masker(tuple(agent_secrets.secret_values(run.agent.variables or [])))
    size, chunks, seq, held = 0, [], 0, b""
    while True:
        piece = log.read(CHUNK)
        size += len(piece)
        if size > limit:
            raise UnsafePath(
                f"log file {name!r} is larger than the {size_in_words(limit)} an import reads"
            )
        piece, held = hide.mask_stream(held + piece, final=not piece)
        if not piece and not held:
            break
        out.write(piece)
        text = decoder.decode(piece)
        if text:
            chunks.append(RunChunk(run=run, seq=seq, text=clean_text(text), created_at=at))
            seq += 1
        if len(chunks) >= 64:
            RunChunk.objects.bulk_create(chunks)
            chunks = []
    text = decoder.decode(b"", final=True)
    if text:
        chunks.append(RunChunk(run=run, seq=seq, text=clean_text(text), created_at=at))
    RunChunk.objects.bulk_create(chunks)
    return size


def export_runs(root: Path, actor: Actor, agents: list[Agent]) -> int:
    """Write the finished runs of `agents` as runs/{date}/{agent}-{HHMMSS}.json and .log."""
    count = 0
    for run in Run.objects.filter(
        agent__in=agents, state__in=list(EXPORT_STATUS), started_at__isnull=False
    ).select_related("agent"):
        assert run.started_at is not None  # filtered above
        started = run.started_at.astimezone(UTC)
        requested = run.created_at.astimezone(UTC)
        folder = root / "runs" / f"{requested:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        # The id import recognises (_already_there): the prototype's, or this run's number.
        legacy_id = run.legacy_id or f"cronos-{run.pk}"
        stem = f"{run.agent.name}-{requested:%H%M%S}"
        if _exported_id(folder / f"{stem}.json") not in (None, legacy_id):
            stem = f"{stem}-{run.pk}"  # another run of that second; this run's, written again
        # The run's kept log file, else its output from the database (runs.rawlog: where
        # output lives); a run without either (pruned, or it printed nothing) has no log.
        source = _log_source(run.log_path)
        has_chunks = source is None and run.chunks.exists()
        data = {
            "id": legacy_id,
            "agent": run.agent.name,
            "trigger": "scheduled" if run.slot else "manual",
            "started_at": _iso(started),
            "finished_at": _iso(run.finished_at.astimezone(UTC)) if run.finished_at else None,
            "status": EXPORT_STATUS[run.state],
            "exit_code": run.exit_code,
        }
        if run.reason and run.state != Run.State.SUCCEEDED:
            data["error"] = run.reason
        if source is not None:
            # Through a temporary file, as the record: a file already there (even a symbolic
            # link) is replaced, never written through.
            tmp_log = folder / f".{stem}.log.tmp"
            tmp_log.unlink(missing_ok=True)
            shutil.copyfile(source, tmp_log)
            os.replace(tmp_log, folder / f"{stem}.log")
            data["log_file"] = f"{stem}.log"
        elif has_chunks:
            tmp_log = folder / f".{stem}.log.tmp"
            tmp_log.unlink(missing_ok=True)
            with tmp_log.open("w", encoding="utf-8") as out:
                for text in rawlog.pieces(run):
                    out.write(text)
            os.replace(tmp_log, folder / f"{stem}.log")
            data["log_file"] = f"{stem}.log"
        tmp = folder / f".{stem}.json.tmp"
        tmp.unlink(missing_ok=True)
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, folder / f"{stem}.json")
        count += 1
    if count:
        record(actor, "run.export", message=f"exported {count} run(s) to {printable(root)}")
    return count


def _exported_id(path: Path) -> str | None:
    """The id of the record at path, "" for a file that is not one; None if there is none."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(data.get("id")) if isinstance(data, dict) else ""


def _log_source(log_path: str) -> Path | None:
    """A run's log file, if it is a regular file inside CRONOS_LOG_DIR."""
    return rawlog.log_file(log_path)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
