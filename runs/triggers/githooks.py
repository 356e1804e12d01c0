"""Git hooks that start runs (DESIGN.md §7.7; research/wave2.md §3.3 "Git hooks").

`install` makes a `git` trigger (a bearer webhook, agents.triggers) for one repository and hook
event and writes the hook into the repository's hooks folder: a POSIX shell script holding the
trigger's URL and token (mode 0700), which posts `{ref, sha, event}` to `/hooks/<uuid>` and
returns at once. The request is made by a detached background process with its input and
output away from git's, so a commit, merge or push is never slowed or failed by Cronos being
slow or down. The hook does nothing when `CRONOS_RUN_ID` is set: every run of an agent has it
(runs.execution.executor), so an agent's own commits do not start runs.

A hook that Cronos did not write is never replaced without `force` (and is then kept beside
it as `<hook>.cronos-backup`); a Cronos hook names its trigger (MARKER), so re-installing
replaces it and deletes that trigger, whose URL then answers 410 Gone.

Finding the hooks folder runs no program that the repository's config names: git is asked
only where the repository is (`rev-parse`, which runs nothing), and `core.hooksPath` is read
from the config files themselves (`git config --file`, and `--global`/`--system` to refuse a
hooks folder that every repository shares; includes not followed).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from django.db import transaction

from agents.models import Agent, WebhookTrigger
from agents.triggers import PERMISSION, create_trigger, delete_trigger
from audit.actor import Actor
from runs.execution.gitinfo import plain_env
from runs.triggers.webhooks import DELIVERY_ID_MAX

EVENTS = ("post-commit", "post-merge", "post-receive")
BACKUP_SUFFIX = ".cronos-backup"
# The line by which a hook says that Cronos wrote it, and for which trigger.
MARKER = "# cronos-hook-trigger: "
_MARKER = re.compile(r"^# cronos-hook-trigger: ([0-9a-f-]{36})$", re.MULTILINE)
GIT_TIMEOUT = 10  # seconds for each git command run here (they only read)
READ_LIMIT = 256 * 1024  # bytes of an existing hook read to find the marker
# How long the hook's background request may wait for Cronos, per connect and per read: the
# process lingers at most that long when Cronos hangs, and nobody waits for it.
SEND_TIMEOUT_SECONDS = 10


class HookError(ValueError):
    """What was asked cannot be done; the message says why in one line."""


@dataclass(frozen=True)
class Repository:
    """Where a repository is, as git finds it from a path inside it."""

    path: str  # the top of the working tree; a bare repository's own folder
    git_dir: str
    common_dir: str  # shared by all of a repository's working trees (and its hooks)
    bare: bool


@dataclass(frozen=True)
class Installed:
    """A hook written: where, its trigger and URL, the triggers it replaced, the backup."""

    path: Path
    trigger: WebhookTrigger
    url: str
    retired: list[WebhookTrigger] = field(default_factory=list)
    backup: Path | None = None


@dataclass(frozen=True)
class Removed:
    """A hook removed: where, its trigger (deleted), and the hook put back from a backup."""

    path: Path
    trigger: WebhookTrigger | None
    restored: Path | None


# --- Where the hook goes ---------------------------------------------------------------------


def _git(args: list[str], cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "--no-pager", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=GIT_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise HookError(f"git could not be run: {exc}") from exc


def find_repository(path: str) -> Repository:
    """The repository that `path` is in (a working tree or a bare repository). Raises
    HookError."""
    folder = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(folder):
        raise HookError(f"{folder} is not a folder")
    env = plain_env()
    found = _git(
        [
            "rev-parse",
            "--path-format=absolute",
            "--git-dir",
            "--git-common-dir",
            "--is-bare-repository",
        ],
        folder,
        env,
    )
    lines = found.stdout.splitlines()
    if found.returncode != 0 or len(lines) != 3:
        said = (found.stderr.strip().splitlines() or ["no answer"])[-1]
        raise HookError(f"{folder} is not in a git repository (git said: {said})")
    git_dir, common_dir, bare = lines
    if bare == "true":
        return Repository(path=git_dir, git_dir=git_dir, common_dir=common_dir, bare=True)
    top = _git(["rev-parse", "--show-toplevel"], folder, env)
    toplevel = top.stdout.strip() if top.returncode == 0 else ""
    if not toplevel:  # asked from inside .git/: the working tree is the folder around it
        toplevel = os.path.dirname(common_dir.rstrip("/"))
    return Repository(path=toplevel, git_dir=git_dir, common_dir=common_dir, bare=False)


def _config_value(file: str, key: str, *, boolean: bool = False) -> str | None:
    """`key` as set in one config `file` (its includes not followed), or None."""
    if not os.path.isfile(file):
        return None
    typed = ["--type=bool"] if boolean else []
    result = _git(["config", "--file", file, *typed, "--get", key], "/", plain_env())
    return result.stdout.rstrip("\n") if result.returncode == 0 else None


# The variables by which a person points git at other global or system config files.
_CONFIG_FILES = ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM")


def _account_hooks_path() -> tuple[str, str] | None:
    """(where, value) of a core.hooksPath in this account's global or the system's git config,
    which sends every repository's hooks to one folder. Read from those files alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _CONFIG_FILES}
    for scope in ("--global", "--system"):
        result = _git(["config", scope, "--get", "core.hooksPath"], "/", env)
        if result.returncode == 0 and result.stdout.strip():
            return scope.removeprefix("--"), result.stdout.strip()
    return None


