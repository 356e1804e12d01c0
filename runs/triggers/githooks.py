"""Git hooks that start runs (DESIGN.md §7.7; research/wave2.md §3.3 "Git hooks").

`install` makes a `git` trigger (a bearer webhook, agents.triggers) for one repository and hook
event and writes the hook into the repository's hooks folder: a POSIX shell script holding the
trigger's URL and token (mode 0700), which posts `{ref, sha, event}` to `/hooks/<uuid>` and
returns at once. The requests are made by one detached background process with its input and
output away from git's, so a commit, merge or push is never slowed or failed by Cronos being
slow or down. That process sends the refs of a push one after the other, in git's order, and
waits as Cronos asks when it answers 429 (at most SEND_GIVE_UP_SECONDS in all): a push of
many refs loses none while Cronos is up. The hook does nothing when `CRONOS_RUN_ID` is set:
every run of an agent has it (runs.execution.executor), so an agent's own commits do not start
runs.

A hook that Cronos did not write is never replaced without `force` (and is then kept beside
it as `<hook>.cronos-backup`); a Cronos hook names its trigger (MARKER), so re-installing
replaces it and deletes that trigger, whose URL then answers 410 Gone. A hook is never written
inside a working tree (a `core.hooksPath` of `.githooks`, or a hooks folder linked there): the
token would be committed with the repository's files.

Finding the hooks folder runs no program that the repository's config names: git is asked
where the repository is (`rev-parse`) and what `core.hooksPath` is, as git itself will read it
when it runs the hook (`git config`, includes and includeIf followed, with the repository's git
folder given): neither runs anything. Refused: a value set in the account's or system's config
(a hooks folder that every repository may share), and an includeIf onbranch: condition (the
folder would change with the branch).
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
# How long the hook's background process may spend, in all, waiting as Cronos's 429 answers
# ask; past it the refs not yet sent are given up.
SEND_GIVE_UP_SECONDS = 600
# The git trigger's rate by default: a push of many refs is many deliveries at once.
RATE_PER_MINUTE = 600


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


# Characters a path given as --repo may not hold: git's answers about it are lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _unusable(path: str) -> str:
    """Why `path` cannot be used ("" when it can): it holds a newline or a control character."""
    found = _CONTROL.search(path)
    if found is None:
        return ""
    what = "a newline" if found[0] == "\n" else f"a control character ({found[0]!r})"
    return f"the path {path!r} holds {what}, which git's answers about it cannot carry"


def _lines(output: str) -> list[str]:
    """git's output as lines: split at newlines only (a path may hold U+2028 or U+0085)."""
    return output.removesuffix("\n").split("\n") if output else []


def find_repository(path: str) -> Repository:
    """The repository that `path` is in (a working tree or a bare repository). Raises
    HookError."""
    folder = os.path.abspath(os.path.expanduser(path))
    for candidate in (folder, os.path.realpath(folder)):
        problem = _unusable(candidate)
        if problem:
            raise HookError(f"{problem}: rename or move the repository, then install again")
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
    lines = _lines(found.stdout)
    if found.returncode != 0:
        said = (found.stderr.strip().splitlines() or ["no answer"])[-1]
        raise HookError(f"{folder} is not in a git repository (git said: {said})")
    if len(lines) != 3 or any(_unusable(line) for line in lines):
        raise HookError(
            f"the git folder of {folder} has a path with a newline or a control character "
            f"(git said: {found.stdout!r}): move it, then install again"
        )
    git_dir, common_dir, bare = lines
    if bare == "true":
        return Repository(path=git_dir, git_dir=git_dir, common_dir=common_dir, bare=True)
    top = _git(["rev-parse", "--show-toplevel"], folder, env)
    toplevel = _lines(top.stdout)[0] if top.returncode == 0 and top.stdout else ""
    if not toplevel:  # asked from inside .git/: the working tree is the folder around it
        toplevel = os.path.dirname(common_dir.rstrip("/"))
    return Repository(path=toplevel, git_dir=git_dir, common_dir=common_dir, bare=False)


