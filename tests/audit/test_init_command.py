from __future__ import annotations

import subprocess

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import Agent
from audit.models import AuditEntry
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.CRONOS_WORK_DIR = tmp_path / "work"


def test_first_run_creates_an_admin_with_a_generated_password_shown_once(capsys, monkeypatch):
    monkeypatch.delenv("CRONOS_ADMIN_PASSWORD", raising=False)
    call_command("cronos_init")
    out = capsys.readouterr().out
    password = out.split("password: ")[1].split()[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.check_password(password)
    assert admin.groups.filter(name="admin").exists()
    call_command("cronos_init")
    assert "password" not in capsys.readouterr().out
    assert get_user_model().objects.count() == 1


def test_admin_credentials_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CRONOS_ADMIN_USERNAME", "root-of-trust")
    monkeypatch.setenv("CRONOS_ADMIN_PASSWORD", "a-long-pass-phrase")
    call_command("cronos_init", "--no-demo")
    assert (
        get_user_model().objects.get(username="root-of-trust").check_password("a-long-pass-phrase")
    )
    assert not Agent.objects.exists()


def test_demo_agents_are_created_once_with_a_real_git_repository(tmp_path):
    call_command("cronos_init")
    call_command("cronos_init")
    assert set(Agent.objects.values_list("name", flat=True)) == {
        "cron-git",
        "disk-report",
        "cron-git-claude",
    }
    cron_git = Agent.objects.get(name="cron-git")
    # The agents' own folder, never Cronos's data folder (which agents cannot see).
    assert cron_git.working_dir == str(tmp_path / "work" / "demo-repository")
    status = subprocess.run(
        ["git", "status", "--porcelain"],
        cwd=cron_git.working_dir,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "notes.md" in status.stdout  # something for cron-git to commit
    assert AuditEntry.objects.filter(action="agent.create").count() == 3


def test_the_demo_cron_git_command_commits_pending_changes(tmp_path):
    call_command("cronos_init", "--no-demo")
    from cronos_site.demo import CRON_GIT_COMMAND, demo_repository

    repo = demo_repository()
    first = subprocess.run(
        ["sh", "-c", CRON_GIT_COMMAND], cwd=repo, capture_output=True, text=True, check=True
    )
    assert "cron-git: commit pending changes" in first.stdout
    second = subprocess.run(
        ["sh", "-c", CRON_GIT_COMMAND], cwd=repo, capture_output=True, text=True, check=True
    )
    assert second.stdout.strip() == "no changes"


def test_an_admin_password_from_the_environment_keeps_the_site_rules(monkeypatch):
    monkeypatch.setenv("CRONOS_ADMIN_PASSWORD", "1")
    with pytest.raises(CommandError, match="CRONOS_ADMIN_PASSWORD was refused: .*too short"):
        call_command("cronos_init", "--no-demo")
    assert not get_user_model().objects.exists()


def test_an_admin_username_the_admin_would_refuse_is_named(monkeypatch):
    monkeypatch.setenv("CRONOS_ADMIN_USERNAME", "bad name!")
    with pytest.raises(CommandError, match="CRONOS_ADMIN_USERNAME 'bad name!': Enter a valid"):
        call_command("cronos_init", "--no-demo")
    assert not get_user_model().objects.exists()


def test_a_demo_repository_left_in_the_data_folder_moves_and_its_agents_follow(tmp_path):
    from cronos_site.demo import demo_agents

    old = tmp_path / "data" / "demo-repo"
    (old / "sub").mkdir(parents=True)
    (old / "notes.md").write_text("kept\n")
    # As an earlier version left them: validation then allowed this one folder of data/.
    for agent in demo_agents(old)[:2]:
        agent.save()
    Agent.objects.filter(name="disk-report").update(working_dir=str(old / "sub"))
    other = make_agent("elsewhere", working_dir=str(tmp_path))
    Agent.objects.filter(pk=other.pk).update(working_dir=f"{old}-other")

    call_command("cronos_init", "--no-demo")

    new = tmp_path / "work" / "demo-repository"
    assert (new / "notes.md").read_text() == "kept\n"
    assert not old.exists()
    assert Agent.objects.get(name="cron-git").working_dir == str(new)
    assert Agent.objects.get(name="disk-report").working_dir == str(new / "sub")
    assert Agent.objects.get(name="elsewhere").working_dir == f"{old}-other"  # not the demo's
    moved = AuditEntry.objects.filter(action="agent.update", object_name="cron-git")
    assert moved.exists()
