"""cronos_import / cronos_export of a directory laid out as the desktop prototype left it."""

from __future__ import annotations

import os
import shutil
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from agents import agentfile as config
from agents import cron, secrets
from agents.legacy import Status, export_directory, import_directory
from agents.models import Agent
from agents.services import save_agent, set_enabled
from agents.versions import snapshot
from audit import roles
from audit.actor import Actor
from audit.models import AuditEntry

pytestmark = pytest.mark.django_db

# A copy of ../shared/legacy-examples/cronos, so the suite does not depend on paths outside it.
LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-cronos"
FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "bin" / "claude"


@pytest.fixture(autouse=True)
def this_host(monkeypatch, settings, tmp_path) -> Path:
    """A host the prototype's agents can run on: a home with the ~/notes they work in, and a
    claude executable. Returns the home."""
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    return home


@pytest.fixture
def person(django_user_model):
    return django_user_model.objects.create_superuser("ana", "ana@example.com", "pw")


@pytest.fixture
def actor(person) -> Actor:
    return Actor.cli(person.username)


@pytest.fixture
def source(tmp_path) -> Path:
    """A writable copy of the legacy directory, to break one file of."""
    copy = tmp_path / "source"
    shutil.copytree(LEGACY, copy, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(copy):
        os.chmod(folder, 0o755)  # copytree copied the read-only mode of the folders
    return copy


def tree(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under path with its bytes and modification time."""
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def counts() -> tuple[int, int, int]:
    return Agent.objects.count(), Agent.history.count(), AuditEntry.objects.count()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# --- Importing the legacy directory -------------------------------------------------------------


def test_importing_the_legacy_directory_creates_both_agents_with_every_field_right(actor):
    report = import_directory(LEGACY, actor)

    assert [(r.name, r.status) for r in report.agents] == [
        ("cron-git", Status.CREATED),
        ("weekly-report", Status.CREATED),
    ]
    git = Agent.objects.get(name="cron-git")
    assert git.description == "Commit pending changes in the notes repository every 4 hours"
    assert git.enabled is True
    assert git.schedule == "0 0 */4 * * *"
    assert git.working_dir == "~/notes"
    assert git.runner == Agent.Runner.CLAUDE
    assert git.command == ""
    assert git.model == "claude-sonnet-4-5"
    assert git.max_turns == 8
    assert git.timeout_seconds == 900
    assert git.allowed_tools == ["Bash(git:*)", "Read", "Glob"]
    assert git.disallowed_tools == ["WebFetch", "WebSearch"]
    assert git.permission_mode == Agent.PermissionMode.ACCEPT_EDITS
    assert git.prompt == (LEGACY / "agents/cron-git/CLAUDE.md").read_bytes().decode()

    report_agent = Agent.objects.get(name="weekly-report")
    assert report_agent.enabled is False
    assert report_agent.schedule == "0 30 8 * * Mon"
    assert report_agent.working_dir == "~/notes"
    assert report_agent.model == "claude-opus-4-1"
    assert report_agent.max_turns == 20
    assert report_agent.timeout_seconds == 1800
    assert report_agent.catch_up_policy == Agent.CatchUpPolicy.RUN_ONCE
    assert report_agent.allow_concurrent is False
    assert report_agent.max_retries == 2
    assert report_agent.retry_delay_seconds == 120
    assert report_agent.retry_backoff == Agent.Backoff.FIXED
    assert report_agent.depends_on == ["cron-git"]
    assert report_agent.variables == [secrets.plain("REPORT_DIR", "reports")]
    assert report_agent.allowed_tools == ["Read", "Write", "Bash(git log:*)"]
    assert report_agent.disallowed_tools == []
    assert report_agent.permission_mode == Agent.PermissionMode.ACCEPT_EDITS
    assert report_agent.prompt.encode() == (LEGACY / "agents/weekly-report/CLAUDE.md").read_bytes()


def test_each_imported_agent_has_one_version_and_one_audit_entry_naming_the_importer(actor):
    import_directory(LEGACY, actor)
    for agent in Agent.objects.all():
        assert agent.history.count() == 1
        [entry] = AuditEntry.objects.for_object(agent)
        assert (entry.action, entry.actor_username, entry.source) == ("agent.import", "ana", "cli")


def test_importing_agents_leaves_no_notice_for_a_well_formed_directory(actor):
    report = import_directory(LEGACY, actor)
    assert report.notices == []


def test_the_importer_never_writes_to_the_source_directory(actor, source):
    before = tree(source)
    import_directory(source, actor)
    export_directory(source.parent / "out", actor)
    assert tree(source) == before


def test_a_prompt_keeps_its_text_through_import_and_export(actor, source, tmp_path):
    prompt = "# cron-git\n\n\u00e9t\u00e9, tabs\tand no newline at the end"
    (source / "agents/cron-git/CLAUDE.md").write_bytes(prompt.encode())
    import_directory(source, actor)
    assert Agent.objects.get(name="cron-git").prompt == prompt
    export_directory(tmp_path / "out", actor)
    assert (tmp_path / "out/agents/cron-git/CLAUDE.md").read_bytes() == prompt.encode()


@pytest.mark.parametrize(
    ("data", "changes"),
    [
        (
            b"\xef\xbb\xbf# cron-git\r\n\r\nCommit, \xc3\xa9t\xc3\xa9.\r\n",
            "its byte-order mark removed, its CRLF line endings made LF",
        ),
        ("# cron-git\r\n\r\nCommit, \u00e9t\u00e9.\r\n".encode("utf-16"),
         "read as UTF-16 (its byte-order mark says so), its CRLF line endings made LF"),
        (b"# cron-git\r\rCommit, \xc3\xa9t\xc3\xa9.\r", "its CR made LF"),
    ],
)  # fmt: skip
def test_a_prompt_written_on_windows_loses_its_bom_and_crlf_with_a_notice(
    actor, source, tmp_path, data, changes
):
    path = source / "agents/cron-git/CLAUDE.md"
    path.write_bytes(data)

    report = import_directory(source, actor)

    assert Agent.objects.get(name="cron-git").prompt == "# cron-git\n\nCommit, \u00e9t\u00e9.\n"
    assert report.agents[0].notices == [f"{path}: {changes}"]
    export_directory(tmp_path / "out", actor)
    exported = (tmp_path / "out/agents/cron-git/CLAUDE.md").read_bytes()
    assert exported == "# cron-git\n\nCommit, \u00e9t\u00e9.\n".encode()
    # The file is read the same way the next time: nothing changed.
    assert import_directory(source, actor).agents[0].status == Status.UNCHANGED


def test_an_agent_yaml_written_on_windows_reads_as_the_same_agent(actor, source):
    path = source / "agents/cron-git/agent.yaml"
    text = path.read_text().replace(
        "description: Commit pending changes in the notes repository every 4 hours",
        'description: "Commit pending changes\\r\\nevery 4 hours"',
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    weekly = source / "agents/weekly-report/agent.yaml"
    weekly.write_bytes(weekly.read_text().replace("\n", "\r\n").encode("utf-16"))

    report = import_directory(source, actor)

    assert [r.status for r in report.agents] == [Status.CREATED, Status.CREATED]
    git = Agent.objects.get(name="cron-git")
    assert git.description == "Commit pending changes\nevery 4 hours"
    assert git.schedule == "0 0 */4 * * *"
    assert Agent.objects.get(name="weekly-report").variables == [
        secrets.plain("REPORT_DIR", "reports")
    ]


# --- Export and lossless round trips ------------------------------------------------------------


def test_exported_legacy_files_read_as_the_same_mapping_and_the_same_prompt(actor, tmp_path):
    import_directory(LEGACY, actor)
    export_directory(tmp_path / "out", actor)
    for name in ("cron-git", "weekly-report"):
        original, exported = LEGACY / "agents" / name, tmp_path / "out/agents" / name
        assert yaml.safe_load((exported / "agent.yaml").read_text()) == yaml.safe_load(
            (original / "agent.yaml").read_text()
        )
        assert (exported / "CLAUDE.md").read_bytes() == (original / "CLAUDE.md").read_bytes()


def test_an_exported_file_says_cronos_wrote_it_and_that_schedules_may_be_seconds_first(
    actor, tmp_path
):
    import_directory(LEGACY, actor)
    export_directory(tmp_path, actor)
    text = (tmp_path / "agents/cron-git/agent.yaml").read_text()
    assert text.startswith("# Written by Cronos")
    assert "seconds-first" in text
    assert list(yaml.safe_load(text))[:4] == ["name", "description", "enabled", "schedule"]


def every_option_agent(actor: Actor) -> Agent:
    """An agent made in Cronos with every extension away from its default and unknown keys."""
    agent = Agent(
        name="everything",
        description="Every option\nover two lines",
        enabled=False,
        prompt="Look around.\n",
        runner=Agent.Runner.CLAUDE,
        command="/opt/claude/bin/claude",
        model="claude-sonnet-4-5",
        max_turns=3,
        allowed_tools=["Read"],
        disallowed_tools=["WebFetch"],
        permission_mode=Agent.PermissionMode.PLAN,
        extra_args=["--verbose"],
        working_dir="/srv/app",
        variables=[secrets.plain("MODE", "fast"), secrets.plain("LEVEL", "3")],
        schedule="0 0 */4 * * *",
        timezone="Europe/Paris",
        jitter_seconds=45,
        catch_up_policy=Agent.CatchUpPolicy.RUN_ALL,
        catch_up_window_seconds=7200,
        catch_up_max_runs=4,
        allow_concurrent=True,
        overlap_policy=Agent.OverlapPolicy.QUEUE,
        max_retries=3,
        retry_delay_seconds=30,
        retry_backoff=Agent.Backoff.EXPONENTIAL,
        retry_max_delay_seconds=300,
        timeout_seconds=600,
        memory_limit_mb=256,
        cpu_nice=5,
        cpu_time_limit_seconds=120,
        output_limit_bytes=10_000,
        output_limit_action=Agent.OutputLimitAction.KILL,
        depends_on=["cron-git"],
        approval_required=True,
        approval_auto_approve_seconds=60,
        approval_expire_seconds=600,
        notify_on_failure=False,
        notify_on_success=True,
        notify_emails=["ops@example.com"],
        notify_webhook_url="https://example.com/hook",
        failure_alert_threshold=2,
        extra_config={"owner": "ana", "limits": {"gpu": 1}},
    )
    save_agent(agent, actor)
    return agent


def test_export_then_import_into_an_emptied_database_is_lossless(actor, tmp_path):
    import_directory(LEGACY, actor)
    every_option_agent(actor)
    command_agent = Agent(name="backup", runner="command", command="make backup", working_dir="/")
    save_agent(command_agent, actor)
    (tmp_path / "agents/backup").mkdir(parents=True)
    (tmp_path / "agents/backup/CLAUDE.md").write_text("a stale prompt from an earlier export")
    before = {agent.name: snapshot(agent) for agent in Agent.objects.all()}

    export_directory(tmp_path, actor)
    Agent.objects.all().delete()
    report = import_directory(tmp_path, actor)

    assert {r.name: r.status for r in report.agents} == dict.fromkeys(before, Status.CREATED)
    assert {agent.name: snapshot(agent) for agent in Agent.objects.all()} == before


def test_exporting_twice_writes_the_same_bytes(actor, tmp_path):
    import_directory(LEGACY, actor)
    every_option_agent(actor)
    export_directory(tmp_path / "one", actor)
    export_directory(tmp_path / "two", actor)
    assert [content for content, _ in tree(tmp_path / "one").values()] == [
        content for content, _ in tree(tmp_path / "two").values()
    ]


def test_export_is_audited_for_each_agent_with_the_actor(actor, tmp_path):
    import_directory(LEGACY, actor)
    export_directory(tmp_path, actor, Agent.objects.filter(name="cron-git"))
    [entry] = AuditEntry.objects.filter(action="agent.export")
    assert (entry.object_name, entry.actor_username) == ("cron-git", "ana")
    assert str(tmp_path) in entry.message
    assert not (tmp_path / "agents/weekly-report").exists()


def test_export_leaves_no_temporary_files_behind(actor, tmp_path):
    import_directory(LEGACY, actor)
    export_directory(tmp_path, actor)
    export_directory(tmp_path, actor)  # over existing files
    assert sorted(p.name for p in (tmp_path / "agents/cron-git").iterdir()) == [
        "CLAUDE.md",
        "agent.yaml",
    ]


def test_a_secret_value_never_appears_in_an_exported_file(actor, source, tmp_path):
    edit(
        source / "agents/weekly-report/agent.yaml",
        "env:\n",
        "secrets:\n  API_TOKEN: s3cr3t-d0-not-leak\nenv:\n",
    )
    import_directory(source, actor)
    agent = Agent.objects.get(name="weekly-report")
    assert secrets.environment(agent.variables)["API_TOKEN"] == "s3cr3t-d0-not-leak"
    assert "s3cr3t-d0-not-leak" not in str(snapshot(agent))

    export_directory(tmp_path / "out", actor)
    for content, _ in tree(tmp_path / "out").values():
        assert b"s3cr3t-d0-not-leak" not in content
    exported = yaml.safe_load((tmp_path / "out/agents/weekly-report/agent.yaml").read_text())
    assert exported["secrets"] == {"API_TOKEN": None}
    assert b"s3cr3t-d0-not-leak" not in str(list(AuditEntry.objects.values())).encode()

    # Imported again, `API_TOKEN: null` keeps the value Cronos holds: nothing changes.
    again = import_directory(tmp_path / "out", actor)
    assert {r.name: r.status for r in again.agents}["weekly-report"] == Status.UNCHANGED
    agent.refresh_from_db()
    assert secrets.environment(agent.variables)["API_TOKEN"] == "s3cr3t-d0-not-leak"


def test_importing_the_same_secret_value_again_changes_nothing(actor, source):
    edit(source / "agents/cron-git/agent.yaml", "model:", "secrets:\n  PIN: '123456'\nmodel:")
    import_directory(source, actor)
    versions, entries = Agent.history.count(), AuditEntry.objects.count()
    report = import_directory(source, actor)
    assert {r.status for r in report.agents} == {Status.UNCHANGED}
    assert (Agent.history.count(), AuditEntry.objects.count()) == (versions, entries)


def test_unknown_keys_are_kept_reported_and_exported_back_in_place(actor, source, tmp_path):
    path = source / "agents/cron-git/agent.yaml"
    edit(
        path,
        "  permission_mode: acceptEdits\n",
        "  permission_mode: acceptEdits\n  sandbox: strict\n",
    )
    edit(path, "model:", "notify_slack: '#ops'\nmodel:")

    report = import_directory(source, actor)

    [result] = [r for r in report.agents if r.name == "cron-git"]
    assert result.status == Status.CREATED
    assert result.notices == [
        f"{path}: kept unknown key 'notify_slack' (Cronos does not use it)",
        f"{path}: kept unknown key 'guardrails.sandbox' (Cronos does not use it)",
    ]
    assert f"    notice: {path}: kept unknown key 'notify_slack' (Cronos does not use it)" in (
        report.lines()
    )
    export_directory(tmp_path / "out", actor)
    exported = yaml.safe_load((tmp_path / "out/agents/cron-git/agent.yaml").read_text())
    assert exported == yaml.safe_load(path.read_text())
    assert exported["guardrails"]["sandbox"] == "strict"


# --- Importing again ----------------------------------------------------------------------------


def test_importing_the_same_directory_again_changes_nothing(actor):
    import_directory(LEGACY, actor)
    before = counts()
    report = import_directory(LEGACY, actor)
    assert [r.status for r in report.agents] == [Status.UNCHANGED, Status.UNCHANGED]
    assert counts() == before


def test_changing_one_value_makes_exactly_one_new_version_listing_the_change(actor, source):
    import_directory(source, actor)
    edit(source / "agents/weekly-report/agent.yaml", "max_turns: 20", "max_turns: 25")

    report = import_directory(source, actor)

    assert [(r.name, r.status, r.changed) for r in report.agents] == [
        ("cron-git", Status.UNCHANGED, []),
        ("weekly-report", Status.UPDATED, ["max_turns"]),
    ]
    assert "updated         weekly-report (changed: max_turns)" in report.lines()
    assert Agent.objects.get(name="weekly-report").history.count() == 2
    assert Agent.objects.get(name="cron-git").history.count() == 1
    [entry] = AuditEntry.objects.filter(object_name="weekly-report").exclude(
        pk=AuditEntry.objects.filter(object_name="weekly-report").order_by("id").first().pk
    )
    assert entry.changes == {"max_turns": [20, 25]}


def test_a_changed_prompt_is_listed_as_the_prompt(actor, source):
    import_directory(source, actor)
    with (source / "agents/cron-git/CLAUDE.md").open("a") as prompt:
        prompt.write("4. Be brief.\n")
    report = import_directory(source, actor)
    assert report.agents[0].changed == ["prompt"]


def test_depends_on_may_name_an_agent_imported_later_in_the_same_run(actor, tmp_path):
    for name, extra in (("a-first", "depends_on: [z-last, nowhere]\n"), ("z-last", "")):
        folder = tmp_path / "agents" / name
        folder.mkdir(parents=True)
        (folder / "agent.yaml").write_text(
            f"name: {name}\nschedule: '0 */4 * * *'\nworking_dir: /tmp\ncommand: make\n{extra}"
        )

    report = import_directory(tmp_path, actor)

    assert [(r.name, r.status) for r in report.agents] == [
        ("a-first", Status.CREATED),
        ("z-last", Status.CREATED),
    ]
    assert report.agents[0].notices == [
        f"{tmp_path / 'agents/a-first/agent.yaml'}: depends_on names 'nowhere', which is "
        "neither in Cronos nor in this directory"
    ]
    assert Agent.objects.get(name="a-first").depends_on == ["z-last", "nowhere"]


# --- Agents that cannot run on this host: imported disabled, saying why --------------------------


def set_key(source: Path, key: str, value: str, agent: str = "cron-git") -> Path:
    """Replace one top-level key of an agent.yaml (single-quoted, so backslashes stay)."""
    path = source / "agents" / agent / "agent.yaml"
    lines = path.read_text().splitlines()
    quoted = "'" + value.replace("'", "''") + "'"
    path.write_text(
        "\n".join(f"{key}: {quoted}" if line.startswith(f"{key}:") else line for line in lines)
        + "\n"
    )
    return path


@pytest.mark.parametrize(
    ("working_dir", "why"),
    [
        ("C:\\Users\\someone\\notes", "is a Windows path, which this host cannot use"),
        ("\\\\nas\\share\\notes", "is a Windows path, which this host cannot use"),
        ("notes\\daily", "is a Windows path, which this host cannot use"),
        ("notes/daily", "is a relative path; give the full path of the directory"),
        ("~nobody-on-this-host/notes", "is in the home of 'nobody-on-this-host', who has no "
         "account on this host"),
    ],
)  # fmt: skip
def test_an_agent_whose_working_dir_cannot_exist_here_is_imported_disabled_naming_it(
    actor, source, working_dir, why
):
    path = set_key(source, "working_dir", working_dir)

    report = import_directory(source, actor)

    agent = Agent.objects.get(name="cron-git")
    assert (report.agents[0].status, agent.enabled) == (Status.CREATED, False)
    assert agent.working_dir == working_dir  # kept as written, for the person to fix
    assert report.agents[0].notices == [
        f"{path}: imported disabled: working_dir '{working_dir}' {why}; "
        "fix it, then enable the agent"
    ]


def test_a_working_dir_in_the_home_of_a_user_of_another_machine_suggests_this_home(
    actor, source, this_host
):
    path = set_key(source, "working_dir", "/Users/someone/notes")

    report = import_directory(source, actor)

    assert Agent.objects.get(name="cron-git").enabled is False
    assert report.agents[0].notices == [
        f"{path}: imported disabled: working_dir '/Users/someone/notes' is in the home of "
        f"'someone' on another machine; this host's home is {this_host} (perhaps '~/notes'); "
        "fix it, then enable the agent"
    ]


def test_a_working_dir_that_does_not_exist_here_is_named_with_where_it_would_be(
    actor, source, this_host
):
    path = set_key(source, "working_dir", "~/elsewhere")

    report = import_directory(source, actor)

    assert report.agents[0].notices == [
        f"{path}: imported disabled: working_dir '~/elsewhere' ({this_host / 'elsewhere'}) "
        "does not exist on this host; fix it, then enable the agent"
    ]


def test_a_working_dir_that_is_a_file_is_named(actor, source, this_host):
    (this_host / "notes.txt").write_text("not a directory")
    path = set_key(source, "working_dir", str(this_host / "notes.txt"))

    report = import_directory(source, actor)

    assert report.agents[0].notices == [
        f"{path}: imported disabled: working_dir '{this_host / 'notes.txt'}' is not a directory "
        "on this host; fix it, then enable the agent"
    ]


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("/opt/nowhere/claude", "command '/opt/nowhere/claude' does not exist on this host"),
        ("C:\\Tools\\claude.exe", "command 'C:\\Tools\\claude.exe' runs a Windows "
         "program, which this host cannot run"),
        ("/opt/nowhere/backup.sh --all", "command '/opt/nowhere/backup.sh --all' runs "
         "'/opt/nowhere/backup.sh', which does not exist on this host"),
    ],
)  # fmt: skip
def test_an_agent_whose_executable_is_missing_here_is_imported_disabled_naming_it(
    actor, source, command, why
):
    path = set_key(source, "command", command)

    report = import_directory(source, actor)

    assert Agent.objects.get(name="cron-git").enabled is False
    assert report.agents[0].notices == [
        f"{path}: imported disabled: {why}; fix it, then enable the agent"
    ]


def test_a_claude_agent_with_its_own_executable_that_exists_stays_enabled(actor, source):
    set_key(source, "command", str(FAKE_CLAUDE))

    report = import_directory(source, actor)

    assert Agent.objects.get(name="cron-git").enabled is True
    assert report.agents[0].notices == []


def test_a_disabled_agent_that_cannot_run_here_says_so_and_stays_disabled(actor, source):
    path = set_key(source, "working_dir", "D:\\reports", agent="weekly-report")

    report = import_directory(source, actor)

    assert Agent.objects.get(name="weekly-report").enabled is False
    assert report.agents[1].notices == [
        f"{path}: working_dir 'D:\\reports' is a Windows path, which this host cannot use; "
        "its runs will fail until it is fixed"
    ]
    assert report.agents[1].disabled is False
    assert "imported disabled" not in report.summary()


def test_an_agent_imported_disabled_imports_again_unchanged_and_exports_as_disabled(
    actor, source, tmp_path
):
    set_key(source, "working_dir", "C:\\Users\\someone\\notes")
    import_directory(source, actor)
    before = counts()

    again = import_directory(source, actor)

    assert again.agents[0].status == Status.UNCHANGED
    assert counts() == before
    export_directory(tmp_path / "out", actor)
    exported = yaml.safe_load((tmp_path / "out/agents/cron-git/agent.yaml").read_text())
    assert exported["enabled"] is False
    assert exported["working_dir"] == "C:\\Users\\someone\\notes"


def test_an_enabled_agent_whose_file_now_names_a_missing_directory_is_disabled(actor, source):
    import_directory(source, actor)
    assert Agent.objects.get(name="cron-git").enabled is True
    set_key(source, "working_dir", "/Users/someone/notes")

    report = import_directory(source, actor)

    assert (report.agents[0].status, report.agents[0].changed) == (
        Status.UPDATED,
        ["enabled", "working_dir"],
    )
    assert Agent.objects.get(name="cron-git").enabled is False


def test_a_dry_run_reports_the_agents_it_would_import_disabled(actor, source):
    path = set_key(source, "working_dir", "C:\\notes")

    report = import_directory(source, actor, dry_run=True)

    assert report.lines()[:2] == [
        "would create    cron-git",
        f"    notice: {path}: imported disabled: working_dir 'C:\\notes' is a Windows path, "
        "which this host cannot use; fix it, then enable the agent",
    ]
    assert report.summary().endswith(
        "0 failed; 1 would be imported disabled (cannot run on this host, see the notices)."
    )
    assert counts() == (0, 0, 0)


def test_a_missing_site_claude_is_one_notice_and_disables_nothing(actor, settings, tmp_path):
    settings.CRONOS_CLAUDE_BIN = str(tmp_path / "no-claude-here")

    report = import_directory(LEGACY, actor)

    assert report.notices == [
        f"the claude executable '{tmp_path / 'no-claude-here'}' (CRONOS_CLAUDE_BIN) is not "
        "found on this host: claude agents that do not name their own will fail until it is "
        "installed or CRONOS_CLAUDE_BIN names it"
    ]
    assert Agent.objects.get(name="cron-git").enabled is True


def test_cronos_import_lists_the_agents_imported_disabled_and_succeeds(person, source):
    path = set_key(source, "working_dir", "C:\\Users\\someone\\notes")

    output = run("cronos_import", str(source), "--user", "ana")

    assert output.splitlines()[:3] == [
        "created         cron-git",
        f"    notice: {path}: imported disabled: working_dir "
        "'C:\\Users\\someone\\notes' is a Windows path, which this host cannot use; "
        "fix it, then enable the agent",
        "created         weekly-report",
    ]
    assert "1 imported disabled (cannot run on this host, see the notices)." in output
    assert Agent.objects.get(name="cron-git").enabled is False


# --- Folder names that are not agent names -------------------------------------------------------


def copy_agent(source: Path, folder: str, name: str | None = None) -> Path:
    """A copy of cron-git in another folder, its name: set to `name` (default: the folder)."""
    target = source / "agents" / folder
    shutil.copytree(source / "agents/cron-git", target)
    edit(target / "agent.yaml", "name: cron-git", f"name: {name or folder}")
    return target


@pytest.mark.parametrize(
    ("folder", "suggestion"),
    [
        ("Daily Report", ", to 'daily-report'"),
        ("Rapport d'\u00e9t\u00e9", ", to 'rapport-dete'"),
        ("cron.git", ", to 'crongit'"),
        ("\u65e5\u5831", ""),  # nothing ASCII to make a name of
    ],
)
def test_a_folder_name_that_is_not_an_agent_name_fails_suggesting_one(
    actor, source, folder, suggestion
):
    target = copy_agent(source, folder)

    report = import_directory(source, actor)

    [failed] = report.failed
    assert failed.name == folder
    assert failed.problems == [
        f"{target}: the folder name {folder!r} is not an agent name (letters, digits, - and _; "
        "the folder name is the agent's name in Cronos); rename the folder, and the name: in "
        f"its agent.yaml{suggestion}"
    ]
    # The others are imported all the same.
    assert sorted(Agent.objects.values_list("name", flat=True)) == ["cron-git", "weekly-report"]


def test_a_suggested_name_already_taken_says_so(actor, source):
    target = copy_agent(source, "Cron Git")

    [failed] = import_directory(source, actor).failed

    assert failed.problems[0].endswith(
        "its agent.yaml, to 'cron-git' or another name (a folder 'cron-git' is already here)"
    )
    assert str(target) in failed.problems[0]


def test_a_folder_name_is_checked_before_its_file_so_the_suggestion_is_given_first(actor, source):
    # Renaming name: alone is not enough: the folder is the name.
    copy_agent(source, "Daily Report", name="daily-report")

    [failed] = import_directory(source, actor).failed

    assert failed.problems[0].endswith("its agent.yaml, to 'daily-report'")


def test_cronos_import_names_the_folder_to_rename_and_imports_the_others(person, source):
    copy_agent(source, "Daily Report")
    out = StringIO()

    with pytest.raises(CommandError, match=r"1 agent\(s\) not imported: 1 failed \(Daily Report\)"):
        call_command("cronos_import", str(source), "--user", "ana", stdout=out)

    assert "to 'daily-report'" in out.getvalue()
    assert sorted(Agent.objects.values_list("name", flat=True)) == ["cron-git", "weekly-report"]


def test_a_fault_in_one_folder_never_stops_the_others(actor, source, monkeypatch):
    from agents import legacy

    real = legacy.host.problems

    def broken(**fields):
        if fields["command"] == "":  # cron-git and weekly-report: both claude, no command
            if fields["working_dir"] == "/boom":
                raise RuntimeError("boom")
        return real(**fields)

    monkeypatch.setattr(legacy.host, "problems", broken)
    set_key(source, "working_dir", "/boom")

    report = import_directory(source, actor)

    assert [(r.name, r.status) for r in report.agents] == [
        ("cron-git", Status.FAILED),
        ("weekly-report", Status.CREATED),
    ]
    assert report.agents[0].problems == [
        f"{source / 'agents/cron-git'}: not imported, internal error: RuntimeError('boom')"
    ]
    assert not Agent.objects.filter(name="cron-git").exists()


def test_an_unreadable_prompt_is_reported_and_the_others_imported(actor, source):
    prompt = source / "agents/cron-git/CLAUDE.md"
    prompt.unlink()
    prompt.mkdir()  # not a regular file: refused, naming what it is
    (source / "agents/weekly-report/CLAUDE.md").write_bytes(b"\xff\xfe\x00")  # odd UTF-16

    report = import_directory(source, actor)

    assert [r.status for r in report.agents] == [Status.REFUSED, Status.REFUSED]
    assert report.agents[0].problems == [
        f"{prompt}: the file is not a regular file: it is a folder"
    ]
    assert (
        report.agents[1]
        .problems[0]
        .startswith(
            f"{source / 'agents/weekly-report/CLAUDE.md'}: the file is not UTF-16 text, though "
            "it starts with a UTF-16 byte-order mark ("
        )
    )


# --- Bad files: the bad agent writes nothing, the good one is still imported ---------------------


def import_with_cron_git_broken(actor: Actor, source: Path) -> list[str]:
    """Import `source`, check everything around a failed cron-git, and return its reasons."""
    files = tree(source)
    report = import_directory(source, actor)

    assert [(r.name, r.status) for r in report.agents] == [
        ("cron-git", Status.FAILED),
        ("weekly-report", Status.CREATED),
    ]
    assert list(Agent.objects.values_list("name", flat=True)) == ["weekly-report"]
    assert not Agent.history.filter(name="cron-git").exists()
    assert not AuditEntry.objects.filter(object_name="cron-git").exists()
    assert AuditEntry.objects.filter(object_name="weekly-report").count() == 1
    assert tree(source) == files
    problems = report.agents[0].problems
    assert problems
    assert all(str(source / "agents/cron-git") in problem for problem in problems)
    return problems


def test_invalid_yaml_is_reported_with_the_file_line_and_column(actor, source):
    path = source / "agents/cron-git/agent.yaml"
    edit(path, "model: claude-sonnet-4-5", "model: [claude-sonnet-4-5")
    [problem] = import_with_cron_git_broken(actor, source)
    assert problem.startswith(f"{path}: invalid YAML at line ")
    assert ", column " in problem


def test_an_unknown_runner_is_reported(actor, source):
    path = source / "agents/cron-git/agent.yaml"
    edit(path, "command: claude", "runner: docker\ncommand: claude")
    assert import_with_cron_git_broken(actor, source) == [
        f"{path}: runner: 'docker' is not a runner Cronos knows (one of: claude, command)"
    ]


def test_an_invalid_schedule_is_reported_by_its_key(actor, source):
    path = source / "agents/cron-git/agent.yaml"
    edit(path, '"0 0 */4 * * *"', '"61 * * * *"')
    try:
        cron.parse("61 * * * *")
    except cron.CronError:
        pass
    else:  # agents.cron was still the placeholder that accepts anything
        pytest.xfail("agents.cron does not reject 61 * * * * yet")
    [problem] = import_with_cron_git_broken(actor, source)
    assert problem.startswith(f"{path}: schedule: ")
    assert "61" in problem


def test_a_value_of_the_wrong_type_is_reported_with_the_expected_type(actor, source):
    path = source / "agents/cron-git/agent.yaml"
    edit(path, "max_turns: 8", "max_turns: eight")
    assert import_with_cron_git_broken(actor, source) == [
        f"{path}: max_turns: expected a whole number (0 or more), got 'eight' (text)"
    ]


def test_a_claude_agent_without_its_claude_md_is_reported_naming_the_path(actor, source):
    (source / "agents/cron-git/CLAUDE.md").unlink()
    assert import_with_cron_git_broken(actor, source) == [
        f"{source / 'agents/cron-git/CLAUDE.md'}: missing; a claude agent's prompt is its CLAUDE.md"
    ]


def test_a_yaml_list_instead_of_a_mapping_is_reported(actor, source):
    path = source / "agents/cron-git/agent.yaml"
    path.write_text("- name: cron-git\n- schedule: '0 */4 * * *'\n")
    assert import_with_cron_git_broken(actor, source) == [
        f"{path}: expected a mapping of keys to values, found a list"
    ]


def test_a_new_agent_with_a_secret_of_no_value_is_reported_naming_the_variable(actor, source):
    path = source / "agents/cron-git/agent.yaml"
    edit(path, "model:", "secrets:\n  GITHUB_TOKEN: null\nmodel:")
    [problem] = import_with_cron_git_broken(actor, source)
    assert problem.startswith(f"{path}: secrets.GITHUB_TOKEN: no value given (null)")


def test_a_name_that_disagrees_with_its_folder_is_reported(actor, source):
    path = source / "agents/cron-git/agent.yaml"
    edit(path, "name: cron-git", "name: cron-commit")
    assert import_with_cron_git_broken(actor, source) == [
        f"{path}: name: 'cron-commit' does not match its folder 'cron-git'; "
        "rename one so that they agree"
    ]


def test_a_rule_of_the_model_is_reported_by_its_key(actor, source):
    path = source / "agents/cron-git/agent.yaml"
    edit(path, "timeout_secs: 900", "timeout_secs: 0\ntimezone: Mars/Olympus")
    problems = import_with_cron_git_broken(actor, source)
    assert sorted(p.removeprefix(f"{path}: ").split(":")[0] for p in problems) == [
        "timeout_secs",
        "timezone",
    ]


def test_a_bad_file_leaves_the_existing_agent_as_it_was(actor, source):
    import_directory(source, actor)
    agent = Agent.objects.get(name="cron-git")
    before, before_counts = snapshot(agent), counts()
    edit(source / "agents/cron-git/agent.yaml", "max_turns: 8", "max_turns: 9\nenabled: maybe")

    report = import_directory(source, actor)

    assert report.agents[0].status == Status.FAILED
    agent.refresh_from_db()
    assert snapshot(agent) == before
    assert counts() == before_counts


def test_a_viewer_cannot_import_and_nothing_is_written(django_user_model, source):
    vera = django_user_model.objects.create_user("vera-import")
    vera.groups.add(Group.objects.get(name=roles.VIEWER))
    report = import_directory(source, Actor.cli("vera-import"))
    assert [r.status for r in report.agents] == [Status.FAILED, Status.FAILED]
    assert "lacks the permission agents.add_agent" in report.agents[0].problems[0]
    assert counts() == (0, 0, 0)


def test_a_path_that_does_not_exist_or_has_no_agents_folder_is_refused(actor, tmp_path):
    from agents.legacy import LegacyError

    with pytest.raises(LegacyError, match="does not exist"):
        import_directory(tmp_path / "nowhere", actor)
    with pytest.raises(LegacyError, match="has no agents/ folder"):
        import_directory(tmp_path, actor)


# --- Dry run ------------------------------------------------------------------------------------


def test_a_dry_run_validates_everything_and_writes_nothing(actor, source):
    edit(source / "agents/cron-git/agent.yaml", "max_turns: 8", "max_turns: eight")
    report = import_directory(source, actor, dry_run=True)
    assert [(r.name, r.status) for r in report.agents] == [
        ("cron-git", Status.FAILED),
        ("weekly-report", Status.CREATED),
    ]
    assert report.lines()[0] == "failed          cron-git"
    assert "would create    weekly-report" in report.lines()
    assert counts() == (0, 0, 0)


def test_a_dry_run_over_existing_agents_reports_the_changes_and_writes_nothing(actor, source):
    import_directory(source, actor)
    edit(source / "agents/cron-git/agent.yaml", "max_turns: 8", "max_turns: 12")
    before = counts()
    report = import_directory(source, actor, dry_run=True)
    assert [(r.status, r.changed) for r in report.agents] == [
        (Status.UPDATED, ["max_turns"]),
        (Status.UNCHANGED, []),
    ]
    assert counts() == before
    assert Agent.objects.get(name="cron-git").max_turns == 8


def lines_of(report) -> list[str]:
    """A report's lines as the import would word them: "would create" read as "created"."""
    verbs = {f"would {s.removesuffix('d')}": str(s) for s in (Status.CREATED, Status.UPDATED)}
    return [
        next(
            (f"{verbs[verb]:<16}{line[16:]}" for verb in verbs if line.startswith(verb)),
            line,
        )
        for line in report.lines()
    ]


def everything() -> tuple:
    """What the database holds of agents: every agent as saved, its versions, the audit log."""
    return (
        [snapshot(agent) for agent in Agent.objects.order_by("name")],
        list(Agent.history.values_list("history_id", flat=True)),
        list(AuditEntry.objects.values_list("id", flat=True)),
    )


@pytest.fixture
def paused_by_an_operator(actor, source) -> None:
    """Both agents imported, then cron-git paused and weekly-report enabled by an operator."""
    import_directory(source, actor)
    set_enabled(Agent.objects.get(name="cron-git"), False, actor)
    set_enabled(Agent.objects.get(name="weekly-report"), True, actor)


def test_an_editors_dry_run_reports_what_the_import_does_and_writes_nothing(
    editor, source, paused_by_an_operator
):
    edit(source / "agents/cron-git/agent.yaml", "max_turns: 8", "max_turns: 9")
    eddie, before = Actor.cli(editor.username), everything()

    dry = import_directory(source, eddie, dry_run=True)

    assert everything() == before
    real = import_directory(source, eddie)
    assert (
        lines_of(dry)
        == lines_of(real)
        == [
            "updated         cron-git (changed: max_turns)",
            f"    notice: {source / 'agents/cron-git/agent.yaml'}: enabled: true is not applied; "
            "cron-git stays paused: enabling or pausing an agent needs the operator's permission "
            "(agents.toggle_agent).",
            "unchanged       weekly-report",
            f"    notice: {source / 'agents/weekly-report/agent.yaml'}: enabled: false is not "
            "applied; weekly-report stays enabled: enabling or pausing an agent needs the "
            "operator's permission (agents.toggle_agent).",
        ]
    )
    assert dry.lines()[0] == "would update    cron-git (changed: max_turns)"
    cron_git = Agent.objects.get(name="cron-git")
    assert (cron_git.enabled, cron_git.max_turns) == (False, 9)
    assert Agent.objects.get(name="weekly-report").enabled is True


def test_an_editors_dry_run_does_not_report_enabled_as_a_change(
    editor, source, paused_by_an_operator
):
    eddie, before = Actor.cli(editor.username), everything()
    dry = import_directory(source, eddie, dry_run=True)
    assert everything() == before
    real = import_directory(source, eddie)
    assert [(r.status, r.changed) for r in dry.agents] == [
        (Status.UNCHANGED, []),
        (Status.UNCHANGED, []),
    ]
    assert dry.lines() == real.lines()
    assert everything() == before  # unchanged: no version, no audit entry


def test_an_editors_dry_run_of_new_agents_says_they_are_created_paused(editor, source):
    eddie = Actor.cli(editor.username)
    dry = import_directory(source, eddie, dry_run=True)
    assert counts() == (0, 0, 0)
    real = import_directory(source, eddie)
    assert (
        lines_of(dry)
        == lines_of(real)
        == [
            "created         cron-git",
            f"    notice: {source / 'agents/cron-git/agent.yaml'}: enabled: true is not applied; "
            "cron-git stays paused: enabling or pausing an agent needs the operator's permission "
            "(agents.toggle_agent).",
            "created         weekly-report",
        ]
    )
    assert Agent.objects.get(name="cron-git").enabled is False


def test_cronos_import_dry_run_of_an_editor_prints_the_import_s_lines(editor, source):
    dry = run("cronos_import", str(source), "--dry-run", "--user", editor.username)
    real = run("cronos_import", str(source), "--user", editor.username)
    # The note, each agent and its notices: the same but for "would"; then the summaries.
    assert dry.splitlines()[:4] == [
        line.replace("created         ", "would create    ") for line in real.splitlines()[:4]
    ]
    assert "enabled: true is not applied; cron-git stays paused" in dry


# --- The commands -------------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_cronos_import_prints_a_line_per_agent_the_notices_and_a_summary(person):
    output = run("cronos_import", str(LEGACY), "--user", "ana")
    assert output.splitlines() == [
        "created         cron-git",
        "created         weekly-report",
        f"Imported 2 agent(s) from {LEGACY}: 2 created, 0 updated, 0 unchanged, 0 refused, "
        "0 failed.",
        "runs/ history: imported 2, already there 0, refused 0, failed 0",
    ]
    assert AuditEntry.objects.filter(action="agent.import", actor_username="ana").count() == 2


def test_cronos_import_fails_after_importing_the_good_agents(person, source):
    edit(source / "agents/cron-git/agent.yaml", "max_turns: 8", "max_turns: eight")
    out = StringIO()
    with pytest.raises(
        CommandError, match=r"1 agent\(s\) not imported: 1 failed \(cron-git\); the others"
    ):
        call_command("cronos_import", str(source), "--user", "ana", stdout=out)
    assert "failed          cron-git" in out.getvalue()
    assert "max_turns: expected a whole number" in out.getvalue()
    assert list(Agent.objects.values_list("name", flat=True)) == ["weekly-report"]


def test_cronos_import_dry_run_says_nothing_was_written(person):
    output = run("cronos_import", str(LEGACY), "--dry-run", "--user", "ana")
    assert "would create    cron-git" in output
    assert "nothing written" in output.splitlines()[-1]
    assert counts() == (0, 0, 0)


def test_cronos_import_refuses_a_directory_without_agents(tmp_path):
    with pytest.raises(CommandError, match="has no agents/ folder"):
        run("cronos_import", str(tmp_path))


def test_cronos_import_refuses_an_unknown_user():
    with pytest.raises(CommandError, match="There is no Cronos user named 'nobody'"):
        run("cronos_import", str(LEGACY), "--user", "nobody")


def test_cronos_export_writes_the_named_agents(person, tmp_path):
    run("cronos_import", str(LEGACY), "--user", "ana")
    output = run("cronos_export", str(tmp_path), "--agent", "weekly-report", "--user", "ana")
    assert output.splitlines() == [
        "exported weekly-report",
        f"Exported 1 agent(s) and 0 finished run(s) to {tmp_path}.",
    ]
    assert sorted(p.name for p in (tmp_path / "agents").iterdir()) == ["weekly-report"]
    assert AuditEntry.objects.get(action="agent.export").actor_username == "ana"


def test_cronos_export_refuses_an_unknown_agent(person, tmp_path):
    with pytest.raises(CommandError, match="No agent named 'ghost'"):
        run("cronos_export", str(tmp_path), "--agent", "ghost")
    assert not (tmp_path / "agents").exists()


def test_cronos_export_without_user_acts_as_the_shell_account(person, tmp_path):
    run("cronos_import", str(LEGACY), "--user", "ana")
    run("cronos_export", str(tmp_path))
    names = set(
        AuditEntry.objects.filter(action="agent.export").values_list("actor_username", flat=True)
    )
    assert len(names) == 1
    assert names.pop().endswith("(shell)")
    assert (
        config.load_yaml((tmp_path / "agents/cron-git/agent.yaml").read_text())["name"]
        == "cron-git"
    )
