"""A hostile agents/ folder: nothing but the folder's own regular files is read (no symbolic link,
wherever it leads, no hard link, no FIFO or device), every file within its bound, YAML without
anchors or aliases, text that is text; the agent a bad file concerns is not imported, naming the
file and the reason (`refused`: the import does not read the file, or expand its YAML), nothing
of it is written, and the others are imported."""

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

from agents import agentfile as config
from agents.legacy import LegacyError, Status, import_directory
from agents.models import Agent
from audit.actor import Actor
from audit.models import AuditEntry

pytestmark = pytest.mark.django_db

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-cronos"
FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "bin" / "claude"
SECRET = "the contents of a file outside the import folder"
# What the Fernet key file of this host would hold: what a link could turn into a prompt.
KEY = "fernet-key-SXRoYXNiZWVuc2VjcmV0c2luY2UxOTk5Cg=="
# The classic "billion laughs": 433 bytes that PyYAML shares as references while loading, and
# that every later walk over the mapping expands into 10**9 strings (3.8 GB, then MemoryError).
BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


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
    (folder / "fernet.key").write_text(KEY)
    (folder / "fernet.key").chmod(0o600)
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


def import_refusing_cron_git(
    actor: Actor, source: Path, expected: str, status: Status = Status.REFUSED
) -> None:
    with deadline():
        report = import_directory(source, actor)
    assert [(r.name, r.status) for r in report.agents] == [
        ("cron-git", status),
        ("weekly-report", Status.CREATED),
    ]
    problems = report.agents[0].problems
    assert any(expected in problem for problem in problems), problems
    assert list(Agent.objects.values_list("name", flat=True)) == ["weekly-report"]
    assert not AuditEntry.objects.filter(object_name="cron-git").exists()
    assert not Agent.objects.filter(prompt__contains=SECRET).exists()
    assert not Agent.objects.filter(prompt__contains=KEY).exists()


def test_a_prompt_that_is_a_symlink_to_the_key_file_is_refused(actor, source, outside):
    prompt = replace(source / "agents/cron-git/CLAUDE.md")
    prompt.symlink_to(outside / "fernet.key")
    import_refusing_cron_git(
        actor, source, f"{prompt}: the file is a symbolic link to {outside / 'fernet.key'}; "
    )


def test_an_agent_yaml_that_is_a_symlink_out_of_the_folder_is_refused(actor, source, outside):
    agent_yaml = replace(source / "agents/cron-git/agent.yaml")
    agent_yaml.symlink_to(outside / "cron-git/agent.yaml")
    import_refusing_cron_git(actor, source, f"{agent_yaml}: the file is a symbolic link to ")


def test_a_prompt_that_is_a_symlink_to_a_device_is_refused(actor, source):
    (replace(source / "agents/cron-git/CLAUDE.md")).symlink_to("/dev/zero")
    import_refusing_cron_git(actor, source, "CLAUDE.md: the file is a symbolic link to /dev/zero")


def test_a_prompt_that_is_a_hard_link_to_the_key_file_is_refused(actor, source, outside):
    prompt = replace(source / "agents/cron-git/CLAUDE.md")
    os.link(outside / "fernet.key", prompt)
    import_refusing_cron_git(
        actor, source, f"{prompt}: the file is a hard link (one file with 2 names"
    )
    assert (outside / "fernet.key").read_text() == KEY


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
    import_refusing_cron_git(actor, source, "is larger than the 1.0 MB an import reads (200.0 MB)")


def test_an_agent_yaml_over_its_bound_is_refused_without_parsing_it(actor, source):
    agent_yaml = source / "agents/cron-git/agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text() + "# padding\n" * 30_000)
    import_refusing_cron_git(
        actor, source, f"{agent_yaml}: the file is larger than the 256 KB an import reads"
    )


def test_an_agent_folder_that_is_a_symlink_out_of_the_folder_is_refused(actor, source, outside):
    shutil.rmtree(source / "agents/cron-git")
    (source / "agents/cron-git").symlink_to(outside / "cron-git")
    import_refusing_cron_git(
        actor,
        source,
        f"{source / 'agents/cron-git'}: the folder is a symbolic link to {outside / 'cron-git'}",
    )


def test_an_agents_folder_that_is_a_symlink_out_of_the_folder_is_refused(actor, source, outside):
    shutil.move(source / "agents", outside / "agents")
    (source / "agents").symlink_to(outside / "agents")
    with pytest.raises(LegacyError, match="the agents/ folder is a symbolic link to "):
        import_directory(source, actor)
    assert not Agent.objects.exists()


def test_a_prompt_that_is_a_symlink_inside_the_folder_is_refused_too(actor, source):
    # Inside or out, a link lets the folder's author choose what is read; nothing is followed.
    prompt = replace(source / "agents/cron-git/CLAUDE.md")
    prompt.symlink_to("../weekly-report/CLAUDE.md")
    import_refusing_cron_git(
        actor, source, f"{prompt}: the file is a symbolic link to ../weekly-report/CLAUDE.md"
    )


