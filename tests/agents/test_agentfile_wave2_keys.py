"""agent.yaml keys of dependencies, conditions and the file watch (DESIGN.md §7.8, §7.12):
`depends_on` items as a plain name or {agent, on, manual} (plain names stay plain, so the
prototype's `[cron-git]` round-trips), `dependency_mode`, `conditions` and `triggers.files`
beside `triggers.webhooks`; lists of mappings checked with a JSON schema, problems naming the
file and the item; an import that would close a loop refused with its path, writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from jsonschema import Draft202012Validator

from agents import agentfile as config
from agents.dependencies import Edge, edges
from agents.legacy import Status, export_directory, import_directory
from agents.models import Agent, WebhookTrigger
from agents.triggers import create_trigger
from agents.versions import snapshot
from audit.actor import Actor
from audit.models import AuditEntry
from tests.factories import make_agent

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-cronos"
SYSTEM = Actor.system()

BASE = {"name": "downstream", "working_dir": "/tmp", "command": "echo hello"}


def parse(mapping: dict, **kwargs) -> dict:
    return config.parse(mapping, prompt="", default_name=mapping.get("name", ""), **kwargs).fields


def problems_of(**keys) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        parse({**BASE, **keys})
    return caught.value.problems


def round_trip(**keys) -> tuple[dict, dict]:
    """(the fields the file imports as, the mapping export writes for them)."""
    mapping = {**BASE, **keys}
    fields = parse(mapping)
    return fields, config.to_mapping(fields)


@pytest.fixture
def actor(django_user_model) -> Actor:
    django_user_model.objects.create_superuser("ana", "ana@example.com", "pw")
    return Actor.cli("ana")


def write_agent(root: Path, name: str, body: str = "") -> Path:
    folder = root / "agents" / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "agent.yaml"
    path.write_text(
        f"name: {name}\nenabled: false\nschedule: '0 */4 * * *'\nworking_dir: /tmp\n"
        f"command: echo hello\n{body}"
    )
    (folder / "CLAUDE.md").write_text("")
    return path


def exported(agent: Agent, tmp_path: Path) -> tuple[str, dict]:
    export_directory(tmp_path / "out", SYSTEM, [agent])
    text = (tmp_path / "out" / "agents" / agent.name / "agent.yaml").read_text()
    return text, yaml.safe_load(text)


def database() -> tuple:
    """What an import may write: agents with every field, their versions, audit entries."""
    return (
        sorted((a.name, json.dumps(snapshot(a), sort_keys=True)) for a in Agent.objects.all()),
        Agent.history.count(),
        AuditEntry.objects.count(),
    )


# --- depends_on -------------------------------------------------------------------------------


def test_the_prototypes_plain_name_is_an_on_success_edge_and_is_written_back_plain():
    fields, written = round_trip(depends_on=["cron-git"])

    assert fields["depends_on"] == ["cron-git"]
    assert edges(fields["depends_on"]) == [Edge("cron-git", on="success", manual=True)]
    assert written["depends_on"] == ["cron-git"]
    assert config.dump_yaml(written).count("depends_on: [cron-git]\n") == 1


@pytest.mark.django_db
def test_the_prototypes_directory_exports_its_depends_on_exactly_as_it_was_written(actor, tmp_path):
    import_directory(LEGACY, actor)
    agent = Agent.objects.get(name="weekly-report")

    text, mapping = exported(agent, tmp_path)

    assert edges(agent.depends_on) == [Edge("cron-git")]
    assert "\ndepends_on: [cron-git]\n" in text
    original = yaml.safe_load((LEGACY / "agents/weekly-report/agent.yaml").read_text())
    assert mapping == original
    # And back: the export imports as the same agent, with no new version.
    report = import_directory(tmp_path / "out", actor)
    assert {r.name: r.status for r in report.agents}["weekly-report"] == Status.UNCHANGED


def test_mappings_say_on_and_manual_and_plain_names_stay_plain():
    items = [
        "cron-git",
        {"agent": "nightly-tests", "on": "failure", "manual": False},
        {"agent": "backup", "on": "done"},
    ]
    fields, written = round_trip(depends_on=items, dependency_mode="any")

    assert edges(fields["depends_on"]) == [
        Edge("cron-git"),
        Edge("nightly-tests", on="failure", manual=False),
        Edge("backup", on="done"),
    ]
    assert fields["dependency_mode"] == "any"
    assert written["depends_on"] == items
    assert written["dependency_mode"] == "any"
    assert list(written)[-2:] == ["depends_on", "dependency_mode"]
    assert parse(written) == fields


def test_a_mapping_of_defaults_is_stored_as_a_plain_name_and_written_back_as_the_file_had_it():
    spelled = [{"agent": "cron-git"}, {"agent": "backup", "on": "success", "manual": True}]

    fields, written = round_trip(depends_on=spelled)

    assert fields["depends_on"] == ["cron-git", "backup"]
    assert written["depends_on"] == spelled  # the file's own spelling, as for any key
    plain = config.parse({**BASE, "depends_on": spelled}, remember_spelling=False).fields
    assert config.to_mapping(plain)["depends_on"] == ["cron-git", "backup"]


def test_an_edge_stored_with_its_defaults_spelled_out_is_exported_as_a_plain_name():
    # As the API or an older save may have stored it.
    fields = parse(BASE)
    fields["depends_on"] = [
        {"agent": "cron-git", "on": "success", "manual": True},
        {"agent": "backup", "on": "failure", "manual": True},
    ]

    written = config.to_mapping(fields)

    assert written["depends_on"] == ["cron-git", {"agent": "backup", "on": "failure"}]


def test_dependency_mode_is_written_only_when_it_is_not_all():
    fields, written = round_trip(depends_on=["a", "b"])
    assert fields["dependency_mode"] == "all"
    assert "dependency_mode" not in written
    assert round_trip(dependency_mode="all")[1]["dependency_mode"] == "all"  # as spelled
    assert problems_of(dependency_mode="some") == [
        "dependency_mode: expected one of: all, any, got 'some' (text)"
    ]


@pytest.mark.parametrize(
    ("depends_on", "problems"),
    [
        (
            "cron-git",
            [
                "depends_on: expected a list of text items, got 'cron-git' (text): each item "
                "is an agent's name, or a mapping {agent, on, manual}"
            ],
        ),
        (
            ["ok", 5],
            [
                "depends_on[1]: expected an agent's name or a mapping {agent, on, manual}, "
                "got 5 (a number)"
            ],
        ),
        (
            ["has space"],
            ["depends_on[0]: 'has space' is not an agent name (letters, digits, - and _)"],
        ),
        (
            [{"on": "failure"}],
            ["depends_on[0]: agent is required (the keys are: agent, on, manual)"],
        ),
        (
            ["a", {"agent": "b", "on": "sometimes"}],
            ["depends_on[1].on: 'sometimes' (text) is not one of success, failure, done"],
        ),
        (
            [{"agent": "b", "manual": "no"}],
            ["depends_on[0].manual: expected true or false, got 'no' (text)"],
        ),
        (
            [{"agent": "b", "when": "daily"}],
            ["depends_on[0]: unknown key 'when' (the keys are: agent, on, manual)"],
        ),
        (
            [{"agent": "b c"}, {"agent": 7}],
            [
                "depends_on[0].agent: 'b c' is not an agent name (letters, digits, - and _)",
                "depends_on[1].agent: expected text, got 7 (a number)",
            ],
        ),
        ([f"a{i}" for i in range(51)], ["depends_on: at most 50 upstream agents"]),
        (["downstream"], ["depends_on: An agent cannot depend on itself"]),
        (["a", {"agent": "a", "on": "failure"}], ["depends_on: a is listed twice"]),
    ],
)
def test_a_wrong_depends_on_is_refused_naming_its_item(depends_on, problems):
    assert problems_of(depends_on=depends_on) == problems


def test_the_depends_on_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(config.DEPENDS_ON_SCHEMA)


# --- conditions ---------------------------------------------------------------------------------

EVERY_CONDITION = [
    {"path_exists": "data/input.csv"},
    {"glob_nonempty": "inbox/**/*.json"},
    {"repo_has_changes": {"since": "origin/main"}},
    {"repo_has_changes": {}},
    {"command_succeeds": {"command": "test -s report.txt", "timeout_seconds": 10}},
    {"upstream_succeeded": {"agent": "nightly-tests", "within": "today"}},
]


def test_conditions_are_stored_and_written_back_as_given():
    fields, written = round_trip(conditions=EVERY_CONDITION)

    assert fields["conditions"] == EVERY_CONDITION
    assert written["conditions"] == EVERY_CONDITION
    assert parse(written) == fields
    # After the dependencies, before the triggers.
    assert list(written)[-1] == "conditions"


def test_no_conditions_are_not_written():
    assert "conditions" not in round_trip()[1]
    assert round_trip(conditions=[])[1]["conditions"] == []  # as the file spelled it


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            {"path_exists": "a"},
            "conditions: must be a list of conditions, each a mapping with one key (its kind), "
            "got a mapping.",
        ),
        (
            [{"path_exists": "a"}, {"file_is_big": "a"}],
            "conditions: item 2: unknown kind 'file_is_big'; the kinds are path_exists, "
            "glob_nonempty, repo_has_changes, command_succeeds, upstream_succeeded.",
        ),
        (
            [{"command_succeeds": {"command": "true", "timeout_seconds": 0}}],
            "conditions: item 1 (command_succeeds): timeout_seconds is 0; it is between 1 and "
            "3600 seconds (default 30).",
        ),
        (
            [{"path_exists": "a"}, {"upstream_succeeded": {"agent": "x", "within": "soon"}}],
            "conditions: item 2 (upstream_succeeded): within is 'soon'; it is today, or <N>m, "
            "<N>h or <N>d (minutes, hours, days; for example 90m, 24h, 7d).",
        ),
    ],
)
def test_a_wrong_condition_is_refused_naming_its_item(value, problem):
    assert problems_of(conditions=value) == [problem]


def test_a_relative_condition_path_is_checked_against_the_working_directory():
    problems = problems_of(working_dir=str(settings.DATA_DIR), conditions=[{"path_exists": "db"}])
    assert len(problems) == 1
    assert problems[0].startswith("conditions: item 1 (path_exists): the path 'db' is inside")


# --- triggers.files -------------------------------------------------------------------------------

WATCH = {
    "paths": ["src", "/srv/inbox"],
    "patterns": ["*.py", "*.csv"],
    "ignore": ["build/"],
    "debounce_ms": 400,
    "settle_seconds": 2,
    "polling": True,
}


def test_the_file_watch_is_read_from_triggers_files_and_written_back_as_given():
    fields, written = round_trip(triggers={"files": WATCH})

    assert fields["file_watch"] == WATCH
    assert written["triggers"] == {"files": WATCH}
    assert parse(written) == fields


def test_no_file_watch_is_not_written():
    assert "triggers" not in round_trip()[1]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            ["src"],
            "triggers.files: expected a mapping (paths, patterns, ignore, debounce_ms, "
            "settle_seconds, polling) or nothing for no file watch, got a list",
        ),
        ({"paths": ["src"], "debounce_ms": 5}, "triggers.files: debounce_ms must be between"),
        ({"paths": ["src"], "recursive": True}, "triggers.files: 'recursive' is not a key"),
        ({"patterns": ["*.py"]}, "triggers.files: paths is required"),
        ({"paths": ["src", "src/"]}, "triggers.files: paths[1]: 'src/' is given twice"),
    ],
)
def test_a_wrong_file_watch_is_refused_naming_its_key(value, problem):
    problems = problems_of(triggers={"files": value})
    assert len(problems) == 1
    assert problems[0].startswith(problem)


@pytest.mark.django_db
def test_the_file_watch_is_written_beside_the_webhooks_and_both_import_back_unchanged(
    actor, tmp_path
):
    agent = make_agent("watched", file_watch={"paths": ["src"], "polling": True})
    create_trigger(agent, SYSTEM, name="on-push", auth=WebhookTrigger.Auth.GITHUB)

    text, mapping = exported(agent, tmp_path)

    assert mapping["triggers"] == {
        "webhooks": [{"name": "on-push", "auth": "github", "payload": "file"}],
        "files": {"paths": ["src"], "polling": True},
    }
    before = database()
    report = import_directory(tmp_path / "out", actor)
    assert [(r.name, r.status) for r in report.agents] == [("watched", Status.UNCHANGED)]
    assert database() == before


@pytest.mark.django_db
def test_an_imported_file_watch_beside_webhooks_makes_both(actor, tmp_path):
    write_agent(
        tmp_path,
        "watcher",
        "triggers:\n  webhooks:\n    - name: hook\n  files:\n    paths: [inbox]\n"
        "    settle_seconds: 0.5\n",
    )

    report = import_directory(tmp_path, actor)

    assert report.agents[0].status == Status.CREATED, report.lines()
    agent = Agent.objects.get(name="watcher")
    assert agent.file_watch == {"paths": ["inbox"], "settle_seconds": 0.5}
    assert list(agent.webhooks.values_list("name", flat=True)) == ["hook"]


@pytest.mark.django_db
def test_a_watched_path_in_cronos_own_folders_refuses_the_import_naming_the_key(actor, tmp_path):
    path = write_agent(
        tmp_path, "snoop", f"triggers:\n  files:\n    paths: ['{settings.DATA_DIR}']\n"
    )

    report = import_directory(tmp_path, actor)

    [problem] = report.agents[0].problems
    assert report.agents[0].status == Status.FAILED
    assert problem.startswith(f"{path}: triggers.files: paths[0]: ")
    assert "data directory" in problem
    assert not Agent.objects.filter(name="snoop").exists()


@pytest.mark.django_db
def test_keys_kept_as_unknown_before_cronos_read_them_are_never_exported(tmp_path):
    # An agent imported before these keys were read kept them in extra_config: the fields are
    # what export writes, so an old copy can never switch a watch or a condition on.
    agent = make_agent(
        "old-import",
        extra_config={
            "conditions": [{"path_exists": "x"}],
            "dependency_mode": "any",
            "triggers": {"files": {"paths": ["x"]}, "other": 1},
        },
    )

    _, mapping = exported(agent, tmp_path)

    assert "conditions" not in mapping and "dependency_mode" not in mapping
    assert mapping["triggers"] == {"other": 1}


# --- Loops and unknown upstreams on import ----------------------------------------------------------


@pytest.mark.django_db
def test_an_import_that_would_close_a_loop_is_refused_with_its_path_and_writes_nothing(
    actor, tmp_path
):
    make_agent("a", depends_on=["b"])
    make_agent("b", depends_on=[{"agent": "c", "on": "done"}], enabled=False)
    make_agent("c")
    path = write_agent(tmp_path, "c", "depends_on:\n  - {agent: a, on: failure}\n")
    before = database()

    report = import_directory(tmp_path, actor)

    [result] = report.agents
    assert result.status == Status.FAILED
    assert result.problems == [
        f"{path}: depends_on: these upstreams make a loop: c → b → a → c (disabled agents "
        "count: enabling one must never start a loop)."
    ]
    assert database() == before
    assert "failed          c" in "\n".join(report.lines())


@pytest.mark.django_db
@pytest.mark.parametrize("dry_run", [True, False])
def test_two_agents_of_one_directory_that_make_a_loop_refuse_the_second_dry_run_or_not(
    actor, tmp_path, dry_run
):
    write_agent(tmp_path, "first", "depends_on: [second]\n")
    second = write_agent(tmp_path, "second", "depends_on: [first]\n")

    report = import_directory(tmp_path, actor, dry_run=dry_run)

    assert [(r.name, r.status) for r in report.agents] == [
        ("first", Status.CREATED),
        ("second", Status.FAILED),
    ]
    assert report.agents[1].problems == [
        f"{second}: depends_on: these upstreams make a loop: second → first → second "
        "(disabled agents count: enabling one must never start a loop)."
    ]
    expected = [] if dry_run else ["first"]
    assert list(Agent.objects.values_list("name", flat=True)) == expected


@pytest.mark.django_db
def test_an_upstream_in_neither_cronos_nor_the_directory_is_a_notice_whatever_its_item(
    actor, tmp_path
):
    path = write_agent(
        tmp_path, "lonely", "depends_on:\n  - {agent: nowhere, on: failure}\n  - elsewhere\n"
    )

    report = import_directory(tmp_path, actor)

    assert report.agents[0].status == Status.CREATED
    assert [n for n in report.agents[0].notices if "depends_on" in n] == [
        f"{path}: depends_on names 'nowhere', which is neither in Cronos nor in this directory",
        f"{path}: depends_on names 'elsewhere', which is neither in Cronos nor in this directory",
    ]
    assert Agent.objects.get(name="lonely").depends_on == [
        {"agent": "nowhere", "on": "failure"},
        "elsewhere",
    ]


def test_an_unquoted_on_key_is_the_text_on_and_export_quotes_it_for_every_yaml_reader():
    # YAML 1.1 (PyYAML) reads a plain `on` as true: as a key, agent.yaml reads it as its text.
    mapping = config.load_yaml("depends_on:\n  - {agent: a, on: failure, manual: no}\n")
    assert mapping == {"depends_on": [{"agent": "a", "on": "failure", "manual": False}]}

    written = config.dump_yaml(round_trip(**mapping)[1])

    assert "\n  'on': failure\n" in written
    assert yaml.safe_load(written)["depends_on"] == mapping["depends_on"]
    assert config.load_yaml(written)["depends_on"] == mapping["depends_on"]


def test_the_readmes_dependencies_example_is_a_valid_agent_yaml():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Dependencies") :]
    example = section[section.index("```yaml\n") + 8 : section.index("```\n")]

    fields = parse({**BASE, **config.load_yaml(example)})

    assert edges(fields["depends_on"]) == [
        Edge("cron-git"),
        Edge("nightly-tests", on="failure", manual=False),
    ]
    assert fields["dependency_mode"] == "any"
