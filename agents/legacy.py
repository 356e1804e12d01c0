"""Import and export of a directory laid out as the desktop prototype left it.

    agents/{name}/agent.yaml   the configuration (format: agents.agentfile)
    agents/{name}/CLAUDE.md    the prompt: UTF-8 (or UTF-16 with its mark), kept without a
                               byte-order mark and with LF line endings
    runs/{YYYY-MM-DD}/...      run history: runs.legacy, called by the cronos_import command

Import reads the source and never writes to it. Each agent is imported on its own: a bad one is
reported with its file and reasons and writes nothing (no row, no version, no audit entry), while
the good ones beside it are still imported. Agents are matched by name; importing the same
directory twice changes nothing the second time.

Only the directory's own files are read (agents.importfiles): an agents/ folder, agent folder,
agent.yaml or CLAUDE.md that is a symbolic link (wherever it leads) or a hard link, a file that is
not a regular one (a FIFO, a device, a folder), over its bound, or not text, and an agent.yaml
with YAML anchors, aliases or nesting past its bound, is *refused*: the import does not read it
(or expand it). An agent whose files were read but say something Cronos cannot take (invalid
YAML, a key given twice, a wrong value) has *failed*. Either way the report names the file and
the reason, and nothing of that agent is written.

A dry run takes the same path as the import, save_agent included, in a transaction that is
always rolled back, so that it reports exactly what the import would do: an editor's dry run
keeps `enabled` as the import would (agents.services), with the same notice.

Everything the report and the audit log say about the directory is text its author chose (file
and folder names, names, keys, values quoted in reasons): it goes out through `printable`, so a
name holding a newline or a terminal escape sequence cannot forge a report line or repaint the
terminal.

The folder name is the agent's identity: a `name:` that disagrees with its folder is an error
rather than a warning, because matching by the wrong one of the two would overwrite another
agent. Rename one of them so that they agree. A folder name that is not an agent name
(`Daily Report`) is reported with the name to rename it to (`daily-report`).

An agent.yaml's `triggers.webhooks` (agents.agentfile) are made or changed with the agent, in its
transaction and through agents.triggers (permission, audit): a webhook the agent lacks is made
with a new secret that the report does not print (a secret is shown once, on the agent's page:
rotate it there), one it has gets the file's settings, and one the file does not name is kept,
never deleted. Export writes them without secrets, hashes, uuids or URLs.

An agent that cannot run on this host (agents.host: a Windows path, the home of a user of
another machine, a directory or an executable that does not exist here) is imported disabled,
with a notice naming what is wrong: enabled, every run of it would fail and be retried.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from agents import agentfile as config
from agents import host, services
from agents.dependencies import upstream_names
from agents.importfiles import MAX_PROMPT_BYTES, ImportFolder, UnsafePath
from agents.models import Agent, WebhookTrigger
from agents.triggers import create_trigger, live_triggers, update_trigger
from agents.validation import AGENT_NAME
from audit.actor import Actor
from audit.log import record

log = logging.getLogger(__name__)

EXPORT_HEADER = """\
# Written by Cronos (manage.py cronos_export); read it back with manage.py cronos_import.
# schedule: 5-field cron, an @alias, or the prototype's seconds-first form
#   (sec min hour day-of-month month day-of-week [year]).
# Secret values are never exported: under secrets, NAME: null keeps the value Cronos has.
"""
# Added when the agent has webhooks to write.
EXPORT_WEBHOOKS_NOTE = """\
# triggers.webhooks: each webhook's settings, never its secret or URL. An import makes a webhook
#   the agent lacks with a new secret (rotate it on the agent's page to see one), changes the
#   others, and deletes none. Git hooks (cronos_install_hook) belong to their host: not here.
"""


class LegacyError(ValueError):
    """The directory itself cannot be imported (missing, or not laid out as expected)."""


class Status(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REFUSED = "refused"  # a file the import does not read (agents.importfiles): not imported
    FAILED = "failed"  # read, but it cannot become an agent (or run): not imported


NOT_IMPORTED = (Status.REFUSED, Status.FAILED)


def printable(text: object) -> str:
    """`text` on one line with nothing a terminal acts on: every character that is not
    printable (a newline, CR, ESC, BEL, a C1 control, a bidirectional override, a line
    separator, an undecodable byte of a file name) written as a Python string literal writes
    it (\\n, \\x1b, \\u202e, \\udcff). Backslashes are left as they are, so that a Windows path
    or a reason that already quotes a name with repr() reads as it is."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class _RefusedFile(config.ConfigError):
    """A file of the agent folder that the import does not read (agents.importfiles) or an
    agent.yaml it does not expand (anchors, aliases, deep nesting)."""


