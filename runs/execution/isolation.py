"""Isolation of agents from Cronos (DESIGN.md §4 "One launcher, and isolation from Cronos").

An agent is someone else's program running on Cronos's host: it must never read Cronos's
database, keys, logs or environment, since any of them makes its author an admin. The launcher
(runs/execution/launcher.py) starts every agent through `Isolation.wrap`, which adds one or
both of:

- **namespaces** (the default where the host allows unprivileged user namespaces): the agent
  runs in new user, mount and pid namespaces (util-linux `unshare`). A small POSIX shell init,
  PID 1 of the run's pid namespace and root of the run's outer user namespace, mounts an empty
  read-only tmpfs over Cronos's data folder and log folder (and `/dev/null` over any key file
  or SQLite database kept elsewhere), then starts the agent in a second, nested user namespace
  where it has its own user id and no capability, with `no_new_privs` (`setpriv`). It cannot
  unmount what hides the data: it has no capability over the mount namespace, and a namespace
  it creates itself inherits those mounts locked together (mount_namespaces(7), "restrictions
  on mount namespaces"). Its `/proc` shows only the run's own processes, so no other process's
  environment, open files or root (`/proc/<pid>/root`, a way around mount namespaces) can be
  reached. When the agent's main process exits, the init exits too and the kernel ends every
  process left in the run's pid namespace (pid_namespaces(7)): nothing the run started
  survives it.
- **a separate OS user** (`CRONOS_AGENT_USER`, opt-in, Cronos running as root): `setpriv`
  switches to that account (its groups, all capabilities dropped, `no_new_privs`) before
  anything else; the data folder is 0700 and Cronos's processes are not dumpable, so neither
  files nor `/proc/<pid>/environ` of Cronos are readable to it.

The same launcher adds the `network: none` guardrail (DESIGN.md §7.3; runs/execution/
guardrails.py probes it and decides whether it can be enforced here): with `network_none`, the
outer `unshare` also makes a new network namespace (`--net`, unshare(1)), which has only a
loopback interface, and down; the init brings it up with iproute2's `ip link set lo up` (found
in SYSTEM_PATH, never on the agent's PATH; left down when `ip` is not installed) so that a
server the agent starts itself answers it on 127.0.0.1. Nothing outside is reachable: neither
the host's own 127.0.0.1 (Cronos, its database or broker) nor any other address (ENETUNREACH:
no route). Without namespaces, a separate agent user (Cronos being root) gets a network
namespace of root's own `unshare --net` instead; unisolated, `network_none` is refused
(IsolationError: the run fails closed). Unix sockets in the file system (a database's, a
Docker daemon's) are not network and stay reachable wherever the files are.

Written by hand (a shell init and two util-linux tools) rather than with bubblewrap because
bubblewrap is not on every host and `pip` cannot install it, while util-linux is part of every
Debian-like system; the init is a POSIX shell rather than Python because a Python interpreter
would add 15–30 ms to every start (measured), against a target of 20 ms start lateness.

The agent's environment is built from an allow-list (`agent_environment`), never from
Cronos's own: Cronos's settings, database and broker URLs and keys are not in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

# The variables of Cronos's own environment an agent inherits (DESIGN.md §4); everything else
# comes from the agent's configuration and the run's built-ins.
INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "TERM")
# The exit status of the init when Cronos's files could not be hidden: the agent never started.
HIDING_FAILED = 125
# Exit statuses above this are a signal's (128 + N), the way a shell reports a child's death:
# PID 1 of a namespace cannot itself die of a signal a process outside sends it, so the init
# passes the agent's status on as a shell would (ProcessTree.status_from_init reads it back).
SIGNAL_BASE = 128
# How long the one-off check that namespaces work here may take.
PROBE_SECONDS = 10

# PID 1 of the run's namespaces. Arguments: the grace for leftovers (tenths of a second), the
# absolute paths of `mount` and `sleep` (never looked up on the agent's PATH, which the agent's
# author chooses), the absolute path of `ip` when the run has a network namespace of its own
# whose loopback is to be brought up ("" otherwise), then (mode, path) pairs in the order to apply them, "--", and the agent's
# command. First every mount the namespace inherited becomes read-only (/proc, /sys and /dev
# aside), so the agent cannot change Cronos's installation, its Python, or any program Cronos
# runs; then, shallowest first: W makes a path writable again (the working directory, the
# run's folder, /tmp, HOME), R read-only again inside one (Cronos's installation, its Python,
# the directories of its PATH), H hides it (an empty read-only tmpfs over a directory,
# /dev/null over a file). Binds are recursive: a user namespace may not bind a tree without
# the mounts below it (they could hide something). A path that does not exist has nothing to
# do; a W that cannot be made writable (a read-only file system) stays read-only, as it is
# outside; any other failure stops the run before the agent starts (fail closed, exit 125).
# The agent runs in the foreground, not `exec`: PID 1 ignores the signals it has no handler
# for, so the agent must not be PID 1 or TERM would not end it; its status becomes the init's.
# When it has exited, what it left running in the namespace gets TERM, the grace, and the note
# the executor writes for the same thing without namespaces; the kernel then KILLs whatever is
# left as the init exits.
# The init's own stderr goes to /dev/null once the agent starts, while the agent keeps the
# run's (redirected inside the subshell: a redirection of a plain command is applied in the
# shell itself while it waits): a shell reports a foreground child's death by signal
# ("Terminated") on its stderr, and that is not the agent's output.
INIT_SCRIPT = """\
grace=$1; mount=$2; sleep=$3; ip=$4; shift 4
fail() { echo "cronos: could not isolate the agent: $1" >&2; exit 125; }
[ -z "$ip" ] || "$ip" link set lo up 2>/dev/null
while read -r _id _parent _dev _root point options _rest; do
  case "$options" in ro|ro,*) continue ;; esac
  point=$(printf '%b' "$point")
  case "$point" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
  "$mount" -o remount,bind,ro "$point" 2>/dev/null || fail "cannot make $point read-only"