def hooks_folder(repo: Repository) -> Path:
    """The folder git runs the repository's hooks from: `core.hooksPath` of the repository's
    config (or its working tree's, with extensions.worktreeConfig) when set, else `hooks` in
    its common folder. Raises HookError when the account's or system's git config sends every
    repository's hooks to one folder (a hook written here would not run, and one written
    there would run for every repository)."""
    config = os.path.join(repo.common_dir, "config")
    value = _config_value(config, "core.hooksPath")
    if _config_value(config, "extensions.worktreeConfig", boolean=True) == "true":
        worktree = os.path.join(repo.git_dir, "config.worktree")
        value = _config_value(worktree, "core.hooksPath") or value
    if value is None:
        shared = _account_hooks_path()
        if shared is not None:
            scope, folder = shared
            raise HookError(
                f"core.hooksPath in the {scope} git config sends every repository's hooks to "
                f"{folder}: a hook written in this repository would not run. Set this "
                "repository's own (git config core.hooksPath .git/hooks) and install again"
            )
        return Path(repo.common_dir) / "hooks"
    # A relative path is from where git runs hooks: a bare repository's folder, else the top
    # of the working tree (githooks(5)); `~/` is the home folder, as git expands it.
    folder = os.path.expanduser(value)
    return Path(os.path.normpath(os.path.join(repo.path, folder)))


def trigger_name(repo: Repository, event: str) -> str:
    """The trigger's name: the event and a short hash of the repository's common folder (all
    its working trees share their hooks, so they share the trigger)."""
    digest = hashlib.sha256(os.path.realpath(repo.common_dir).encode()).hexdigest()[:8]
    return f"git-{event}-{digest}"


def checked_base_url(url: str) -> str:
    """Cronos's address as the hook will call it (without a trailing /). Raises HookError."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.query
        or parts.fragment
        or not url.isprintable()
        or any(c.isspace() for c in url)
    ):
        raise HookError(
            f"--url must be Cronos's address, such as http://127.0.0.1:8000 (got {url!r})"
        )
    return url.rstrip("/")


# --- What is there already -------------------------------------------------------------------


def _existing(path: Path) -> tuple[str, uuid.UUID | None]:
    """("none" | "cronos" | "foreign", the trigger a Cronos hook names). Raises HookError for
    something that is not a file (a folder, a FIFO)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "none", None
    if stat.S_ISLNK(info.st_mode):
        return "foreign", None  # Cronos writes files, never links
    if not stat.S_ISREG(info.st_mode):
        raise HookError(f"{path} is there and is not a file: move it away first")
    # Not following a link, not waiting on a FIFO swapped in since the lstat.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        text = file.read(READ_LIMIT).decode("utf-8", errors="replace")
    found = _MARKER.search(text)
    if found is None:
        return "foreign", None
    try:
        return "cronos", uuid.UUID(found[1])
    except ValueError:
        return "cronos", None


def _live_git_trigger(key: uuid.UUID | None) -> WebhookTrigger | None:
    if key is None:
        return None
    return (
        WebhookTrigger.objects.select_related("agent")
        .filter(uuid=key, kind=WebhookTrigger.Kind.GIT, deleted_at__isnull=True)
        .first()
    )


# --- Installing and removing -----------------------------------------------------------------