@dataclass
class WebhookChanges:
    """What an import did to an agent's webhook triggers (triggers.webhooks), by name."""

    made: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)  # name -> the item's keys
    kept: list[str] = field(default_factory=list)  # the agent's, not in the file

    def lines(self, dry_run: bool) -> list[str]:
        # A new trigger's secret is not printed: a secret is shown once, on the agent's page,
        # and an import's output ends up in terminals' scrollback, logs and CI transcripts.
        out = [
            f"would make webhook {name} (with a new secret, not printed)"
            if dry_run
            else f"webhook {name} made: see its URL on the agent's page, and rotate its secret "
            "there to show one (an import never prints a secret)"
            for name in self.made
        ]
        out += [
            f"{'would change' if dry_run else 'changed'} webhook {name}: {', '.join(keys)}"
            for name, keys in self.changed.items()
        ]
        if self.kept:
            out.append(
                f"webhook{'s' if len(self.kept) > 1 else ''} {', '.join(self.kept)} kept: not in "
                "the file, and an import never deletes a trigger (delete it on the agent's page)"
            )
        return out


@dataclass
class AgentResult:
    name: str
    folder: Path
    status: Status = Status.FAILED
    changed: list[str] = field(default_factory=list)  # file keys, for an update
    problems: list[str] = field(default_factory=list)  # "path: reason", if not imported
    notices: list[str] = field(default_factory=list)
    # Runs with the site's claude executable (CRONOS_CLAUDE_BIN), not one of its own.
    uses_site_claude: bool = False
    # Enabled in its file, imported disabled: it cannot run on this host (see its notices).
    disabled: bool = False
    webhooks: WebhookChanges | None = None

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

    @property
    def not_imported(self) -> list[AgentResult]:
        return [result for result in self.agents if result.status in NOT_IMPORTED]

    def lines(self) -> list[str]:
        """One line per agent, its reasons and notices indented below it, then the notices;
        each item one line (`printable`), whatever the directory's names hold."""
        out = []
        for result in self.agents:
            out.append(result.line(self.dry_run))
            out.extend(f"    {problem}" for problem in result.problems)
            if result.webhooks is not None and result.status not in NOT_IMPORTED:
                out.extend(f"    {line}" for line in result.webhooks.lines(self.dry_run))
            out.extend(f"    notice: {notice}" for notice in result.notices)
        out.extend(f"notice: {notice}" for notice in self.notices)
        return [printable(line) for line in out]

    def summary(self) -> str:
        counts = ", ".join(f"{len(self.with_status(s))} {s}" for s in Status)
        disabled = [r for r in self.agents if r.disabled and r.status not in NOT_IMPORTED]
        if disabled:
            counts += (
                f"; {len(disabled)} {'would be ' if self.dry_run else ''}imported disabled "
                "(cannot run on this host, see the notices)"
            )
        total, source = len(self.agents), printable(self.source)
        if self.dry_run:
            return f"Dry run of {total} agent(s) from {source}, nothing written: {counts}."
        return f"Imported {total} agent(s) from {source}: {counts}."


