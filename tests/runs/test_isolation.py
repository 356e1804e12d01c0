"""Agents stay out of Cronos (DESIGN.md §4 "One launcher, and isolation from Cronos").

Real agents, started by the real executor, try every way in that a hostile agent's author
would: Cronos's key files, its database, its data and log folders, the worker's environment
and root through /proc, undoing the mount that hides the data, and the exploit issue 12
reported: `manage.py shell` run as Cronos, from Cronos's folder with Cronos's interpreter,
printing `SECRET_KEY`. Each attack is first shown to work without isolation (the control), so
the test can fail. Cronos also states at start-up which isolation is active.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pwd
import stat
import subprocess
import sys
import tempfile
from io import StringIO
from pathlib import Path

import psutil
import pytest
from django.apps import apps
from django.core import checks
from django.core.management import call_command
from django.db import connection

from agents import secrets
from agents.models import Agent
from runs import checks as runs_checks
from runs.execution import isolation
from runs.execution.executor import execute
from runs.execution.output import OutputSink
from runs.models import Run, RunChunk
from tests.factories import make_agent
from tests.processes import ENGINE, wait_for, workers

pytestmark = pytest.mark.django_db(transaction=True)

# The attacker: tries each path it is given, every process it can see, undoing the mount, and
# Cronos's own `manage.py shell` (from Cronos's folder, with Cronos's interpreter, pointed at
# Cronos's data folder); prints one JSON object of everything it managed to read.
ATTACK = r"""
import json, os, subprocess, sys
paths, data, base, python = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
got = {}
def read(label, path):
    try:
        if os.path.isdir(path):
            got[label] = "dir:" + ",".join(sorted(os.listdir(path)))
        else:
            with open(path, "rb") as handle:
                got[label] = handle.read(4096).decode("latin-1")
    except OSError as exc:
        pass
for path in paths:
    read(path, path)
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        read(f"/proc/{pid}/environ", f"/proc/{pid}/environ")
        read(f"/proc/{pid}/root{data}", f"/proc/{pid}/root{data}")
        read(f"/proc/{pid}/root{data}/secret_key", f"/proc/{pid}/root{data}/secret_key")
for argv in (["umount", "-l", data], ["unshare", "-Urm", "sh", "-c", f"umount -l {data}; cat {data}/secret_key"]):
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10)
        got[" ".join(argv[:2])] = done.stdout.decode("latin-1")
    except (OSError, subprocess.SubprocessError):
        pass
read("after umount", f"{data}/secret_key")
shell = "from django.conf import settings; print(settings.SECRET_KEY)"
try:
    done = subprocess.run(
        [python, "manage.py", "shell", "-c", shell],
        cwd=base,
        env={**os.environ, "CRONOS_DATA_DIR": data},
        capture_output=True,
        timeout=120,
    )
    got["manage.py shell"] = done.stdout.decode("latin-1")
    got["manage.py shell status"] = done.returncode
    got["manage.py shell stderr"] = done.stderr.decode("latin-1")[-1000:]
except (OSError, subprocess.SubprocessError) as exc:
    got["manage.py shell failed to start"] = repr(exc)
got["env"] = dict(os.environ)
print(json.dumps(got))
"""


@pytest.fixture
def namespaces():
    """Skip (or fail in CI) where the host offers no user namespaces, saying what to enable."""
    problem = isolation.probe_namespaces()
    if problem:
        message = (
            f"agent isolation needs user namespaces: {problem} "
            "(enable them: sysctl user.max_user_namespaces=15000)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def short_grace(settings):
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    isolation.forget()  # a test below fakes a host without util-linux
    yield
    isolation.forget()


def new_run(agent: Agent) -> Run:
    return Run.objects.create(
        agent=agent, agent_version=agent.history.latest(), trigger=Run.Trigger.MANUAL
    )


def command_agent(name: str, command: str, working_dir: Path, **fields) -> Agent:
    return make_agent(
        name, runner=Agent.Runner.COMMAND, command=command, working_dir=str(working_dir), **fields
    )


def output(run: Run) -> str:
    return "".join(RunChunk.objects.filter(run=run).order_by("seq").values_list("text", flat=True))


def cronos_secrets(settings) -> list[str]:
    """What an agent must never get hold of: Django's key, the Fernet keys, the database."""
    return [settings.SECRET_KEY, *settings.CRONOS_SECRET_KEYS]