def install(
    agent: Agent,
    actor: Actor,
    *,
    repo: str,
    event: str,
    base_url: str,
    force: bool = False,
    python: str | None = None,
) -> Installed:
    """Make a git trigger of `agent` for the repository at `repo` and write its `event` hook
    (see the module's docstring). Raises PermissionDenied, ValidationError, HookError (a path
    that is no repository, a hook Cronos did not write without `force`), OSError."""
    actor.require(PERMISSION)
    if event not in EVENTS:
        raise HookError(f"the event is one of {', '.join(EVENTS)} (got {event!r})")
    base = checked_base_url(base_url)
    found = find_repository(repo)
    if found.bare and event != "post-receive":
        raise HookError(
            f"{found.path} is a bare repository: nothing is committed or merged in it, so "
            f"{event} never runs there; use --event post-receive"
        )
    folder = hooks_folder(found)
    path = folder / event
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    kind, named = _existing(path)
    if kind == "foreign":
        if not force:
            raise HookError(
                f"{path} is a hook that Cronos did not write: not replaced (--force replaces "
                f"it, keeping it as {backup.name})"
            )
        if os.path.lexists(backup):
            raise HookError(f"{backup} exists already: move it away, then install again")
    name = trigger_name(found, event)
    with transaction.atomic():
        retired: list[WebhookTrigger] = []
        for old in (
            _live_git_trigger(named),
            agent.webhooks.filter(
                name=name, kind=WebhookTrigger.Kind.GIT, deleted_at__isnull=True
            ).first(),
        ):
            if old is not None and old.pk not in {t.pk for t in retired}:
                delete_trigger(old, actor)
                retired.append(old)
        made = create_trigger(
            agent, actor, name=name, kind=WebhookTrigger.Kind.GIT, repo=found.path, event=event
        )
        url = f"{base}/hooks/{made.trigger.uuid}"
        text = hook_script(
            agent=agent.name,
            trigger=made.trigger,
            url=url,
            token=made.secret,
            event=event,
            python=python or _python(),
        )
        # Last: a failure above leaves the old hook and changes nothing in the database.
        _write(path, text, backup if kind == "foreign" else None)
    return Installed(
        path=path,
        trigger=made.trigger,
        url=url,
        retired=retired,
        backup=backup if kind == "foreign" else None,
    )


def remove(agent: Agent, actor: Actor, *, repo: str, event: str) -> Removed:
    """Remove `agent`'s `event` hook from the repository at `repo` and delete its trigger; a
    hook kept as a backup when it was installed is put back. Raises PermissionDenied,
    HookError (no hook, a hook Cronos did not write, another agent's)."""
    actor.require(PERMISSION)
    if event not in EVENTS:
        raise HookError(f"the event is one of {', '.join(EVENTS)} (got {event!r})")
    found = find_repository(repo)
    path = hooks_folder(found) / event
    kind, named = _existing(path)
    if kind == "none":
        raise HookError(f"there is no {event} hook at {path}")
    if kind == "foreign":
        raise HookError(f"{path} is a hook that Cronos did not write: not removed")
    trigger = _live_git_trigger(named)
    if trigger is not None and trigger.agent_id != agent.pk:
        raise HookError(f"{path} is the hook of agent {trigger.agent.name}, not {agent.name}")
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    with transaction.atomic():
        if trigger is not None:
            delete_trigger(trigger, actor)
        if os.path.lexists(backup):
            os.replace(backup, path)
            restored: Path | None = path
        else:
            path.unlink()
            restored = None
    return Removed(path=path, trigger=trigger, restored=restored)


def _python() -> str:
    """The Python the hook runs its request with: Cronos's own (an absolute path, so nothing
    on a person's PATH is chosen instead); python3 on the PATH only if that is unknown."""
    if sys.executable and os.path.isabs(sys.executable):
        return sys.executable
    return shutil.which("python3") or "python3"