def import_directory(
    path: str | os.PathLike, actor: Actor, *, dry_run: bool = False
) -> ImportReport:
    """Import every agent under path/agents/; with dry_run, validate all and write nothing."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise LegacyError(f"{root} does not exist or is not a directory.")
    agents_dir = root / "agents"
    # Only the directory's own files are read: a symbolic link anywhere in it, or a file that
    # is not a regular one, is refused with its name (agents.importfiles).
    within = ImportFolder(root)
    try:
        if not within.is_folder(agents_dir, "the agents/ folder"):
            raise LegacyError(
                f"{root} has no agents/ folder: a Cronos directory holds "
                "agents/{name}/agent.yaml."
            )
        names = within.listdir(agents_dir, "the agents/ folder")
    except UnsafePath as exc:
        raise LegacyError(f"{agents_dir}: {exc}; nothing was imported.") from exc
    report = ImportReport(source=root, dry_run=dry_run)
    folders = []
    for entry in (agents_dir / name for name in names if not name.startswith(".")):
        try:
            is_folder = within.is_folder(entry, "the folder")
        except UnsafePath as exc:
            refused = AgentResult(name=entry.name, folder=entry, status=Status.REFUSED)
            refused.problems = [f"{entry}: {exc}; not imported"]
            report.agents.append(refused)
            continue
        if is_folder:
            folders.append(entry)
        else:
            report.notices.append(f"{entry}: ignored, not an agent folder")
    if not folders:
        report.notices.append(f"{agents_dir} holds no agent folders: nothing to import")
    # Every name in the directory is known before the first import, so that depends_on may
    # name an agent imported later in the same run.
    names_here = {folder.name for folder in folders}
    # A dry run imports every agent in one transaction rolled back at the end (each agent in
    # a savepoint of its own), so that each is checked against the ones before it as the
    # import would check it: a depends_on that closes a loop through an agent of the same
    # directory is refused by the dry run too.
    with transaction.atomic() if dry_run else nullcontext():
        for folder in folders:
            try:
                result = _import_agent(folder, actor, names_here=names_here, within=within)
            except Exception as exc:  # one folder never stops the others
                # A fault of ours, not of the file: logged with its traceback, reported on the
                # folder, and nothing of this agent was written (its save is one transaction).
                log.exception("importing an agent failed", extra={"folder": printable(folder)})
                result = AgentResult(name=folder.name, folder=folder)
                result.problems = [f"{folder}: not imported, internal error: {exc!r}"]
            report.agents.append(result)
        if dry_run:
            transaction.set_rollback(True)
    if any(r.uses_site_claude and r.status not in NOT_IMPORTED for r in report.agents):
        problem = host.site_claude_problem()
        if problem:
            report.notices.append(problem)
    return report


def _import_agent(
    folder: Path,
    actor: Actor,
    *,
    names_here: set[str],
    within: ImportFolder | None = None,
) -> AgentResult:
    result = AgentResult(name=folder.name, folder=folder)
    within = within or ImportFolder(folder.parent.parent)
    yaml_path, prompt_path = folder / "agent.yaml", folder / "CLAUDE.md"
    if not AGENT_NAME.fullmatch(folder.name):
        result.problems = [_folder_name_problem(folder, names_here)]
        return result
    try:
        read = _read_agent(folder, yaml_path, prompt_path, within)
    except config.ConfigError as exc:
        result.problems = exc.problems
        if isinstance(exc, _RefusedFile):
            result.status = Status.REFUSED
        return result
    fields = read.parsed.fields
    result.notices = [f"{yaml_path}: {notice}" for notice in read.parsed.notices]
    if read.prompt_changes:
        result.notices.append(f"{prompt_path}: {', '.join(read.prompt_changes)}")
    if read.prompt_missing and fields["runner"] == Agent.Runner.CLAUDE:
        result.problems = [f"{prompt_path}: missing; a claude agent's prompt is its CLAUDE.md"]
        return result
    result.uses_site_claude = fields["runner"] == Agent.Runner.CLAUDE and not fields["command"]
    cannot_run = host.problems(
        working_dir=fields["working_dir"] or "", runner=fields["runner"], command=fields["command"]
    )
    if cannot_run and fields["enabled"]:
        # Enabled, it would fail and be retried at every slot: disabled until a person fixes it.
        # Read as `enabled: false`, so that the file's `true` is not kept as a spelling that
        # export would write back.
        try:
            fields = _parse(
                {**read.mapping, "enabled": False}, read.prompt, folder, yaml_path, read.existing
            ).fields
        except config.ConfigError as exc:
            result.problems = exc.problems
            return result
        result.disabled = True
        result.notices += [
            f"{yaml_path}: imported disabled: {problem}; fix it, then enable the agent"
            for problem in cannot_run
        ]
    else:
        result.notices += [
            f"{yaml_path}: {problem}; its runs will fail until it is fixed"
            for problem in cannot_run
        ]
    for dependency in upstream_names(fields["depends_on"]):
        if dependency not in names_here and not Agent.objects.filter(name=dependency).exists():
            result.notices.append(
                f"{yaml_path}: depends_on names {dependency!r}, which is neither in Cronos "
                "nor in this directory"
            )

    existing = read.existing
    agent = existing if existing is not None else Agent()
    config.apply(agent, fields)
    asked = agent.enabled
    try:
        with transaction.atomic():
            # A dry run saves as the import does, in import_directory's transaction that is
            # rolled back: a copy of save_agent's checks drifted from it once (an editor's dry
            # run said `enabled` would change). Nothing is kept; on PostgreSQL only the id
            # sequences move on.
            changes = services.save_agent(
                agent, actor, reason=f"Imported from {printable(folder)}", action="agent.import"
            )
            # In the same transaction: a trigger that cannot be made or changed leaves nothing
            # of this agent written, its row included.
            webhooks = _apply_webhooks(agent, actor, read.parsed.webhooks, yaml_path)
    except config.ConfigError as exc:
        result.problems = exc.problems
        return result
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
    if agent.enabled != asked:
        # save_agent kept `enabled` as it was: the actor may not enable or pause agents.
        result.notices.append(
            f"{yaml_path}: enabled: {str(asked).lower()} is not applied; "
            + services.enabled_kept(agent, asked)
        )
    result.webhooks = webhooks
    if existing is None:
        result.status = Status.CREATED
    elif changes or webhooks.made or webhooks.changed:
        result.status = Status.UPDATED
        result.changed = config.changed_keys(changes)
        if webhooks.made or webhooks.changed:
            result.changed.append(config.WEBHOOKS_PATH)
    else:
        result.status = Status.UNCHANGED
    return result


def _apply_webhooks(
    agent: Agent, actor: Actor, items: list[dict[str, Any]], yaml_path: Path
) -> WebhookChanges:
    """Make the file's webhooks the agent lacks and change the ones it has, through
    agents.triggers (permission and audit there); none is deleted. A trigger whose settings are
    the file's is not touched (no audit entry). ConfigError naming the item if one cannot be;
    PermissionDenied as the services raise it. Called inside the import's transaction."""
    live = {trigger.name: trigger for trigger in live_triggers(agent)}
    problems = []
    for index, item in enumerate(items):
        where = f"{yaml_path}: {config.WEBHOOKS_PATH}[{index}]"
        trigger = live.get(item["name"])
        if trigger is None:
            continue
        if trigger.kind != WebhookTrigger.Kind.WEBHOOK:
            problems.append(
                f"{where}.name: {item['name']!r} is the name of this agent's git hook trigger "
                "(cronos_install_hook); give the webhook another name"
            )
        elif trigger.auth != item["auth"]:
            # Its senders hold a secret of the other kind: a new trigger, not a change.
            problems.append(
                f"{where}.auth: webhook {item['name']!r} uses {trigger.auth}, and a trigger's "
                f"auth cannot change to {item['auth']}; give this one another name, or delete "
                "the old one on the agent's page and import again"
            )
    if problems:
        raise config.ConfigError(problems)
    outcome = WebhookChanges()
    for index, item in enumerate(items):
        trigger = live.get(item["name"])
        try:
            if trigger is None:
                # The secret is dropped unseen: see WebhookChanges.lines.
                create_trigger(agent, actor, **item)
                outcome.made.append(item["name"])
                continue
            settings = {k: v for k, v in item.items() if k not in ("name", "auth")}
            changed = update_trigger(trigger, actor, **settings)
        except ValidationError as exc:  # a rule of the service that parse did not know
            raise config.ConfigError(
                [f"{yaml_path}: {problem}" for problem in config.webhook_problems(exc, index)]
            ) from exc
        if changed:
            keys = ("filter" if name.startswith("filter_") else name for name in changed)
            outcome.changed[item["name"]] = list(dict.fromkeys(keys))
    named = {item["name"] for item in items}
    outcome.kept = [
        name
        for name, trigger in live.items()
        if name not in named and trigger.kind == WebhookTrigger.Kind.WEBHOOK
    ]
    return outcome