done < /proc/self/mountinfo
while [ "$1" != "--" ]; do
  mode=$1; path=$2; shift 2
  [ -e "$path" ] || continue
  case "$mode" in
    W) { "$mount" --rbind "$path" "$path" && "$mount" -o remount,bind,rw "$path"; } 2>/dev/null ;;
    R) "$mount" --rbind "$path" "$path" && "$mount" -o remount,bind,ro "$path" \
         || fail "cannot make $path read-only" ;;
    H) if [ -d "$path" ]; then
         "$mount" -t tmpfs -o ro,nosuid,nodev,noexec,mode=0,size=4k cronos-hidden "$path"
       else
         "$mount" --bind /dev/null "$path"
       fi || fail "cannot hide $path" ;;
  esac
done
shift
# The working directory was entered before these mounts: enter it again, through them.
cd "$(pwd -P)" || fail "cannot enter the working directory again"
exec 3>&2 2>/dev/null
( exec "$@" 2>&3 3>&- )
status=$?
count() {
  left=0
  for p in /proc/[0-9]*; do
    [ "$p" = /proc/1 ] && continue
    { read -r stat < "$p/stat"; } 2>/dev/null || continue
    case "$stat" in *") Z "*) continue ;; esac
    left=$((left + 1))
  done
}
count
if [ "$left" -gt 0 ]; then
  stopped=$left
  kill -TERM -1 2>/dev/null
  waited=0
  while [ "$waited" -lt "$grace" ]; do
    count
    [ "$left" -eq 0 ] && break
    "$sleep" 0.1
    waited=$((waited + 1))
  done
  echo "[cronos] stopped $stopped process(es) the agent left running"
