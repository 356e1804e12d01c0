"""Import and export of a directory laid out as the desktop prototype left it.

    agents/{name}/agent.yaml   the configuration (format: agents.agentfile)
    agents/{name}/CLAUDE.md    the prompt, bytes preserved
    runs/{YYYY-MM-DD}/...      run history: runs.legacy, called by the cronos_import command

Import reads the source and never writes to it. Each agent is imported on its own: a bad one is
reported with its file and reasons and writes nothing (no row, no version, no audit entry), while
the good ones beside it are still imported. Agents are matched by name; importing the same
directory twice changes nothing the second time.

The folder name is the agent's identity: a `name:` that disagrees with its folder is an error
rather than a warning, because matching by the wrong one of the two would overwrite another
agent. Rename one of them so that they agree.
"""

from __future__ import annotations

import enum
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from agents import agentfile as config
from agents import services, versions
from agents.models import Agent
from audit.actor import Actor
from audit.log import record

EXPORT_HEADER = """\
# Written by Cronos (manage.py cronos_export); read it back with manage.py cronos_import.
# schedule: 5-field cron, an @alias, or the prototype's seconds-first form
#   (sec min hour day-of-month month day-of-week [year]).
# Secret values are never exported: under secrets, NAME: null keeps the value Cronos has.
"""


class LegacyError(ValueError):
    """The directory itself cannot be imported (missing, or not laid out as expected)."""