def _write(path: Path, text: str, backup: Path | None) -> None:
    """Put the hook at `path` whole (a temporary file renamed over it), mode 0700: only its
    owner can read the token in it. The hook there before is renamed to `backup` if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.cronos-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            os.fchmod(file.fileno(), 0o700)
        if backup is not None:
            os.rename(path, backup)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        if backup is not None and os.path.lexists(backup) and not os.path.lexists(path):
            os.rename(backup, path)  # the hook that was there stays
        raise


# --- The hook --------------------------------------------------------------------------------

# The request, made by Python's standard library alone (-I -S: no site packages, nothing from
# the repository's folder on the module path, no PYTHON* variables). JSON is built by json,
# so any ref name (one may hold " or $ or ') arrives as it is. Redirects are not followed:
# they would carry the token elsewhere.
SEND = f"""\
import hashlib, json, os, signal, urllib.parse, urllib.request
signal.signal(signal.SIGHUP, signal.SIG_IGN)
try:
    os.setsid()
except OSError:
    pass
env = os.environ
ref, sha, event = env["CRONOS_HOOK_REF"], env["CRONOS_HOOK_SHA"], env["CRONOS_HOOK_EVENT"]
safe = "".join(chr(c) for c in range(33, 127) if c != 37)
key = urllib.parse.quote(event + ":" + ref + ":" + sha, safe=safe)
if len(key) > {DELIVERY_ID_MAX}:
    key = event + ":sha256-" + hashlib.sha256(ref.encode()).hexdigest() + ":" + sha
body = json.dumps({{"ref": ref, "sha": sha, "event": event}}).encode()
headers = {{
    "Authorization": "Bearer " + env["CRONOS_HOOK_TOKEN"],
    "Content-Type": "application/json",
    "Idempotency-Key": key,
    "X-Cronos-Event": event,
    "User-Agent": "cronos-git-hook",
}}
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
request = urllib.request.Request(env["CRONOS_HOOK_URL"], data=body, headers=headers, method="POST")
try:
    urllib.request.build_opener(Stay).open(request, timeout={SEND_TIMEOUT_SECONDS}).close()
except Exception:
    pass
"""

_HEAD = """\
ref=$(git symbolic-ref -q HEAD 2>/dev/null) || ref=HEAD
sha=$(git rev-parse -q --verify HEAD 2>/dev/null) || exit 0
cronos_send "$ref" "$sha"
"""

# Git gives post-receive one line per updated ref: "<old> <new> <ref>". A deletion's new
# commit is all zeros (of either hash length): nothing to run on.
_RECEIVED = """\
while read -r old new ref; do
\tcase $new in
\t*[!0]*) cronos_send "$ref" "$new" ;;
\tesac
done
"""


def _quoted(value: str) -> str:
    """`value` as one single-quoted word of sh, whatever it holds."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def hook_script(
    *, agent: str, trigger: WebhookTrigger, url: str, token: str, event: str, python: str
) -> str:
    """The hook's text (POSIX sh). Every value is single-quoted for the shell; the agent's and
    trigger's names are letters, digits, - and _ (validated), so the comments hold no code."""
    q = _quoted
    body = _RECEIVED if event == "post-receive" else _HEAD
    return f"""#!/bin/sh
# A git hook written by Cronos (python manage.py cronos_install_hook):
#   agent {agent}, event {event}, trigger {trigger.name}
# It tells Cronos the ref and commit, which starts a run of the agent. The request is sent by
# a background process and the hook returns at once: git never waits for Cronos, and never
# fails because of it. Nothing is sent from inside a run of an agent (CRONOS_RUN_ID is set).
# This file holds the trigger's token: keep it private.
# To remove it: python manage.py cronos_install_hook {agent} --repo PATH --event {event} --remove
{MARKER}{trigger.uuid}

if [ -n "${{CRONOS_RUN_ID+set}}" ]; then
\texit 0
fi

cronos_url={q(url)}
cronos_token={q(token)}
cronos_event={q(event)}
cronos_python={q(python)}
cronos_request={q(SEND)}

if [ ! -x "$cronos_python" ]; then
\tcronos_python=$(command -v python3) || exit 0
fi

# $1: the ref, $2: the commit. Sent by a process of its own in the background, with its input
# and output away from git's (git waits for nothing), and the token in its environment rather
# than its arguments (which every user can list).
cronos_send() {{
\t(
\t\tCRONOS_HOOK_URL=$cronos_url CRONOS_HOOK_TOKEN=$cronos_token CRONOS_HOOK_EVENT=$cronos_event \\
\t\t\tCRONOS_HOOK_REF="$1" CRONOS_HOOK_SHA="$2" \\
\t\t\t"$cronos_python" -I -S -c "$cronos_request" </dev/null >/dev/null 2>&1 &
\t)
}}

{body}exit 0
"""