def test_an_agent_folder_that_is_a_symlink_inside_the_folder_is_refused_too(actor, source):
    (source / "agents/.real-cron-git").mkdir()
    for name in ("agent.yaml", "CLAUDE.md"):
        shutil.move(source / "agents/cron-git" / name, source / "agents/.real-cron-git" / name)
    (source / "agents/cron-git").rmdir()
    (source / "agents/cron-git").symlink_to(".real-cron-git")
    import_refusing_cron_git(
        actor, source, f"{source / 'agents/cron-git'}: the folder is a symbolic link to "
    )


def test_a_fifo_in_the_agents_folder_is_passed_over_without_opening_it(actor, source):
    os.mkfifo(source / "agents/pipe")
    with deadline():
        report = import_directory(source, actor)
    assert [(r.name, r.status) for r in report.agents] == [
        ("cron-git", Status.CREATED),
        ("weekly-report", Status.CREATED),
    ]
    assert f"{source / 'agents/pipe'}: ignored, not an agent folder" in report.notices


def test_a_billion_laughs_agent_yaml_is_refused_before_it_expands(actor, source):
    agent_yaml = source / "agents/cron-git/agent.yaml"
    agent_yaml.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 500
    import_refusing_cron_git(
        actor,
        source,
        f"{agent_yaml}: line 1, column 4: YAML anchors and aliases are not accepted (&a)",
    )


def test_an_agent_yaml_with_one_alias_is_refused_naming_the_file(actor, source):
    agent_yaml = source / "agents/cron-git/agent.yaml"
    text = agent_yaml.read_text().replace("model: claude-sonnet-4-5", "model: &m claude-sonnet-4-5")
    agent_yaml.write_text(text + "description2: *m\n")
    import_refusing_cron_git(actor, source, f"{agent_yaml}: line 9, column 8: YAML anchors")


def test_an_agent_yaml_nested_thousands_deep_is_refused_naming_the_file(actor, source):
    agent_yaml = source / "agents/cron-git/agent.yaml"
    agent_yaml.write_text("name: cron-git\nextra: " + "[" * 5000 + "]" * 5000 + "\n")
    import_refusing_cron_git(
        actor,
        source,
        f"{agent_yaml}: line 2, column 39: nested more than 32 levels deep",
    )


def test_an_agent_yaml_giving_a_key_twice_fails_rather_than_being_refused(actor, source):
    # Read and parsed, and wrong: the file's fault, not a shape the import will not read.
    agent_yaml = source / "agents/cron-git/agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text() + "max_turns: 80\n")
    import_refusing_cron_git(actor, source, "found the key 'max_turns' twice", Status.FAILED)


def test_the_agent_yaml_codec_refuses_anchors_and_aliases_for_every_reader():
    # The one loader of agent.yaml text (an import, a catalogue template, any later form).
    with pytest.raises(config.ConfigError) as refused:
        config.load_yaml(BILLION_LAUGHS)
    assert refused.value.problems == [
        "line 1, column 4: YAML anchors and aliases are not accepted (&a); write each value out"
    ]
    with pytest.raises(config.ConfigError, match=r"aliases are not accepted \(\*x\)"):
        config.load_yaml("a: *x\n")
    assert config.load_yaml("a: {<<: {b: 1}, c: 2}\n") == {"a": {"b": 1, "c": 2}}
    with pytest.raises(config.ConfigError, match="longer than the 256 KB an agent.yaml may be"):
        config.load_yaml("# padding\n" * 30_000)


def test_a_binary_agent_yaml_is_refused_as_binary(actor, source):
    agent_yaml = source / "agents/cron-git/agent.yaml"
    agent_yaml.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    import_refusing_cron_git(
        actor, source, f"{agent_yaml}: the file is a binary file, not text (it holds NUL bytes)"
    )


def test_a_prompt_of_valid_utf8_with_nul_characters_is_refused_as_binary(actor, source):
    prompt = source / "agents/cron-git/CLAUDE.md"
    prompt.write_bytes(b"Commit the notes.\x00\x00\x00")
    import_refusing_cron_git(
        actor, source, f"{prompt}: the file is a binary file, not text (it holds NUL characters)"
    )


def test_a_latin_1_prompt_is_refused_saying_to_save_it_as_utf8(actor, source):
    prompt = source / "agents/cron-git/CLAUDE.md"
    prompt.write_bytes("Résumé des notes".encode("latin-1"))
    import_refusing_cron_git(
        actor,
        source,
        f"{prompt}: the file is not UTF-8 text (invalid continuation byte at byte 1); "
        "save it as UTF-8",
    )


def test_cronos_import_names_the_file_and_imports_the_rest(actor, source, outside):
    (replace(source / "agents/cron-git/CLAUDE.md")).symlink_to(outside / "secret.md")
    out = StringIO()
    with (
        deadline(),
        pytest.raises(CommandError, match=r"1 agent\(s\) not imported: 1 refused \(cron-git\)"),
    ):
        call_command("cronos_import", str(source), "--user", "ana", stdout=out)
    text = out.getvalue()
    assert "refused         cron-git\n" in text
    assert "CLAUDE.md: the file is a symbolic link to " in text
    # The runs of the refused agent say why they are not imported.
    assert "its folder agents/cron-git was not imported" in text
    assert SECRET not in text