def _folder_name_problem(folder: Path, names_here: set[str]) -> str:
    """The folder is not an agent name: the name to rename it to, if one can be made."""
    problem = (
        f"{folder}: the folder name {folder.name!r} is not an agent name (letters, digits, - "
        "and _; the folder name is the agent's name in Cronos); rename the folder, and the "
        "name: in its agent.yaml"
    )
    suggestion = slugify(folder.name)[:100]
    if not suggestion:
        return problem
    problem += f", to {suggestion!r}"
    if suggestion in names_here:
        problem += f" or another name (a folder {suggestion!r} is already here)"
    elif Agent.objects.filter(name=suggestion).exists():
        problem += f" or another name (Cronos already has an agent {suggestion!r})"
    return problem


def _located(key: str, message: str, yaml_path: Path, prompt_path: Path) -> str:
    """A validation message with the file it is about and, in agent.yaml, the key."""
    if key == "prompt":
        return f"{prompt_path}: {message}"
    return f"{yaml_path}: {key}: {message}" if key else f"{yaml_path}: {message}"


@dataclass
class _Read:
    """One agent folder as read: the parsed agent and what it was parsed from."""

    parsed: config.Parsed
    mapping: dict
    prompt: str
    prompt_missing: bool
    prompt_changes: list[str]  # what was normalised in CLAUDE.md, in words
    existing: Agent | None  # the agent of that name already in Cronos


