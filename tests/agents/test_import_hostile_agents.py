"""A hostile agents/ folder: nothing outside the import folder is read, nothing but a regular file
is opened, and the agent it concerns is refused by name while the others are imported."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from agents.legacy import LegacyError, Status, import_directory
from agents.models import Agent
from audit.actor import Actor
from audit.models import AuditEntry

pytestmark = pytest.mark.django_db

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-cronos"
FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "bin" / "claude"
SECRET = "the contents of a file outside the import folder"


@pytest.fixture(autouse=True)
def this_host(monkeypatch, settings, tmp_path) -> Path:
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    return home


@pytest.fixture
def actor(django_user_model) -> Actor:
    django_user_model.objects.create_superuser("ana", "ana@example.com", "pw")
    return Actor.cli("ana")


@pytest.fixture
def outside(tmp_path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.md").write_text(SECRET)
    shutil.copytree(LEGACY / "agents/cron-git", folder / "cron-git")
    return folder


@pytest.fixture
def source(tmp_path) -> Path:
    copy = tmp_path / "source"
    shutil.copytree(LEGACY, copy, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(copy):
        os.chmod(folder, 0o755)
    return copy


@contextlib.contextmanager
def deadline(seconds: int = 10) -> Iterator[None]:
    def expired(signum, frame):
        raise TimeoutError(f"the import blocked for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def replace(path: Path) -> Path:
    path.unlink()
    return path


def import_refusing_cron_git(actor: Actor, source: Path, expected: str) -> None:
    with deadline():
        report = import_directory(source, actor)
    assert [(r.name, r.status) for r in report.agents] == [
        ("cron-git", Status.FAILED),
        ("weekly-report", Status.CREATED),
    ]
    problems = report.agents[0].problems
    assert any(expected in problem for problem in problems), problems
    assert list(Agent.objects.values_list("name", flat=True)) == ["weekly-report"]
    assert not AuditEntry.objects.filter(object_name="cron-git").exists()
    assert not Agent.objects.filter(prompt__contains=SECRET).exists()


def test_a_prompt_that_is_a_symlink_out_of_the_folder_is_refused(actor, source, outside):
    prompt = replace(source / "agents/cron-git/CLAUDE.md")
    prompt.symlink_to(outside / "secret.md")
    import_refusing_cron_git(
        actor, source, f"{prompt}: the file is outside the import folder (it leads to "
    )


def test_an_agent_yaml_that_is_a_symlink_out_of_the_folder_is_refused(actor, source, outside):
    (replace(source / "agents/cron-git/agent.yaml")).symlink_to(outside / "cron-git/agent.yaml")
    import_refusing_cron_git(actor, source, "agent.yaml: the file is outside the import folder")


def test_a_prompt_that_is_a_symlink_to_a_device_is_refused(actor, source):
    (replace(source / "agents/cron-git/CLAUDE.md")).symlink_to("/dev/zero")
    import_refusing_cron_git(actor, source, "CLAUDE.md: the file is outside the import folder")


def test_a_prompt_that_is_a_fifo_is_refused_without_opening_it(actor, source):
    os.mkfifo(replace(source / "agents/cron-git/CLAUDE.md"))
    import_refusing_cron_git(
        actor, source, "CLAUDE.md: the file is not a regular file: it is a named pipe (FIFO)"
    )


def test_an_agent_yaml_that_is_a_fifo_is_refused_without_opening_it(actor, source):
    os.mkfifo(replace(source / "agents/cron-git/agent.yaml"))
    import_refusing_cron_git(actor, source, "agent.yaml: the file is not a regular file")


def test_an_enormous_prompt_is_refused_without_reading_it(actor, source):
    with open(source / "agents/cron-git/CLAUDE.md", "wb") as huge:
        huge.truncate(200 * 1024 * 1024)
    import_refusing_cron_git(actor, source, "is larger than the 8.0 MB an import reads")


def test_an_agent_folder_that_is_a_symlink_out_of_the_folder_is_refused(actor, source, outside):
    shutil.rmtree(source / "agents/cron-git")
    (source / "agents/cron-git").symlink_to(outside / "cron-git")
    import_refusing_cron_git(
        actor, source, f"{source / 'agents/cron-git'}: the folder is outside the import folder"
    )


def test_an_agents_folder_that_is_a_symlink_out_of_the_folder_is_refused(actor, source, outside):
    shutil.move(source / "agents", outside / "agents")
    (source / "agents").symlink_to(outside / "agents")
    with pytest.raises(LegacyError, match="the agents/ folder is outside the import folder"):
        import_directory(source, actor)
    assert not Agent.objects.exists()


def test_symlinks_that_stay_inside_the_folder_are_followed(actor, source):
    prompt = replace(source / "agents/cron-git/CLAUDE.md")
    prompt.symlink_to("../weekly-report/CLAUDE.md")
    report = import_directory(source, actor)
    assert [r.status for r in report.agents] == [Status.CREATED, Status.CREATED]
    expected = (source / "agents/weekly-report/CLAUDE.md").read_text()
    assert Agent.objects.get(name="cron-git").prompt == expected


def test_cronos_import_names_the_file_and_imports_the_rest(actor, source, outside):
    (replace(source / "agents/cron-git/CLAUDE.md")).symlink_to(outside / "secret.md")
    out = StringIO()
    with deadline(), pytest.raises(CommandError, match=r"1 agent\(s\) failed \(cron-git\)"):
        call_command("cronos_import", str(source), "--user", "ana", stdout=out)
    text = out.getvalue()
    assert "CLAUDE.md: the file is outside the import folder" in text
    # The runs of the refused agent say why they are not imported.
    assert "its folder agents/cron-git was not imported" in text
    assert SECRET not in text