class Status(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass
class AgentResult:
    name: str
    folder: Path
    status: Status = Status.FAILED
    changed: list[str] = field(default_factory=list)  # file keys, for an update
    problems: list[str] = field(default_factory=list)  # "path: reason", for a failure
    notices: list[str] = field(default_factory=list)

    def line(self, dry_run: bool) -> str:
        verb = str(self.status)
        if dry_run and self.status in (Status.CREATED, Status.UPDATED):
            verb = "would " + verb.removesuffix("d")  # "would create", "would update"
        text = f"{verb:<16}{self.name}"
        if self.changed:
            text += f" (changed: {', '.join(self.changed)})"
        return text


@dataclass
class ImportReport:
    source: Path
    dry_run: bool
    agents: list[AgentResult] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def with_status(self, status: Status) -> list[AgentResult]:
        return [result for result in self.agents if result.status == status]

    @property
    def failed(self) -> list[AgentResult]:
        return self.with_status(Status.FAILED)

    def lines(self) -> list[str]:
        """One line per agent, its reasons and notices indented below it, then the notices."""
        out = []
        for result in self.agents:
            out.append(result.line(self.dry_run))
            out.extend(f"    {problem}" for problem in result.problems)
            out.extend(f"    notice: {notice}" for notice in result.notices)
        out.extend(f"notice: {notice}" for notice in self.notices)
        return out

    def summary(self) -> str:
        counts = ", ".join(f"{len(self.with_status(s))} {s}" for s in Status)
        total = len(self.agents)
        if self.dry_run:
            return f"Dry run of {total} agent(s) from {self.source}, nothing written: {counts}."
        return f"Imported {total} agent(s) from {self.source}: {counts}."


def import_directory(
    path: str | os.PathLike, actor: Actor, *, dry_run: bool = False
) -> ImportReport:
    """Import every agent under path/agents/; with dry_run, validate all and write nothing."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise LegacyError(f"{root} does not exist or is not a directory.")
    agents_dir = root / "agents"
    if not agents_dir.is_dir():
        raise LegacyError(
            f"{root} has no agents/ folder: a Cronos directory holds agents/{{name}}/agent.yaml."
        )
    report = ImportReport(source=root, dry_run=dry_run)
    folders = []
    for entry in sorted(agents_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folders.append(entry)
        else:
            report.notices.append(f"{entry}: ignored, not an agent folder")
    if not folders:
        report.notices.append(f"{agents_dir} holds no agent folders: nothing to import")
    # Every name in the directory is known before the first import, so that depends_on may
    # name an agent imported later in the same run.
    names_here = {folder.name for folder in folders}
    for folder in folders:
        report.agents.append(_import_agent(folder, actor, dry_run=dry_run, names_here=names_here))
    return report


def _import_agent(
    folder: Path, actor: Actor, *, dry_run: bool, names_here: set[str]
) -> AgentResult:
    result = AgentResult(name=folder.name, folder=folder)
    yaml_path, prompt_path = folder / "agent.yaml", folder / "CLAUDE.md"
    try:
        parsed, existing, prompt_missing = _read_agent(folder, yaml_path, prompt_path)
    except config.ConfigError as exc:
        result.problems = exc.problems
        return result
    fields = parsed.fields
    result.notices = [f"{yaml_path}: {notice}" for notice in parsed.notices]
    if prompt_missing and fields["runner"] == Agent.Runner.CLAUDE:
        result.problems = [f"{prompt_path}: missing; a claude agent's prompt is its CLAUDE.md"]
        return result
    for dependency in fields["depends_on"]:
        if dependency not in names_here and not Agent.objects.filter(name=dependency).exists():
            result.notices.append(
                f"{yaml_path}: depends_on names {dependency!r}, which is neither in Cronos "
                "nor in this directory"
            )

    agent = existing if existing is not None else Agent()
    before = versions.snapshot(existing) if existing is not None else None
    config.apply(agent, fields)
    try:
        if dry_run:
            # What save_agent checks, without its write.
            actor.require("agents.add_agent" if existing is None else "agents.change_agent")
            agent.full_clean()
            changes = versions.changes_between(before, versions.snapshot(agent))
        else:
            with transaction.atomic():
                changes = services.save_agent(
                    agent, actor, reason=f"Imported from {folder}", action="agent.import"
                )
    except ValidationError as exc:
        result.problems = [
            _located(key, message, yaml_path, prompt_path)
            for key, message in config.validation_problems(exc)
        ]
        return result
    except PermissionDenied as exc:
        result.problems = [f"{yaml_path}: {exc}"]
        return result
    except IntegrityError as exc:
        # Another import or an edit got there first; nothing of this agent was written.
        result.problems = [f"{yaml_path}: could not be saved ({exc}); import again"]
        return result
    if existing is None:
        result.status = Status.CREATED
    elif changes:
        result.status = Status.UPDATED
        result.changed = config.changed_keys(changes)
    else:
        result.status = Status.UNCHANGED
    return result


def _located(key: str, message: str, yaml_path: Path, prompt_path: Path) -> str:
    """A validation message with the file it is about and, in agent.yaml, the key."""
    if key == "prompt":
        return f"{prompt_path}: {message}"
    return f"{yaml_path}: {key}: {message}" if key else f"{yaml_path}: {message}"


def _read_agent(
    folder: Path, yaml_path: Path, prompt_path: Path
) -> tuple[config.Parsed, Agent | None, bool]:
    """The parsed agent, the existing one of that name, and whether CLAUDE.md is missing."""

    def fail(path: Path, problems: list[str]) -> config.ConfigError:
        return config.ConfigError([f"{path}: {problem}" for problem in problems])

    if not yaml_path.is_file():
        raise fail(yaml_path, ["missing; every agent folder holds an agent.yaml"])
    try:
        text = yaml_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(yaml_path, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc
    try:
        mapping = config.load_yaml(text)
    except config.ConfigError as exc:
        raise fail(yaml_path, exc.problems) from exc
    # A file that is not a mapping is refused by config.parse below, with what it holds instead.
    name = mapping.get("name") if isinstance(mapping, dict) else None
    if isinstance(name, str) and name != folder.name:
        raise fail(
            yaml_path,
            [
                f"name: {name!r} does not match its folder {folder.name!r}; "
                "rename one so that they agree"
            ],
        )

    prompt_missing = not prompt_path.is_file()
    prompt = ""
    if not prompt_missing:
        try:
            # Bytes in, text out, nothing normalised: CRLF and a missing last newline survive.
            prompt = prompt_path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(prompt_path, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc

    existing = Agent.objects.filter(name=folder.name).first()
    try:
        parsed = config.parse(mapping, prompt=prompt, default_name=folder.name, existing=existing)
    except config.ConfigError as exc:
        raise fail(yaml_path, exc.problems) from exc
    return parsed, existing, prompt_missing


# --- Export -------------------------------------------------------------------------------------


@dataclass
class ExportReport:
    destination: Path
    agents: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def export_directory(
    path: str | os.PathLike, actor: Actor, agents: Iterable[Agent] | None = None
) -> ExportReport:
    """Write agents (default: all) as path/agents/{name}/agent.yaml and CLAUDE.md; audited."""
    actor.require("agents.view_agent")
    root = Path(path).expanduser()
    report = ExportReport(destination=root)
    chosen = list(Agent.objects.all()) if agents is None else list(agents)
    for agent in chosen:
        folder = root / "agents" / agent.name
        folder.mkdir(parents=True, exist_ok=True)
        text = EXPORT_HEADER + config.dump_yaml(config.to_mapping(agent))
        # CLAUDE.md is written even when empty (a command agent): a stale one left from an
        # earlier export would otherwise come back as the prompt on the next import.
        written = [
            _write_atomically(folder / "agent.yaml", text.encode("utf-8")),
            _write_atomically(folder / "CLAUDE.md", agent.prompt.encode("utf-8")),
        ]
        with transaction.atomic():
            record(actor, "agent.export", agent, message=f"Exported to {folder}")
        report.agents.append(agent.name)
        report.files.extend(written)
    return report


def _write_atomically(path: Path, data: bytes) -> Path:
    """Write through a temporary file in the same folder: readers see the old file or the new."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            shutil.copymode(path, temporary)
        else:
            os.chmod(temporary, 0o644)  # mkstemp makes 0600; an exported config is not secret
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
