"""The rules Agent.full_clean keeps on every path (forms, admin, importer): a working directory
outside Cronos, email addresses, a jitter shorter than the schedule's shortest interval."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agents import validation
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def refused(agent: Agent, field: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        agent.full_clean()
    return caught.value.message_dict[field]


def agent(**fields) -> Agent:
    values = {
        "name": "checked",
        "runner": Agent.Runner.COMMAND,
        "command": "true",
        "working_dir": "/srv/app",
        "schedule": "0 */4 * * *",
    }
    values.update(fields)
    return Agent(**values)


# --- working_dir ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("working_dir", "why"),
    [
        (".", "'.' is a relative path"),
        ("relative/dir", "'relative/dir' is a relative path"),
        ("./notes", "'./notes' is a relative path"),
        ("..", "'..' is a relative path"),
        ("C:\\Users\\someone\\notes", "'C:\\Users\\someone\\notes' is a Windows path"),
        ("notes\\daily", "'notes\\daily' is a Windows path"),
        (" /srv/app", "starts or ends with a space"),
        ("", "A working directory is required."),
        ("   ", "A working directory is required."),
    ],
)
def test_a_working_dir_that_is_not_a_full_path_is_refused_naming_it(working_dir, why):
    messages = refused(agent(working_dir=working_dir), "working_dir")
    assert any(why in message for message in messages), messages


@pytest.mark.parametrize("working_dir", ["/srv/app", "/tmp", "~", "~/notes", "/"])
def test_full_paths_and_home_paths_are_accepted(working_dir):
    assert validation.working_dir_problem(working_dir) == ""


def test_a_working_dir_inside_cronos_install_or_data_is_refused(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.DATA_DIR.mkdir()
    base = str(settings.BASE_DIR)
    cases = {
        base: "installation",
        f"{base}/agents": "installation",
        f"{base}/../{settings.BASE_DIR.name}/data": "installation",
        str(settings.DATA_DIR): "data directory",
        f"{settings.DATA_DIR}/keys/../sub": "data directory",
        f"{settings.CRONOS_LOG_DIR}/x": "log directory",
    }
    for working_dir, place in cases.items():
        [message] = refused(agent(working_dir=working_dir), "working_dir")
        assert f"inside Cronos's {place}" in message, working_dir
        assert working_dir in message
    # Next to them is not inside them.
    assert validation.working_dir_problem(f"{tmp_path}/database") == ""
    assert validation.working_dir_problem(str(tmp_path)) == ""


def test_a_symlink_into_the_data_directory_is_refused(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    (tmp_path / "innocent").symlink_to(settings.DATA_DIR)
    [message] = refused(agent(working_dir=str(tmp_path / "innocent")), "working_dir")
    assert "inside Cronos's data directory" in message


def test_a_home_path_into_the_install_is_refused(settings, monkeypatch):
    monkeypatch.setenv("HOME", str(settings.BASE_DIR))
    [message] = refused(agent(working_dir="~/runs"), "working_dir")
    assert "inside Cronos's installation" in message


def test_the_data_directory_has_no_exception_any_more_not_even_the_old_demo_repository(
    settings, tmp_path
):
    settings.DATA_DIR = tmp_path / "data"
    message = validation.working_dir_problem(str(tmp_path / "data" / "demo-repo"))
    assert "inside Cronos's data directory" in message


def test_the_agents_work_directory_is_theirs_even_inside_the_installation(settings):
    settings.CRONOS_WORK_DIR = settings.BASE_DIR / "work"
    assert validation.working_dir_problem(str(settings.BASE_DIR / "work" / "demo-repository")) == ""
    assert validation.working_dir_problem(str(settings.BASE_DIR / "work")) == ""
    # A sibling whose name only starts the same is still the installation.
    message = validation.working_dir_problem(str(settings.BASE_DIR / "work-other"))
    assert "inside Cronos's installation" in message
    # And climbing out of the work directory lands in the installation again.
    message = validation.working_dir_problem(str(settings.BASE_DIR / "work" / ".." / "runs"))
    assert "inside Cronos's installation" in message


def test_a_stored_agent_with_a_relative_working_dir_must_be_fixed_at_its_next_save():
    stored = make_agent("old", working_dir="/srv/app")
    Agent.objects.filter(pk=stored.pk).update(working_dir=".")
    stored.refresh_from_db()
    stored.description = "a change"
    with pytest.raises(ValidationError) as caught:
        save_agent(stored, Actor.system())
    assert "working_dir" in caught.value.message_dict
    assert Agent.objects.get(pk=stored.pk).description == "old agent"


# --- notify_emails --------------------------------------------------------------------------


def test_each_notify_address_is_an_email_address_and_a_bad_one_is_named():
    messages = refused(
        agent(notify_emails=["ops@example.com", "not-an-email", "a@b@c"]), "notify_emails"
    )
    assert messages == [
        "'not-an-email' is not an email address.",
        "'a@b@c' is not an email address.",
    ]
    agent(notify_emails=["ops@example.com", "Dev.Team+cron@sub.example.org"]).full_clean()


# --- jitter_seconds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "bound"),
    [
        ("* * * * *", 59),
        ("*/7 * * * *", 239),  # :56 to :00
        ("0 */4 * * *", 4 * 3600 - 1),
        ("0 9 * * 1-5", 86399),
        ("0 0 1,28 * *", 86399),  # 28 February to 1 March
        ("* * * * * *", 0),
    ],
)
def test_the_longest_jitter_is_the_shortest_interval_minus_one_second(schedule, bound):
    agent(schedule=schedule, jitter_seconds=bound).full_clean()
    [message] = refused(agent(schedule=schedule, jitter_seconds=bound + 1), "jitter_seconds")
    assert f"at most {bound} seconds" in message


def test_a_jitter_as_long_as_the_shortest_interval_is_refused_with_the_bound():
    [message] = refused(agent(schedule="0 * * * *", jitter_seconds=999999999), "jitter_seconds")
    assert message == (
        "A jitter of 999999999 seconds is too long for this schedule: its runs can be 1 hour "
        "apart, so the jitter must be at most 3599 seconds (the shortest interval minus one "
        "second)."
    )
    assert refused(agent(schedule="0 * * * *", jitter_seconds=3600), "jitter_seconds")
    agent(schedule="0 * * * *", jitter_seconds=3599).full_clean()


def test_a_jitter_without_a_schedule_or_with_a_bad_schedule_is_not_judged():
    agent(schedule="", jitter_seconds=999999999).full_clean()
    errors = pytest.raises(ValidationError, agent(schedule="nonsense", jitter_seconds=5).full_clean)
    assert "jitter_seconds" not in errors.value.message_dict


def test_a_stored_agent_with_a_long_jitter_keeps_running_and_must_be_fixed_at_its_next_save():
    stored = make_agent("jittery", schedule="* * * * *")
    Agent.objects.filter(pk=stored.pk).update(jitter_seconds=600)
    stored.refresh_from_db()
    assert stored.enabled  # nothing at run time looks at the rule
    stored.description = "a change"
    with pytest.raises(ValidationError) as caught:
        save_agent(stored, Actor.system())
    assert "at most 59 seconds" in caught.value.message_dict["jitter_seconds"][0]


def test_a_disabled_agent_may_keep_a_path_of_another_machine_but_not_one_inside_cronos(settings):
    # The importer brings such agents in disabled, naming the path; the executor refuses to
    # start a run in a directory that is not a full path.
    for working_dir in ("C:\\Users\\someone\\notes", "notes/daily", "."):
        agent(working_dir=working_dir, enabled=False).full_clean()
    [message] = refused(agent(working_dir=str(settings.BASE_DIR), enabled=False), "working_dir")
    assert "inside Cronos's installation" in message


def test_an_agent_stored_before_the_size_limits_is_flagged_with_them():
    stored = make_agent("wordy", working_dir="/srv/app")
    Agent.objects.filter(pk=stored.pk).update(description="d" * 5000)
    stored.refresh_from_db()
    problems = stored.problems_to_fix()
    assert len(problems) == 1
    assert problems[0].startswith("Description: ")
    assert "2,000" in problems[0] or "2000" in problems[0]


def test_a_working_directory_that_cannot_be_resolved_is_refused_not_a_crash(monkeypatch):
    def refuse(path, strict=False):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(validation.os.path, "realpath", refuse)
    assert validation.working_dir_problem("/proc/1/cwd") == (
        "'/proc/1/cwd' cannot be resolved: Permission denied."
    )
