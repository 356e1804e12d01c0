"""The rules of an agent's file watch (agents.watch; agent.yaml `triggers.files`): checked with
a JSON schema, then what a schema cannot say; every message names the key it is about."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError

from agents import watch
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor

pytestmark = pytest.mark.django_db


def agent(file_watch, working_dir: str = "/srv/app") -> Agent:
    return Agent(
        name="watcher",
        runner=Agent.Runner.COMMAND,
        command="true",
        working_dir=working_dir,
        file_watch=file_watch,
    )


def refused(file_watch, working_dir: str = "/srv/app") -> list[str]:
    with pytest.raises(ValidationError) as caught:
        agent(file_watch, working_dir).full_clean()
    return caught.value.message_dict["file_watch"]


def test_no_watch_and_a_full_watch_are_accepted():
    agent({}).full_clean()
    agent(
        {
            "paths": ["src", "/srv/inbox", "~/notes/today.md"],
            "patterns": ["*.py", "docs/**"],
            "ignore": ["build/", "*.tmp"],
            "debounce_ms": 50,
            "settle_seconds": 0.5,
            "polling": True,
        }
    ).full_clean()


def test_the_defaults_fill_what_a_watch_leaves_out():
    assert watch.settings_of({"paths": ["."]}) == {
        "paths": ["."],
        "patterns": [],
        "ignore": [],
        "debounce_ms": 1600,
        "settle_seconds": 5,
        "polling": False,
    }


def test_paths_are_required_and_unknown_keys_named():
    assert refused({"path": ["src"]}) == [
        "paths is required: the files or folders to watch, absolute or relative to the "
        "working directory",
        "'path' is not a key of a file watch (the keys are: paths, patterns, ignore, "
        "debounce_ms, settle_seconds, polling)",
    ]
    assert refused({"paths": []}) == ["paths needs at least one file or folder"]


@pytest.mark.parametrize(
    ("file_watch", "message"),
    [
        ({"paths": "src"}, "paths: expected a list, got 'src'"),
        ({"paths": ["src", 3]}, "paths[1]: expected text, got 3"),
        ({"paths": [""]}, "paths[0]: must not be empty"),
        ({"paths": ["."], "polling": "yes"}, "polling: expected true or false, got 'yes'"),
        ({"paths": ["."], "settle_seconds": True}, "settle_seconds: expected a number, got true"),
        ({"paths": ["."], "patterns": "*.py"}, "patterns: expected a list, got '*.py'"),
        (
            {"paths": ["."], "debounce_ms": 10},
            "debounce_ms must be between 50 and 60000 (milliseconds), not 10",
        ),
        (
            {"paths": ["."], "debounce_ms": 60001},
            "debounce_ms must be between 50 and 60000 (milliseconds), not 60001",
        ),
        (
            {"paths": ["."], "settle_seconds": -1},
            "settle_seconds must be between 0 and 3600 (seconds), not -1",
        ),
        (
            {"paths": ["."], "settle_seconds": 3601},
            "settle_seconds must be between 0 and 3600 (seconds), not 3601",
        ),
        ({"paths": ["src", "./src"]}, "paths[1]: './src' is given twice (also paths[0])"),
        ({"paths": [" src"]}, "paths[0]: ' src' starts or ends with a space; remove it"),
        (
            {"paths": ["C:\\notes"]},
            "paths[0]: 'C:\\notes' is a Windows path; give a path on this host, absolute or "
            "relative to the working directory",
        ),
        ({"paths": ["."], "ignore": ["  "]}, "ignore[0]: '  ' is not a path glob"),
        ("src", "expected a mapping (paths, patterns, ignore, debounce_ms, settle_seconds, "),
    ],
)
def test_a_wrong_watch_is_refused_naming_the_key(file_watch, message):
    messages = refused(file_watch)
    assert any(m.startswith(message) for m in messages), messages


def test_a_watched_path_inside_cronos_data_is_refused_absolute_or_relative():
    data = settings.DATA_DIR
    [absolute] = refused({"paths": [str(data / "cronos.sqlite3")]})
    assert absolute.startswith(f"paths[0]: '{data / 'cronos.sqlite3'}' is inside Cronos's data")
    [relative] = refused({"paths": ["../data"]}, working_dir=str(data.parent / "elsewhere"))
    assert relative.startswith(f"paths[0] ('../data'): '{data}' is inside Cronos's data")


def test_the_watch_is_checked_when_an_agent_is_saved():
    made = agent({"paths": ["."], "debounce_ms": 5})
    with pytest.raises(ValidationError) as caught:
        save_agent(made, Actor.system(), reason="a test")
    assert caught.value.message_dict["file_watch"] == [
        "debounce_ms must be between 50 and 60000 (milliseconds), not 5"
    ]
    made.file_watch = {"paths": ["."], "debounce_ms": 50}
    save_agent(made, Actor.system(), reason="a test")
    assert Agent.objects.get(name="watcher").file_watch == {"paths": ["."], "debounce_ms": 50}


def test_relative_paths_are_taken_from_the_working_directory():
    assert watch.watched_paths({"paths": ["src", "/srv/inbox", "../x"]}, "/srv/app") == [
        "/srv/app/src",
        "/srv/inbox",
        "/srv/x",
    ]


def test_watching_the_root_is_refused():
    [message] = refused({"paths": ["/"]})
    assert message.startswith("paths[0]: / is the whole file system")


def test_a_watched_path_that_contains_cronos_data_or_log_folder_is_refused(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "x" / "data"
    settings.CRONOS_LOG_DIR = tmp_path / "logs" / "cronos"
    settings.DATA_DIR.mkdir(parents=True)
    data = os.path.realpath(settings.DATA_DIR)
    [parent] = refused({"paths": [str(tmp_path / "x")]})
    assert parent == (
        f"paths[0]: '{tmp_path / 'x'}' contains Cronos's data folder ({data}), whose own writes "
        "would start runs; watch a folder beside it"
    )
    [grandparent] = refused({"paths": [".."]}, working_dir=str(tmp_path / "x" / "elsewhere"))
    assert grandparent.startswith("paths[0] ('..'): ") and "contains Cronos's data folder" in (
        grandparent
    )
    [logs] = refused({"paths": [str(tmp_path / "logs")]})
    assert "contains Cronos's log folder" in logs
    # An installation of its own, so that its parent holds nothing else of Cronos's (the real
    # one's parent may be /tmp, which holds the test's data folder too).
    settings.BASE_DIR = tmp_path / "install" / "cronos"
    settings.BASE_DIR.mkdir(parents=True)
    [install] = refused({"paths": [str(tmp_path / "install")]})
    assert "contains Cronos's installation" in install
    agent({"paths": [str(tmp_path / "x" / "beside")]}).full_clean()  # beside it: fine