def _fail(path: Path, problems: list[str]) -> config.ConfigError:
    return config.ConfigError([f"{path}: {problem}" for problem in problems])


def _refuse(path: Path, exc: UnsafePath) -> _RefusedFile:
    return _RefusedFile([f"{path}: {exc}"])


def _read_text(path: Path, within: ImportFolder, limit: int) -> tuple[str, list[str]]:
    """A file's text as agents keep it (agentfile.decode_text), or ConfigError saying why not.

    Only a regular file of the import folder, up to `limit` bytes, is read (ImportFolder)."""
    try:
        return within.read_text(path, "the file", limit=limit)
    except UnsafePath as exc:  # NotText too: binary, or neither UTF-8 nor UTF-16
        raise _refuse(path, exc) from exc


def _parse(
    mapping: Any, prompt: str, folder: Path, yaml_path: Path, existing: Agent | None
) -> config.Parsed:
    try:
        return config.parse(mapping, prompt=prompt, default_name=folder.name, existing=existing)
    except config.ConfigError as exc:
        raise _fail(yaml_path, exc.problems) from exc


def _read_agent(folder: Path, yaml_path: Path, prompt_path: Path, within: ImportFolder) -> _Read:
    """The agent in a folder; ConfigError with "path: reason" lines if it cannot be read."""
    try:
        yaml_missing = not within.exists(yaml_path, "the file")
        prompt_missing = not within.exists(prompt_path, "the file")
    except UnsafePath as exc:
        raise _refuse(folder, exc) from exc
    if yaml_missing:
        raise _fail(yaml_path, ["missing; every agent folder holds an agent.yaml"])
    # YAML reads CRLF itself; nothing to tell
    text, _ = _read_text(yaml_path, within, config.MAX_YAML_BYTES)
    try:
        mapping = config.load_yaml(text)
    except config.ConfigError as exc:
        # Anchors, aliases and deep nesting are refused by the codec's own loader before
        # anything is built (a "billion laughs"), as a link is refused before it is followed; a
        # syntax error or a key given twice is the file's fault.
        if type(exc.__cause__).__module__ == config.__name__:
            raise _RefusedFile([f"{yaml_path}: {problem}" for problem in exc.problems]) from exc
        raise _fail(yaml_path, exc.problems) from exc
    # A file that is not a mapping is refused by config.parse below, with what it holds instead.
    name = mapping.get("name") if isinstance(mapping, dict) else None
    if isinstance(name, str) and name != folder.name:
        raise _fail(
            yaml_path,
            [
                f"name: {name!r} does not match its folder {folder.name!r}; "
                "rename one so that they agree"
            ],
        )

    # Something else named CLAUDE.md (a folder, a pipe, a link) is refused by _read_text.
    prompt = ""
    prompt_changes: list[str] = []
    if not prompt_missing:
        # A prompt written on Windows: its byte-order mark and CRs would reach the model and
        # make every later edit a change of every line; UTF-8 and a missing last newline stay.
        prompt, prompt_changes = _read_text(prompt_path, within, MAX_PROMPT_BYTES)

    existing = Agent.objects.filter(name=folder.name).first()
    parsed = _parse(mapping, prompt, folder, yaml_path, existing)
    return _Read(parsed, mapping, prompt, prompt_missing, prompt_changes, existing)


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
        mapping = config.to_mapping(agent)
        header = EXPORT_HEADER
        if isinstance(mapping.get("triggers"), dict) and mapping["triggers"].get("webhooks"):
            header += EXPORT_WEBHOOKS_NOTE
        text = header + config.dump_yaml(mapping)
        # CLAUDE.md is written even when empty (a command agent): a stale one left from an
        # earlier export would otherwise come back as the prompt on the next import.
        written = [
            _write_atomically(folder / "agent.yaml", text.encode("utf-8")),
            _write_atomically(folder / "CLAUDE.md", agent.prompt.encode("utf-8")),
        ]
        with transaction.atomic():
            record(actor, "agent.export", agent, message=f"Exported to {printable(folder)}")
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