def attack(tmp_path, settings) -> tuple[Run, dict]:
    (tmp_path / "attack.py").write_text(ATTACK)
    data = str(settings.DATA_DIR)
    database = str(connection.settings_dict["NAME"])
    worker = os.getpid()
    paths = [
        f"{data}/secret_key",
        f"{data}/secret_keys",
        data,
        str(settings.CRONOS_LOG_DIR),
        database,
        f"/proc/{worker}/environ",
        f"/proc/{worker}/root{data}/secret_key",
        "/proc/1/environ",
        f"/proc/1/root{data}/secret_key",
    ]
    agent = command_agent(
        "attacker",
        # The interpreter Cronos runs on, and Cronos's own folder (where manage.py is).
        f"{sys.executable} attack.py '{json.dumps(paths)}' {data} {settings.BASE_DIR} "
        f"{sys.executable}",
        tmp_path,
        variables=[secrets.secret("OWN_TOKEN", "the-agent-s-own-token")],
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED, (run.reason, output(run))
    return run, json.loads(output(run).replace("\u2022" * 8, "MASKED"))


def test_without_isolation_the_attack_would_read_cronos_keys(tmp_path, settings, unisolated):
    # The control: the same attacker, unisolated, gets the keys (so the next test can fail).
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    _run, got = attack(tmp_path, settings)
    everything = json.dumps(got)
    assert any(secret in everything for secret in cronos_secrets(settings))
    # The exploit of issue 12 itself: Cronos's shell, run by the agent, prints Django's key.
    assert got["manage.py shell status"] == 0, got["manage.py shell stderr"]
    assert settings.SECRET_KEY in got["manage.py shell"].splitlines()


def test_an_agent_reads_none_of_cronos_keys_database_data_logs_or_processes(
    tmp_path, settings, namespaces
):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_LOG_DIR.mkdir()
    (settings.CRONOS_LOG_DIR / "old-run.log").write_text("another run's output\n")
    run, got = attack(tmp_path, settings)

    everything = json.dumps(got)
    for secret in cronos_secrets(settings):
        assert secret not in everything
    assert "SQLite format 3" not in everything
    assert "another run's output" not in everything
    data, logs = str(settings.DATA_DIR), str(settings.CRONOS_LOG_DIR)
    # The folders are there (nothing breaks for a program that stats them) but empty.
    assert got.get(data, "dir:") == "dir:"
    assert got.get(logs, "dir:") == "dir:"
    # No other process is visible: no worker, no web server, no shell of the user.
    assert not [label for label in got if label.startswith(f"/proc/{os.getpid()}/")]
    visible = {label.split("/")[2] for label in got if label.startswith("/proc/")}
    assert len(visible) <= 6  # the run's own few: the init, the shell, the attacker's children
    assert "after umount" not in got
    # Cronos's shell was started (Cronos's folder and interpreter are visible, read-only) but
    # cannot load Cronos's settings: the data folder, and so the key, is not there.
    assert "manage.py shell failed to start" not in got
    assert got["manage.py shell status"] != 0
    assert settings.SECRET_KEY not in got["manage.py shell"]
    assert settings.SECRET_KEY not in got["manage.py shell stderr"]
    assert "secret_key" in got["manage.py shell stderr"]  # it failed at the hidden key
    # The environment is the allow-list: no settings, no URL, no key of Cronos's.
    env = got["env"]
    assert env["OWN_TOKEN"] == "MASKED"  # the agent's own secret reached it (masked in output)
    assert env["CRONOS_RUN_DIR"] == str(settings.CRONOS_WORK_DIR / "runs" / str(run.pk))
    for name in env:
        assert not name.startswith(("DJANGO", "DATABASE", "REDIS", "SECRET", "CRONOS_SECRET"))
    assert "CRONOS_DATA_DIR" not in env and "CRONOS_WORK_DIR" not in env


def test_the_agent_keeps_its_own_user_id_and_has_no_capability(tmp_path, namespaces):
    agent = command_agent(
        "whoami", "id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status", tmp_path
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    lines = output(run).splitlines()
    assert lines[0] == str(os.getuid())
    assert lines[1:] == [f"{name}:\t0000000000000000" for name in ("CapPrm", "CapEff", "CapBnd")]


def test_what_an_agent_leaves_running_in_its_namespace_is_ended_and_noted(tmp_path, namespaces):
    agent = command_agent(
        "leaves-daemons",
        "readlink /proc/self/ns/pid > ns; (setsid sleep 60 &); sleep 60 & echo done",
        tmp_path,
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert "[cronos] stopped 2 process(es) the agent left running" in output(run)
    assert not processes_in(namespace=(tmp_path / "ns").read_text().strip())


def test_a_timeout_ends_everything_in_the_namespace_even_what_ignores_term(tmp_path, namespaces):
    agent = command_agent(
        "stubborn",
        "readlink /proc/self/ns/pid > ns; (trap '' TERM; setsid sleep 60 &); trap '' TERM; "
        "echo ready; sleep 60",
        tmp_path,
        timeout_seconds=1,
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.TIMED_OUT
    assert run.reason.startswith("timed out after 1 s; ")
    assert "ignored SIGTERM and were killed after 1 s" in run.reason
    # No "Terminated" or other word of the launcher's own, only what the agent printed and the
    # note of what was killed.
    assert output(run).startswith("ready\n[cronos] ")
    assert "Terminated" not in output(run)
    assert not processes_in(namespace=(tmp_path / "ns").read_text().strip())


def test_an_agent_killed_by_a_signal_is_reported_as_killed_by_it(tmp_path, namespaces):
    agent = command_agent("crashes", "echo before; kill -SEGV $$", tmp_path)
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.FAILED
    assert run.reason == "killed by signal SIGSEGV"
    assert run.exit_code == 139
    assert output(run) == "before\n"


def test_the_run_folder_is_the_agents_own_and_disappears_when_left_empty(tmp_path, settings):
    keep = command_agent(
        "keeps", 'stat -c %a "$CRONOS_RUN_DIR"; echo artefact > "$CRONOS_RUN_DIR/out"', tmp_path
    )
    kept = execute(new_run(keep).pk)
    assert output(kept) == "700\n"
    folder = settings.CRONOS_WORK_DIR / "runs" / str(kept.pk)
    assert (folder / "out").read_text() == "artefact\n"
    empty = execute(new_run(command_agent("leaves-nothing", "true", tmp_path)).pk)
    assert empty.state == Run.State.SUCCEEDED
    assert not (settings.CRONOS_WORK_DIR / "runs" / str(empty.pk)).exists()


def test_without_any_isolation_agents_are_refused_saying_what_to_do(tmp_path, settings):
    settings.CRONOS_AGENT_NAMESPACES = False
    settings.CRONOS_ALLOW_UNISOLATED = False
    marker = tmp_path / "ran"
    run = execute(new_run(command_agent("refused", f"touch {marker}", tmp_path)).pk)
    assert run.state == Run.State.FAILED
    assert run.reason.startswith("no isolation from Cronos is available")
    assert "CRONOS_ALLOW_UNISOLATED=true" in run.reason
    assert "CRONOS_AGENT_USER" in run.reason
    assert run.pid is None and not marker.exists()
    [warning] = runs_checks.agent_isolation(None)
    assert warning.id == "cronos.W001" and warning.level == checks.WARNING


def test_a_host_without_util_linux_says_which_program_is_missing(tmp_path, settings, monkeypatch):
    real = isolation.shutil.which
    monkeypatch.setattr(
        isolation.shutil, "which", lambda name, *a, **k: None if name == "unshare" else real(name)
    )
    settings.CRONOS_ALLOW_UNISOLATED = False
    run = execute(new_run(command_agent("no-unshare", "true", tmp_path)).pk)
    assert run.state == Run.State.FAILED
    assert "the unshare program (util-linux) is not installed" in run.reason


def test_a_working_directory_inside_the_data_folder_is_refused_at_run_time(tmp_path, settings):
    inside = settings.DATA_DIR / f"agent-work-{os.getpid()}"
    inside.mkdir(exist_ok=True)
    try:
        agent = command_agent("stored-before-the-rule", "true", tmp_path)
        # Saved before the rule existed (validation refuses it now): a run made from the row.
        Agent.objects.filter(pk=agent.pk).update(working_dir=str(inside))
        run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
        run = execute(run.pk)
        assert run.state == Run.State.FAILED
        assert f"working directory {inside} is inside {settings.DATA_DIR}" in run.reason
        assert "hidden from agents" in run.reason
    finally:
        inside.rmdir()


def test_admins_see_a_warning_on_every_page_while_agents_run_unisolated(
    client, admin_user, viewer, unisolated
):
    client.force_login(admin_user)
    for url in ("/", "/runs/", "/admin/"):
        page = client.get(url).content.decode()
        assert "agents run UNISOLATED" in page, url
    client.force_login(viewer)
    assert "UNISOLATED" not in client.get("/").content.decode()
    [warning] = runs_checks.agent_isolation(None)
    assert warning.id == "cronos.W002"


def test_no_warning_while_agents_are_isolated(client, admin_user, namespaces):
    client.force_login(admin_user)
    assert "UNISOLATED" not in client.get("/").content.decode()
    assert "Security:" not in client.get("/admin/").content.decode()


# --- Cronos states at start-up which isolation is active --------------------------------------

# The sentences (Isolation.describe) of the start-up line "agent isolation: ..." and of
# `cronos_status --host`.
ISOLATED = "agents run isolated: user, mount and pid namespaces hide Cronos's data folder"
UNISOLATED = (
    "agents run UNISOLATED (CRONOS_ALLOW_UNISOLATED=true): an agent can read Cronos's database, "
    "keys and data folder (CRONOS_AGENT_NAMESPACES is false)"
)
REFUSED = "agents are refused: no isolation from Cronos is available"


def start_qcluster(monkeypatch) -> None:
    """What `manage.py qcluster` does as it starts: the runs app's ready() in that process."""
    monkeypatch.setattr(sys, "argv", ["manage.py", "qcluster"])
    apps.get_app_config("runs").ready()


def start_celery_worker(monkeypatch) -> None:
    """What a Celery worker does once ready: its worker_ready signal's handler."""
    from runs.engines import celery as celery_engine

    celery_engine._state_isolation(sender=None)


def isolation_lines(caplog) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "runs.execution.isolation" and r.getMessage().startswith("agent isolation:")
    ]


@pytest.mark.parametrize("start", [start_qcluster, start_celery_worker], ids=["q2", "celery"])
def test_a_worker_starting_isolated_says_so_in_one_info_line(
    caplog, monkeypatch, namespaces, start
):
    caplog.set_level(logging.INFO, logger="runs.execution.isolation")
    isolation.forget()  # a process that has not decided yet, as one that is starting
    start(monkeypatch)
    assert isolation_lines(caplog) == [(logging.INFO, f"agent isolation: {ISOLATED}")]


@pytest.mark.parametrize("start", [start_qcluster, start_celery_worker], ids=["q2", "celery"])
def test_a_worker_starting_unisolated_says_so_in_one_info_line(
    caplog, monkeypatch, unisolated, start
):
    caplog.set_level(logging.INFO, logger="runs.execution.isolation")
    isolation.forget()
    start(monkeypatch)
    assert isolation_lines(caplog) == [(logging.INFO, f"agent isolation: {UNISOLATED}")]


@pytest.mark.parametrize("start", [start_qcluster, start_celery_worker], ids=["q2", "celery"])
def test_a_worker_starting_without_any_isolation_says_agents_are_refused(
    caplog, monkeypatch, settings, start
):
    settings.CRONOS_AGENT_NAMESPACES = False
    settings.CRONOS_ALLOW_UNISOLATED = False
    caplog.set_level(logging.INFO, logger="runs.execution.isolation")
    isolation.forget()
    start(monkeypatch)
    [(level, line)] = isolation_lines(caplog)
    assert level == logging.INFO and line.startswith(f"agent isolation: {REFUSED} (")
    assert "CRONOS_ALLOW_UNISOLATED=true" in line


@pytest.mark.integration
@pytest.mark.workers
@pytest.mark.parametrize(
    "env, expected",
    [
        ({"CRONOS_AGENT_NAMESPACES": "true", "CRONOS_ALLOW_UNISOLATED": "false"}, ISOLATED),
        ({"CRONOS_AGENT_NAMESPACES": "false", "CRONOS_ALLOW_UNISOLATED": "true"}, UNISOLATED),
    ],
    ids=["isolated", "unisolated"],
)
def test_the_real_worker_process_logs_its_isolation_as_it_starts(tmp_path, request, env, expected):
    # `manage.py qcluster` (or a Celery worker, on the Celery lane: tests/processes.py), started
    # for real with the variables an operator sets; its log is read until the line appears.
    if expected == ISOLATED:
        request.getfixturevalue("namespaces")
    log = tmp_path / f"{ENGINE}-worker.log"

    def stated() -> list[str]:
        text = log.read_text(errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if "agent isolation:" in line]

    with workers(log, **env):
        [first, *_] = wait_for(stated, 60, f"the {ENGINE} worker to state its isolation")
    assert first.endswith(f" INFO runs.execution.isolation agent isolation: {expected}"), first


def test_cronos_status_host_says_which_isolation_is_active(settings, namespaces):
    def host_lines(*extra: str) -> list[str]:
        out = StringIO()
        call_command("cronos_status", "--host", *extra, stdout=out)
        return out.getvalue().splitlines()

    isolation.forget()
    assert host_lines()[0] == f"isolation: {ISOLATED}"
    assert json.loads("\n".join(host_lines("--json")))["isolation"] == ISOLATED
    settings.CRONOS_AGENT_NAMESPACES = False
    settings.CRONOS_ALLOW_UNISOLATED = True
    assert host_lines()[0] == f"isolation: {UNISOLATED}"
    assert json.loads("\n".join(host_lines("--json")))["isolation"] == UNISOLATED
    settings.CRONOS_ALLOW_UNISOLATED = False
    assert host_lines()[0].startswith(f"isolation: {REFUSED} (")


def test_cronos_processes_are_not_dumpable():
    # This test process loaded the apps as every Cronos process does (RunsConfig.ready).
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE


def test_a_separate_agent_user_runs_agents_that_cannot_read_cronos_files(settings, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("CRONOS_AGENT_USER needs Cronos to run as root")
    nobody = pwd.getpwnam("nobody")
    settings.CRONOS_AGENT_USER = "nobody"
    settings.CRONOS_AGENT_NAMESPACES = False  # the user alone, as on a host without namespaces
    work = Path(tempfile.mkdtemp(prefix="cronos-agent-user-", dir="/tmp"))
    work.chmod(0o777)
    key = settings.DATA_DIR / "secret_key"
    try:
        agent = command_agent(
            "as-nobody",
            f"id -u; cat {key} /proc/{os.getpid()}/environ || echo refused; echo $HOME",
            work,
        )
        run = execute(new_run(agent).pk)
        text = output(run)
        assert text.splitlines()[0] == str(nobody.pw_uid)
        assert "refused" in text and settings.SECRET_KEY not in text
        assert text.splitlines()[-1] == nobody.pw_dir
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def test_the_data_folder_is_private_and_so_are_its_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "cronos.sqlite3").write_bytes(b"SQLite format 3\x00")
    (data / "cronos.sqlite3").chmod(0o644)
    (data / "secret_key").write_text("old key\n")
    (data / "secret_key").chmod(0o644)
    env = {**os.environ, "CRONOS_DATA_DIR": str(data), "CRONOS_WORK_DIR": str(tmp_path / "w")}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "cronos.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "secret_key").stat().st_mode) == 0o600


def test_a_password_less_database_or_broker_is_named_in_a_warning(settings):
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    messages = runs_checks._unauthenticated_services()
    assert [m.id for m in messages] == ["cronos.W003"]
    assert "REDIS_URL" in messages[0].msg
    settings.REDIS_URL = "redis://:s3cret@127.0.0.1:6379/0"
    assert runs_checks._unauthenticated_services() == []


def processes_in(namespace: str) -> list[int]:
    """Host pids of the live processes whose pid namespace is `namespace` (pid:[inode])."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.readlink(f"/proc/{process.pid}/ns/pid") == namespace:
                if process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process.pid)
        except (OSError, psutil.Error):
            continue
    return found


def test_a_run_log_is_private_to_cronos(tmp_path, settings, monkeypatch):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    # Looked at as the run ends, before it goes (the database then holds all of the output).
    seen = []
    discard = OutputSink.discard_file

    def look_then_discard(sink: OutputSink) -> bool:
        seen.append((sink.path.read_text(), stat.S_IMODE(sink.path.stat().st_mode)))
        return discard(sink)

    monkeypatch.setattr(OutputSink, "discard_file", look_then_discard)
    execute(new_run(command_agent("private-log", "echo secret-ish output", tmp_path)).pk)
    assert seen == [("secret-ish output\n", 0o600)]


def test_a_reason_that_quotes_a_process_the_agent_named_is_masked(tmp_path, unisolated):
    # The sweep names what the agent left running; the agent chooses those names.
    (tmp_path / "tok-5ecret").symlink_to("/bin/sleep")
    agent = command_agent(
        "names-its-daemon",
        "./tok-5ecret 60 & echo done",
        tmp_path,
        variables=[secrets.secret("TOKEN", "tok-5ecret")],
    )
    run = execute(new_run(agent).pk)
    assert "the agent left running" in run.reason
    assert "tok-5ecret" not in run.reason


def test_an_agent_cannot_change_what_cronos_runs_but_writes_its_own_places(
    tmp_path, settings, namespaces
):
    # Cronos's installation, its Python, the directories of its PATH and the system: an agent
    # that could write there would have Cronos run its program later, unisolated.
    name = f"cronos-planted-{os.getpid()}"
    targets = [
        Path(settings.BASE_DIR) / name,
        Path(sys.prefix) / "bin" / name,
        Path(sys.base_prefix) / name,
        Path("/usr/local/bin") / name,
        Path("/etc") / name,
    ]
    ours = [tmp_path / "in-working-dir", Path("/tmp") / f"{name}-tmp"]
    script = "; ".join(f"touch {t} 2>/dev/null && echo WROTE {t}" for t in targets + ours)
    script += '; touch "$CRONOS_RUN_DIR/artefact" && echo WROTE run-dir'
    try:
        run = execute(new_run(command_agent("planter", script, tmp_path)).pk)
        text = output(run)
        for target in targets:
            assert f"WROTE {target}" not in text
            assert not target.exists()
        for own in ours:
            assert f"WROTE {own}" in text
        assert "WROTE run-dir" in text
    finally:
        for path in targets + ours:
            path.unlink(missing_ok=True)


def test_an_agents_path_cannot_replace_the_tools_that_isolate_it(tmp_path, settings, namespaces):
    # The agent's PATH is its author's choice: fake unshare, setpriv and mount that would run
    # it unisolated are never used; the launcher runs the system's own.
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    for tool in ("unshare", "setpriv", "mount", "sleep"):
        (fake / tool).write_text(
            '#!/bin/sh\nwhile [ "$1" != -- ]; do shift; done; shift; exec "$@"\n'
        )
        (fake / tool).chmod(0o755)
    key = settings.DATA_DIR / "secret_key"
    agent = command_agent(
        "fake-tools",
        f"cat {key} 2>&1; echo done",
        tmp_path,
        variables=[secrets.plain("PATH", f"{fake}:/usr/bin:/bin")],
    )
    run = execute(new_run(agent).pk)
    assert settings.SECRET_KEY not in output(run)
    assert "Permission denied" in output(run)


def test_a_working_directory_in_cronos_installation_is_refused_at_run_time(tmp_path, settings):
    agent = command_agent("in-the-venv", "true", tmp_path)
    inside = os.path.join(sys.prefix, "bin")
    Agent.objects.filter(pk=agent.pk).update(working_dir=inside)
    run = execute(Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL).pk)
    assert run.state == Run.State.FAILED
    assert "agents may not change (Cronos runs programs from it)" in run.reason