fi
exit "$status"
"""
# Where the tools the launcher runs are looked for: the system's own directories, never a PATH
# (the agent's is its author's choice, and Cronos's may hold directories an agent can write).
SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"

PR_SET_DUMPABLE = 4


class IsolationError(Exception):
    """Agents cannot be isolated as configured; the message says why and what to do."""


@dataclass(frozen=True)
class AgentUser:
    """The separate account agents run as (CRONOS_AGENT_USER)."""

    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class Isolation:
    """How agents are kept out of Cronos on this host, as the settings and the host allow.

    `problem` is "" when agents may run; otherwise the reason they are refused.
    """

    namespaces: bool
    agent_user: AgentUser | None
    unisolated_allowed: bool
    problem: str = ""
    namespaces_problem: str = ""  # why namespaces are not used, when they are not

    @property
    def isolated(self) -> bool:
        return self.namespaces or self.agent_user is not None

    @property
    def can_run(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        """One sentence for the start-up log and the pages: which isolation is active."""
        if self.problem:
            return f"agents are refused: {self.problem}"
        parts = []
        if self.namespaces:
            parts.append("user, mount and pid namespaces hide Cronos's data folder")
        if self.agent_user is not None:
            parts.append(f"agents run as the separate user {self.agent_user.name}")
        if parts:
            return "agents run isolated: " + "; ".join(parts)
        why = f" ({self.namespaces_problem})" if self.namespaces_problem else ""
        return (
            "agents run UNISOLATED (CRONOS_ALLOW_UNISOLATED=true): an agent can read Cronos's "
            f"database, keys and data folder{why}"
        )

    def wrap(
        self, argv: list[str], writable: Iterable[str] = (), network_none: bool = False
    ) -> list[str]:
        """The command line that starts `argv` isolated as configured (argv itself when not);
        `writable`: the paths the agent may write besides the temporary ones and HOME (its
        working directory and run folder); `network_none`: in a network namespace of its own
        (the guardrail `network: none`, see the module's docstring).

        Raises IsolationError when agents may not run here (see `problem`), or when
        `network_none` cannot be given with this isolation (unisolated).
        """
        if self.problem:
            raise IsolationError(self.problem)
        command = list(argv)
        if self.namespaces:
            command = _namespaced(command, self._inner_ids(), writable, network_none)
        elif network_none:
            if self.agent_user is None:
                raise IsolationError(
                    "network: none needs the namespaces isolation or a separate agent user "
                    "(CRONOS_AGENT_USER); agents run unisolated here"
                )
            # Root's own network namespace (no user namespace needed), then the agent's user.
            command = [*_without_network(), *_as_user(self.agent_user), *command]
            return command
        if self.agent_user is not None:
            command = [*_as_user(self.agent_user), *command]
        return command

    def _inner_ids(self) -> tuple[int, int]:
        if self.agent_user is not None:
            return self.agent_user.uid, self.agent_user.gid
        return os.getuid(), os.getgid()

    def status_from_init(self) -> bool:
        """Whether the leader's status is the init's (a signal reported as 128 + N)."""
        return self.namespaces


# No isolation at all: for callers that have decided so themselves (the containment tests of
# the subreaper path); the site's choice is `current()`.
NONE = Isolation(namespaces=False, agent_user=None, unisolated_allowed=True)


def _namespaced(
    argv: list[str],
    ids: tuple[int, int],
    writable: Iterable[str] = (),
    network_none: bool = False,
) -> list[str]:
    uid, gid = ids
    # The agent keeps its own user id inside (tools such as git compare it with the owner of
    # the files); as root it must also lose the capabilities root has in its namespace.
    drop = ["--no-new-privs"]
    if uid == 0:
        drop += ["--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]
    unshare, setpriv, mount, sleep = (
        tool(name) for name in ("unshare", "setpriv", "mount", "sleep")
    )
    # `--net` with the others: the network namespace is owned by the outer user namespace,
    # where the init is root and may bring its loopback up (CAP_NET_ADMIN there only).
    net = ["--net"] if network_none else []
    ip = (loopback_tool() or "") if network_none else ""
    return [
        *(unshare, "--user", "--map-root-user", "--mount", "--pid", *net, "--fork"),
        *("--mount-proc", "--kill-child", "--"),
        *("/bin/sh", "-c", INIT_SCRIPT, "cronos-init", _grace_tenths(), mount, sleep, ip),
        *mount_plan(writable),
        "--",
        *(unshare, "--user", f"--map-user={uid}", f"--map-group={gid}", "--"),
        *(setpriv, *drop, "--"),
        *argv,
    ]


# Without namespaces (a separate agent user, Cronos being root): a network namespace of root's
# own, its loopback up, then the agent's user (setpriv). Arguments: `ip`'s path or "", then the
# command.
NETWORK_SCRIPT = """\
ip=$1; shift
[ -z "$ip" ] || "$ip" link set lo up 2>/dev/null
exec "$@"
"""


def _without_network() -> list[str]:
    return [
        *(tool("unshare"), "--net", "--"),
        *("/bin/sh", "-c", NETWORK_SCRIPT, "cronos-net", loopback_tool() or ""),
    ]


def loopback_tool() -> str | None:
    """The absolute path of iproute2's `ip` (SYSTEM_PATH), which brings a new network
    namespace's loopback up; None when it is not installed (the loopback then stays down)."""
    return shutil.which("ip", path=SYSTEM_PATH)


def tool(name: str) -> str:
    """The absolute path of a system program the launcher runs (SYSTEM_PATH). Raises
    IsolationError when it is not installed."""
    found = shutil.which(name, path=SYSTEM_PATH)
    if found is None:
        raise IsolationError(f"the {name} program (util-linux) is not installed")
    return found


def protected_paths() -> list[str]:
    """What an agent must not change because Cronos runs it: its installation, its Python
    (the virtualenv and the interpreter's own prefix), and the directories of its PATH."""
    places = [str(settings.BASE_DIR), sys.prefix, sys.base_prefix, sys.exec_prefix]
    places += [p for p in os.environ.get("PATH", "").split(os.pathsep) if p.startswith("/")]
    return _unique(os.path.realpath(p) for p in places)


# What of HOME an agent may write: the claude CLI's state and the caches tools keep. Not the
# rest: HOME may hold what Cronos runs (a pyenv, ~/.local/bin on its PATH, shell profiles).
HOME_WRITABLE = (".claude", ".claude.json", ".cache", ".npm", ".local/share", ".local/state")


def writable_paths(extra: Iterable[str] = ()) -> list[str]:
    """Where an agent may write: its working directory and run folder (`extra`), the
    temporary directories, and the parts of its HOME its tools keep state in (HOME_WRITABLE,
    those that exist)."""
    home = os.environ.get("HOME", "")
    places = [*extra, "/tmp", "/var/tmp", "/dev/shm"]
    if home.startswith("/") and os.path.realpath(home) != "/":
        places += [os.path.join(home, name) for name in HOME_WRITABLE]
    return _unique(os.path.realpath(p) for p in places)


def mount_plan(writable: Iterable[str] = ()) -> list[str]:
    """The init's (mode, path) arguments: W writable, R read-only, H hidden, shallowest first
    so that a deeper rule wins inside a shallower one (HOME writable, the Python inside it
    read-only; the data folder hidden wherever it is). Everything starts read-only, so a rule
    that would not change what its surroundings already are is left out: each mount costs a
    process at every start."""
    rules = [("W", p) for p in writable_paths(writable)]
    rules += [("R", p) for p in protected_paths()]
    rules += [("H", p) for p in hidden_paths()]
    order = {"W": 0, "R": 1, "H": 2}
    rules.sort(key=lambda rule: (rule[1].rstrip("/").count("/"), order[rule[0]]))
    plan: list[tuple[str, str]] = []
    for mode, path in rules:
        if path.startswith(("/dev/", "/proc/", "/sys/")) and mode != "H":
            continue  # never made read-only
        around = [m for m, p in plan if Path(p) in Path(path).parents]
        inside = around[-1] if around else "R"  # the deepest rule around it, else read-only
        if mode == "H" or mode != inside:
            plan.append((mode, path))
    return [part for rule in plan for part in rule]


def unwritable_for(path: str) -> str:
    """The protected place (protected_paths) that contains `path`, unless `path` is in
    CRONOS_WORK_DIR (the agents' own, even inside the installation); "" when none does."""
    resolved = Path(os.path.realpath(path))
    work = Path(os.path.realpath(settings.CRONOS_WORK_DIR))
    if resolved == work or work in resolved.parents:
        return ""
    for place in protected_paths():
        if resolved == Path(place) or Path(place) in resolved.parents:
            return place
    return ""


def _unique(paths: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen


def _grace_tenths() -> str:
    return str(max(1, round(float(settings.CRONOS_KILL_GRACE_SECONDS) * 10)))


def _as_user(user: AgentUser) -> list[str]:
    return [
        tool("setpriv"),
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--init-groups",
        "--no-new-privs",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--",
    ]


def hidden_paths() -> list[str]:
    """Cronos's own places an agent must not see: the data and log folders, and a SQLite
    database or key file kept outside them. Absolute, resolved, without repeats."""
    places = [Path(settings.DATA_DIR), Path(settings.CRONOS_LOG_DIR)]
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        places.append(Path(str(database["NAME"])))
    for name in ("SECRET_KEY_FILE", "CRONOS_SECRET_KEYS_FILE"):
        value = (os.environ.get(name) or "").strip()
        if value:
            places.append(Path(value))
    paths: list[str] = []
    for place in places:
        resolved = place.resolve()
        if any(resolved == Path(p) or Path(p) in resolved.parents for p in paths):
            continue  # already hidden with a folder above it
        paths.append(str(resolved))
    return paths


def hiding(path: str) -> str:
    """The hidden place (hidden_paths) that contains `path` once symlinks are resolved, or ""."""
    resolved = Path(os.path.realpath(path))
    for place in hidden_paths():
        if resolved == Path(place) or Path(place) in resolved.parents:
            return place
    return ""


def agent_environment(
    variables: Mapping[str, str],
    builtins: Mapping[str, str],
    agent_user: AgentUser | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The agent's whole environment: PATH, HOME, LANG and TERM from Cronos's own (`base`,
    os.environ by default), then the agent's variables, then the run's built-ins (which an
    agent's variable cannot fake). Nothing else of Cronos's environment: no settings, no
    database or broker URL, no key. A separate agent user gets its own HOME."""
    base = os.environ if base is None else base
    env = {name: base[name] for name in INHERITED_VARIABLES if base.get(name)}
    if agent_user is not None:
        env["HOME"] = agent_user.home
    env.update(variables)
    env.update(builtins)
    return env


def run_dir(run_id: int, agent_user: AgentUser | None = None) -> Path:
    """The run's own folder under CRONOS_WORK_DIR (CRONOS_RUN_DIR), made private to the agent's
    user. Raises OSError when it cannot be made."""
    path = Path(settings.CRONOS_WORK_DIR) / "runs" / str(run_id)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if agent_user is not None:
        os.chown(path, agent_user.uid, agent_user.gid)
    return path


def remove_run_dir_if_empty(path: Path) -> None:
    """A run that left nothing in its folder leaves no folder behind."""
    with contextlib.suppress(OSError):
        path.rmdir()


# --- What the host allows -------------------------------------------------------------------

_current: tuple[tuple, Isolation] | None = None
_current_lock = threading.Lock()


def current() -> Isolation:
    """The isolation agents get here, from the settings and one probe of the host (cached per
    process and per settings, so a test that changes the settings gets a fresh answer)."""
    global _current
    key = (
        settings.CRONOS_AGENT_NAMESPACES,
        settings.CRONOS_AGENT_USER,
        settings.CRONOS_ALLOW_UNISOLATED,
        str(settings.DATA_DIR),
        str(settings.CRONOS_LOG_DIR),
    )
    with _current_lock:
        if _current is None or _current[0] != key:
            _current = (key, _decide())
            log.info("agent isolation: %s", _current[1].describe())
        return _current[1]


def forget() -> None:
    """Decide again at the next `current()` (the host changed: tests that fake a host)."""
    global _current
    with _current_lock:
        _current = None


def _decide() -> Isolation:
    allowed = settings.CRONOS_ALLOW_UNISOLATED
    user: AgentUser | None = None
    if settings.CRONOS_AGENT_USER:
        try:
            user = agent_user(settings.CRONOS_AGENT_USER)
        except IsolationError as exc:
            return Isolation(False, None, allowed, problem=str(exc))
    namespaces_problem = ""
    namespaces = False
    if settings.CRONOS_AGENT_NAMESPACES:
        namespaces_problem = probe_namespaces(user)
        namespaces = not namespaces_problem
    else:
        namespaces_problem = "CRONOS_AGENT_NAMESPACES is false"
    problem = ""
    if not namespaces and user is None and not allowed:
        problem = (
            f"no isolation from Cronos is available ({namespaces_problem}); allow unprivileged "
            "user namespaces (sysctl kernel.unprivileged_userns_clone=1, or "
            "user.max_user_namespaces > 0), or set CRONOS_AGENT_USER to a separate account "
            "(Cronos running as root), or set CRONOS_ALLOW_UNISOLATED=true to run agents "
            "unisolated"
        )
    return Isolation(namespaces, user, allowed, problem, namespaces_problem)


def agent_user(name: str) -> AgentUser:
    """The account named by CRONOS_AGENT_USER. Raises IsolationError when it does not exist,
    is root, or Cronos cannot switch to it (Cronos is not root)."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise IsolationError(
            f"CRONOS_AGENT_USER names {name!r}, which is not a user here"
        ) from None
    if entry.pw_uid == 0:
        raise IsolationError("CRONOS_AGENT_USER must not be root: agents would be Cronos's equal")
    if entry.pw_uid == os.getuid():
        raise IsolationError(
            f"CRONOS_AGENT_USER is {entry.pw_name}, the user Cronos runs as: choose another one"
        )
    if os.geteuid() != 0:
        raise IsolationError(
            "CRONOS_AGENT_USER needs Cronos to run as root, to start agents as another user"
        )
    return AgentUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir or "/")


def probe_namespaces(user: AgentUser | None = None) -> str:
    """Start `true` exactly as an agent would be started, hiding a scratch folder; "" when it
    works, else what failed (the tool's own message)."""
    for name in ("unshare", "setpriv", "mount", "sleep"):
        if shutil.which(name, path=SYSTEM_PATH) is None:
            return f"the {name} program (util-linux) is not installed"
    with tempfile.TemporaryDirectory(prefix="cronos-probe-") as scratch:
        secret = Path(scratch) / "hidden"
        secret.mkdir()
        (secret / "key").write_text("probe\n")
        ids = (user.uid, user.gid) if user else (os.getuid(), os.getgid())
        argv = _namespaced(["/bin/sh", "-c", f"! cat {secret}/key 2>/dev/null"], ids)
        # The probe hides its scratch folder instead of the data folder: splice it in.
        start = argv.index("cronos-init") + 5  # after the grace and the tools
        end = argv.index("--", start)
        argv[start:end] = ["H", str(secret)]
        if user is not None:
            argv = [*_as_user(user), *argv]
            os.chmod(scratch, 0o755)
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                timeout=PROBE_SECONDS,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                cwd="/",
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"user namespaces could not be tried: {exc}"
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        detail = said[-1] if said else f"exit status {result.returncode}"
        return f"user namespaces are not available here: {detail}"
    return ""


# --- Cronos's own processes and files -------------------------------------------------------


def protect_this_process() -> None:
    """Make this Cronos process not dumpable, so that no process of another user, nor one in
    a namespace of its own, can read its memory, environment (`/proc/<pid>/environ`), open
    files or root (prctl(2) PR_SET_DUMPABLE). Linux only; elsewhere a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def make_private(paths: Iterable[Path]) -> None:
    """Files of Cronos's own (the database and its journals, key files) readable by Cronos
    only (0600); a path that does not exist or is not Cronos's is left alone."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_mode & 0o077:
                path.chmod(0o600)


def private_files() -> list[Path]:
    """Cronos's own files that must be 0600: a SQLite database and its journals, the generated
    keys (settings.kept_secret makes them 0600; an older copy may not be)."""
    files = [Path(settings.DATA_DIR) / "secret_key", Path(settings.DATA_DIR) / "secret_keys"]
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        name = Path(str(database["NAME"]))
        files += [name, Path(f"{name}-wal"), Path(f"{name}-shm"), Path(f"{name}-journal")]
    return files


def exit_signal(status: int | None) -> int | None:
    """A returncode as Popen gives it, with an init's 128 + N read back as signal N (-N)."""
    if status is not None and SIGNAL_BASE < status < SIGNAL_BASE + signal.NSIG:
        return -(status - SIGNAL_BASE)
    return status