# The variables by which a person points git at other global or system config files.
_CONFIG_FILES = ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM")


def _config_env(repo: Repository) -> dict[str, str]:
    """The environment in which git reads the repository's config as it will when it runs a
    hook there: the account's and system's config files, no other GIT_ variable of this
    process (a GIT_CONFIG_PARAMETERS of its own), and the repository's git folder given, so
    includeIf gitdir: and onbranch: are decided for this repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _CONFIG_FILES}
    env.update({"GIT_DIR": repo.git_dir, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    return env


def _said(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stderr.strip().splitlines() or [f"status {result.returncode}"])[-1]


def _hooks_path_setting(repo: Repository) -> tuple[str, str] | None:
    """(scope, value) of `core.hooksPath` as git reads it for this repository (its local and
    worktree config, the account's and the system's, with their includes), `~` expanded as
    git does; None when it is not set. Raises HookError when git cannot say, or when a
    config file includes another by branch (includeIf onbranch:): which hooks folder git uses
    could then change with the branch."""
    cwd = repo.path if os.path.isdir(repo.path) else "/"
    env = _config_env(repo)
    listed = _git(["config", "--includes", "--name-only", "--list", "-z"], cwd, env)
    if listed.returncode != 0:
        raise HookError(f"the git config of {repo.path} could not be read: {_said(listed)}")
    names = [name.lower() for name in listed.stdout.split("\0")]
    if any(name.startswith("includeif.onbranch:") for name in names):
        raise HookError(
            f"the git config of {repo.path} includes files by branch (includeIf onbranch:), "
            "so the hooks folder git uses may change with the branch: not installed. Set "
            "core.hooksPath in the repository's own config (or remove the onbranch: include), "
            "then install again"
        )
    result = _git(
        ["config", "--show-scope", "-z", "--type=path", "--get", "core.hooksPath"], cwd, env
    )
    if result.returncode == 1 and not result.stderr.strip():
        return None  # not set
    scope, separator, value = result.stdout.removesuffix("\0").partition("\0")
    if result.returncode != 0 or not separator:
        raise HookError(f"core.hooksPath of {repo.path} could not be read: {_said(result)}")
    return scope, value


def _hooks_location(repo: Repository) -> tuple[Path, bool]:
    """(the hooks folder, whether core.hooksPath chose it): see hooks_folder."""
    setting = _hooks_path_setting(repo)
    if setting is None:
        return Path(repo.common_dir) / "hooks", False
    scope, value = setting
    if scope not in ("local", "worktree"):
        raise HookError(
            f"core.hooksPath in the {scope} git config sends this repository's hooks (and "
            f"perhaps every repository's) to {value}: a hook written in this repository would "
            "not run. Set this repository's own (git config core.hooksPath .git/hooks) and "
            "install again"
        )
    if not value:
        raise HookError(
            f"core.hooksPath of {repo.path} is empty: set it to a folder, or unset it "
            "(git config --unset core.hooksPath), then install again"
        )
    # A relative path is from where git runs hooks: a bare repository's folder, else the top
    # of the working tree (githooks(5)); git has expanded `~/` (--type=path).
    return Path(os.path.normpath(os.path.join(repo.path, value))), True


def hooks_folder(repo: Repository) -> Path:
    """The folder git runs the repository's hooks from: `core.hooksPath` as git reads it for
    the repository (its own config or its working tree's, with what they include) when set,
    else `hooks` in its common folder. Raises HookError when the account's or system's git
    config sets it (a hook written here would not run, and one written there would run for
    every repository), or when it cannot be known (see _hooks_path_setting)."""
    return _hooks_location(repo)[0]


# --- Never inside a working tree -------------------------------------------------------------


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _nearest_existing(path: str) -> str:
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _working_tree_around(folder: str) -> str | None:
    """The top of the git working tree that `folder` (an existing folder) is in, or None."""
    # Any owner's repository (safe.directory: only rev-parse is run), across file systems.
    env = plain_env() | {"GIT_DISCOVERY_ACROSS_FILESYSTEM": "1"}
    options = ["-c", "safe.directory=*", "rev-parse"]
    inside = _git([*options, "--is-inside-work-tree"], folder, env)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None
    top = _git([*options, "--show-toplevel"], folder, env)
    return _lines(top.stdout)[0] if top.returncode == 0 and top.stdout else folder


def _working_tree_holding(repo: Repository, folder: Path) -> str | None:
    """The working tree (its top) whose files would include a hook written in `folder`, or
    None. Looked for, with links followed, in this repository's working tree (which git may
    not find from inside it: a core.worktree elsewhere) and in any working tree around the
    folder, looked for from outside the repository's git folder (a git folder of another name
    than .git is no shelter: a bare repository or a --separate-git-dir inside a working tree
    is committed with it). Git never adds a path with a `.git` component to a repository, so
    a folder under one is safe (the usual .git/hooks, a linked working tree's or a
    submodule's git folder)."""
    real = os.path.realpath(folder)
    trees = [] if repo.bare else [os.path.realpath(repo.path)]
    start = _nearest_existing(real)
    for git_folder in (repo.git_dir, repo.common_dir):
        git_real = os.path.realpath(git_folder)
        if _within(start, git_real):
            start = os.path.dirname(git_real)  # inside it, git would find that repository
    around = _working_tree_around(start)
    if around is not None:
        trees.append(os.path.realpath(around))
    for tree in trees:
        if _exposed(real, tree):
            return tree
    return None


def _exposed(real: str, tree: str) -> bool:
    """Whether `real` (a path with its links followed) is among the files of the working tree
    `tree`: inside it, and not under a .git folder there."""
    return _within(real, tree) and ".git" not in Path(os.path.relpath(real, tree)).parts


def _refuse_inside_working_tree(repo: Repository, folder: Path, configured: bool) -> None:
    tree = _working_tree_holding(repo, folder)
    if tree is None:
        return
    real = os.path.realpath(folder)
    leads = f" (it leads to {real})" if real != str(folder) else ""
    if configured:
        todo = (
            "unset core.hooksPath for this repository (git config --unset core.hooksPath: "
            "hooks then go in .git/hooks) or point it at a folder outside the working tree"
        )
    elif _exposed(os.path.realpath(repo.common_dir), tree):
        # A git folder of another name than .git inside a working tree (a bare repository,
        # a --separate-git-dir).
        todo = f"move the repository's git folder ({repo.common_dir}) out of the working tree"
    else:
        todo = f"make {folder} a folder of its own instead of a link into the working tree"
    raise HookError(
        f"the hooks folder {folder}{leads} is inside the working tree {tree}: the hook holds "
        f"the trigger's token, which a commit of all files (git add -A) would publish. Not "
        f"written: {todo}, then install again"
    )


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
    rate_per_minute: int = RATE_PER_MINUTE,
    python: str | None = None,
) -> Installed:
    """Make a git trigger of `agent` for the repository at `repo` (taking `rate_per_minute`
    deliveries a minute) and write its `event` hook (see the module's docstring). Raises
    PermissionDenied, ValidationError, HookError (a path that is no repository, a hooks
    folder inside a working tree, a hook Cronos did not write without `force`), OSError."""
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
    folder, configured = _hooks_location(found)
    _refuse_inside_working_tree(found, folder, configured)
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
            agent,
            actor,
            name=name,
            kind=WebhookTrigger.Kind.GIT,
            repo=found.path,
            event=event,
            rate_per_minute=rate_per_minute,
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

# The requests, made by Python's standard library alone (-I -S: no site packages, nothing from
# the repository's folder on the module path, no PYTHON* variables) in one process for all the
# refs: git's lines "<old> <new> <ref>" on its input, sent one after the other in their order,
# a deletion (a new commit of all zeros, of either hash length) not at all. JSON is built by
# json, so any ref name (one may hold " or $ or ') arrives as it is. Redirects are not
# followed: they would carry the token elsewhere. A 429 is waited out as its Retry-After asks
# while the waits end within SEND_GIVE_UP_SECONDS of the start; any other refusal, or Cronos
# not answering, ends it all (the refs after would fare the same); a 5xx goes on to the next.
SEND = f"""\
import hashlib, json, os, signal, sys, time, urllib.error, urllib.parse, urllib.request
signal.signal(signal.SIGHUP, signal.SIG_IGN)
try:
    os.setsid()
except OSError:
    pass
env = os.environ
url, token, event = env["CRONOS_HOOK_URL"], env["CRONOS_HOOK_TOKEN"], env["CRONOS_HOOK_EVENT"]
refs = []
for line in sys.stdin.buffer.read().decode("utf-8", "replace").split(chr(10)):
    old, new, ref = (line.split(" ", 2) + ["", "", ""])[:3]
    if ref and new.strip("0"):
        refs.append((ref, new))
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
safe = "".join(chr(c) for c in range(33, 127) if c != 37)
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
opener = urllib.request.build_opener(Stay)
give_up = time.monotonic() + {SEND_GIVE_UP_SECONDS}
def send(ref, sha):
    key = urllib.parse.quote(event + ":" + ref + ":" + sha, safe=safe)
    if len(key) > {DELIVERY_ID_MAX}:
        key = event + ":sha256-" + hashlib.sha256(ref.encode()).hexdigest() + ":" + sha
    body = json.dumps({{"ref": ref, "sha": sha, "event": event}}).encode()
    headers = {{
        "Authorization": "Bearer " + token,
        "Content-Type": "application/json",
        "Idempotency-Key": key,
        "X-Cronos-Event": event,
        "User-Agent": "cronos-git-hook",
    }}
    while True:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            opener.open(request, timeout={SEND_TIMEOUT_SECONDS}).close()
            return True
        except urllib.error.HTTPError as answer:
            asked = (answer.headers or {{}}).get("Retry-After", "")
            answer.close()
            if answer.code != 429:
                return answer.code >= 500
        except Exception:
            return False
        try:
            wait = max(1, int(asked))
        except ValueError:
            wait = 1
        if time.monotonic() + wait > give_up:
            return False
        time.sleep(wait)
for ref, sha in refs:
    if not send(ref, sha):
        break
"""

# post-commit and post-merge: the ref and the commit checked out now, as the one line sent.
_HEAD = """\
ref=$(git symbolic-ref -q HEAD 2>/dev/null) || ref=HEAD
sha=$(git rev-parse -q --verify HEAD 2>/dev/null) || exit 0
cronos_send 3<<CRONOS_REF
$sha $sha $ref
CRONOS_REF
"""

# post-receive: git's lines, one per updated ref, passed on as they are.
_RECEIVED = """\
cronos_send 3<&0
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
# It tells Cronos the ref and commit, which starts a run of the agent. The requests are sent
# by a background process and the hook returns at once: git never waits for Cronos, and never
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

# Sends the lines "<old> <new> <ref>" read from file descriptor 3, one after the other, from
# one process of its own in the background with its output away from git's (git waits for
# nothing), and the token in its environment rather than its arguments (which every user can
# list).
cronos_send() {{
\t(
\t\tCRONOS_HOOK_URL=$cronos_url CRONOS_HOOK_TOKEN=$cronos_token CRONOS_HOOK_EVENT=$cronos_event \\
\t\t\t"$cronos_python" -I -S -c "$cronos_request" <&3 3<&- >/dev/null 2>&1 &
\t)
}}

{body}exit 0
"""
