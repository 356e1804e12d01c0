"""The agent form's triggers (DESIGN.md §7.7, §7.8): upstream agents as lines (`NAME`, or
`NAME on=failure manual=no`) with all|any, the conditions builder's rows, the file watch's
fields; what is posted becomes the JSON the agent keeps, a refused form comes back with the
input and the errors where they belong, and the agent page says it all in words."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import QueryDict
from django.urls import reverse

from agents.forms import (
    AgentForm,
    ConditionRow,
    dependency_line,
    parse_dependency_lines,
)
from agents.models import Agent
from tests.agents.test_views import as_user, form_data, page
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

CONDITION_INPUTS = ("kind", "path", "pattern", "since", "command", "timeout", "agent", "within")


def edit_url(name: str) -> str:
    return reverse("agents:edit", args=[name])


def opened_form(client, name: str, **changes) -> dict:
    """The edit form as a browser would post it: drawn now, with these changes."""
    return form_data(page(client, edit_url(name)), edit_url(name), **changes)


def condition_rows(*rows: dict) -> dict:
    """The builder's inputs for these rows (each row names some inputs; the rest empty), with
    the spare row the page always adds."""
    rows = (*rows, {})
    return {f"conditions_{key}": [row.get(key, "") for row in rows] for key in CONDITION_INPUTS}


def errors_of(html: str, field: str) -> str:
    match = re.search(rf'<div class="field field-{field}[^"]*">(.*?)</div>\s*</div>', html, re.S)
    assert match, field
    block = match.group(1)
    found = re.search(r'<div class="error">(.*?)</div>', block + "</div>", re.S)
    return re.sub(r"<[^>]+>", " ", found.group(1)) if found else ""


def post(client, name: str, data: dict):
    return client.post(edit_url(name), data)


# --- Upstream agents as lines ---------------------------------------------------------------------


def test_lines_become_items_and_plain_names_stay_plain():
    text = (
        "cron-git\n\n# after the tests fail:\nnightly-tests on=failure manual=no\nbackup on=done\n"
    )

    items = parse_dependency_lines(text)

    assert items == [
        "cron-git",
        {"agent": "nightly-tests", "on": "failure", "manual": False},
        {"agent": "backup", "on": "done"},
    ]
    assert [dependency_line(item) for item in items] == [
        "cron-git",
        "nightly-tests on=failure manual=no",
        "backup on=done",
    ]
    # Defaults written out are the plain name; manual=yes is the default.
    assert parse_dependency_lines("a on=success manual=yes\nb manual=false") == [
        "a",
        {"agent": "b", "on": "success", "manual": False},
    ]


def test_wrong_lines_are_refused_each_named_by_its_number():
    with pytest.raises(ValidationError) as caught:
        parse_dependency_lines("ok\nbad! on=done\nx on=sometimes\ny when=daily manual=maybe")

    assert caught.value.messages == [
        "line 2: 'bad!' is not an agent name.",
        "line 3: on is success, failure, done, not 'sometimes'.",
        "line 4: 'when=daily' is not an option (after the name: on=success|failure|done and "
        "manual=yes|no); manual is yes or no, not 'maybe'.",
    ]


def test_the_edit_form_saves_upstreams_and_the_mode_and_the_page_says_them(client, editor):
    make_agent("cron-git")
    make_agent("nightly-tests")
    make_agent("report")
    as_user(client, editor)

    response = post(
        client,
        "report",
        opened_form(
            client,
            "report",
            depends_on="cron-git\nnightly-tests on=failure manual=no\n",
            dependency_mode="any",
        ),
    )

    assert response.status_code == 302
    agent = Agent.objects.get(name="report")
    assert agent.depends_on == [
        "cron-git",
        {"agent": "nightly-tests", "on": "failure", "manual": False},
    ]
    assert agent.dependency_mode == "any"
    html = page(client, reverse("agents:detail", args=["report"]))
    assert "<li>after cron-git (on success)</li>" in html
    assert "<li>after nightly-tests (on failure; not after runs started by hand)</li>" in html
    assert "After any upstream agent" in html
    # Drawn again as the lines they were typed as.
    edit = page(client, edit_url("report"))
    assert "cron-git\nnightly-tests on=failure manual=no</textarea>" in edit


def test_a_wrong_line_comes_back_with_the_text_typed_and_saves_nothing(client, editor):
    make_agent("report", depends_on=["cron-git"])
    as_user(client, editor)
    typed = "cron-git\nnightly-tests on=sometimes"

    response = post(client, "report", opened_form(client, "report", depends_on=typed))

    assert response.status_code == 200
    html = response.content.decode()
    assert "line 2: on is success, failure, done, not &#x27;sometimes&#x27;." in html
    assert f">\n{typed}</textarea>" in html
    assert Agent.objects.get(name="report").depends_on == ["cron-git"]


def test_a_loop_is_refused_on_the_form_with_its_path(client, editor):
    make_agent("a", depends_on=["b"])
    make_agent("b")
    as_user(client, editor)

    response = post(client, "b", opened_form(client, "b", depends_on="a"))

    assert response.status_code == 200
    assert "these upstreams make a loop: b → a → b" in errors_of(
        response.content.decode(), "depends_on"
    )
    assert Agent.objects.get(name="b").depends_on == []


def test_an_unchanged_form_keeps_a_stored_spelling_and_makes_no_version(client, editor):
    agent = make_agent(
        "report",
        depends_on=[{"agent": "cron-git", "on": "success", "manual": True}],
        conditions=[{"repo_has_changes": {}}, {"command_succeeds": {"command": "true"}}],
        file_watch={"paths": ["src"], "polling": False, "debounce_ms": 1600},
    )
    as_user(client, editor)

    response = post(client, "report", opened_form(client, "report"))

    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.history.count() == 1
    assert agent.depends_on == [{"agent": "cron-git", "on": "success", "manual": True}]
    assert agent.conditions == [{"repo_has_changes": {}}, {"command_succeeds": {"command": "true"}}]
    assert agent.file_watch == {"paths": ["src"], "polling": False, "debounce_ms": 1600}


def test_a_post_that_predates_the_new_fields_keeps_their_values(client, editor):
    agent = make_agent(
        "report",
        depends_on=["cron-git", "backup"],
        dependency_mode="any",
        conditions=[{"path_exists": "data"}],
        file_watch={"paths": ["src"]},
    )
    as_user(client, editor)
    data = opened_form(client, "report", description="new words")
    for name in list(data):
        if name == "dependency_mode" or name.startswith(("conditions_", "watch_")):
            del data[name]

    response = post(client, "report", data)

    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.description == "new words"
    assert agent.dependency_mode == "any"
    assert agent.conditions == [{"path_exists": "data"}]
    assert agent.file_watch == {"paths": ["src"]}


def test_an_empty_dependency_mode_keeps_the_agents_own():
    agent = make_agent("report", dependency_mode="any")
    data = QueryDict(mutable=True)
    data.update({"name": "report", "runner": "command", "command": "echo", "working_dir": "/tmp"})
    data["dependency_mode"] = ""
    form = AgentForm(data, instance=agent)

    form.is_valid()

    assert "dependency_mode" not in form.errors
    assert form.cleaned_data["dependency_mode"] == "any"


# --- The conditions builder -------------------------------------------------------------------


def test_the_builders_rows_become_the_conditions_in_order(client, editor):
    make_agent("report")
    as_user(client, editor)
    rows = condition_rows(
        {"kind": "path_exists", "path": " data/input.csv "},
        {"kind": "glob_nonempty", "pattern": "inbox/*.json", "path": "left from another kind"},
        {"kind": "repo_has_changes"},
        {"kind": "repo_has_changes", "since": "origin/main"},
        {"kind": "command_succeeds", "command": "test -s report.txt", "timeout": "10"},
        {"kind": "command_succeeds", "command": "make check"},
        {"kind": "upstream_succeeded", "agent": "nightly-tests", "within": "24h"},
    )

    response = post(client, "report", {**opened_form(client, "report"), **rows})

    assert response.status_code == 302
    assert Agent.objects.get(name="report").conditions == [
        {"path_exists": "data/input.csv"},
        {"glob_nonempty": "inbox/*.json"},
        {"repo_has_changes": {"since": "last_success"}},
        {"repo_has_changes": {"since": "origin/main"}},
        {"command_succeeds": {"command": "test -s report.txt", "timeout_seconds": 10}},
        {"command_succeeds": {"command": "make check"}},
        {"upstream_succeeded": {"agent": "nightly-tests", "within": "24h"}},
    ]
    html = page(client, reverse("agents:detail", args=["report"]))
    assert "<li>data/input.csv exists in the working directory.</li>" in html
    assert "<li>nightly-tests has succeeded in the last 24 hours.</li>" in html


def test_the_edit_page_draws_a_row_per_condition_then_a_spare_one(client, editor):
    make_agent(
        "report",
        conditions=[
            {"path_exists": "data"},
            {"command_succeeds": {"command": "true", "timeout_seconds": 5}},
        ],
    )
    as_user(client, editor)

    data = opened_form(client, "report")

    assert data["conditions_kind"] == ["path_exists", "command_succeeds", ""]
    assert data["conditions_path"] == ["data", "", ""]
    assert data["conditions_command"] == ["", "true", ""]
    assert data["conditions_timeout"] == ["", "5", ""]
    assert data["conditions_since"] == ["", "", ""]  # only each kind's own inputs are filled


def test_choosing_no_kind_removes_a_condition(client, editor):
    make_agent("report", conditions=[{"path_exists": "data"}, {"glob_nonempty": "*.csv"}])
    as_user(client, editor)
    data = opened_form(client, "report")
    data["conditions_kind"] = ["", "glob_nonempty", ""]
    data["conditions_path"] = ["", "", ""]

    assert post(client, "report", data).status_code == 302
    assert Agent.objects.get(name="report").conditions == [{"glob_nonempty": "*.csv"}]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"kind": "path_exists"}, "condition 1 (path_exists): give the path."),
        (
            {"kind": "command_succeeds", "command": "true", "timeout": "soon"},
            "condition 1 (command_succeeds): the timeout is a whole number of seconds.",
        ),
        (
            {"kind": "upstream_succeeded", "agent": "x"},
            "condition 1 (upstream_succeeded): give the window (today, or &lt;N&gt;m",
        ),
        (
            {"path": "typed without a kind"},
            "condition 1: choose its kind, or clear its fields to remove it.",
        ),
        (
            {"kind": "upstream_succeeded", "agent": "x", "within": "yesterday"},
            "item 1 (upstream_succeeded): within is &#x27;yesterday&#x27;",
        ),
        (
            {"kind": "command_succeeds", "command": "true", "timeout": "7200"},
            "item 1 (command_succeeds): timeout_seconds is 7200",
        ),
    ],
)
def test_a_wrong_row_comes_back_as_typed_with_its_error_and_saves_nothing(
    client, editor, row, error
):
    make_agent("report")
    as_user(client, editor)

    response = post(client, "report", {**opened_form(client, "report"), **condition_rows(row)})

    assert response.status_code == 200
    html = response.content.decode()
    assert error in errors_of(html, "conditions")
    drawn = form_data(html, edit_url("report"))
    for key, value in row.items():
        assert drawn[f"conditions_{key}"][0] == value
    assert Agent.objects.get(name="report").conditions == []


def test_a_stored_condition_is_drawn_as_its_row():
    assert ConditionRow.of({"repo_has_changes": None}) == ConditionRow(
        "repo_has_changes", since="last_success"
    )
    assert ConditionRow.of({"command_succeeds": {"command": "x", "timeout_seconds": 30}}) == (
        ConditionRow("command_succeeds", command="x")
    )
    assert ConditionRow.of({"not": 1, "one": 2}) == ConditionRow()


# --- The file watch ---------------------------------------------------------------------------


def test_the_file_watch_fields_become_the_agents_file_watch(client, editor):
    make_agent("report")
    as_user(client, editor)
    data = opened_form(
        client,
        "report",
        watch_paths="src\n/srv/inbox\n",
        watch_patterns="*.py",
        watch_ignore="build/",
        watch_debounce_ms="400",
        watch_settle_seconds="0.5",
        watch_polling="on",
    )

    assert post(client, "report", data).status_code == 302

    agent = Agent.objects.get(name="report")
    assert agent.file_watch == {
        "paths": ["src", "/srv/inbox"],
        "patterns": ["*.py"],
        "ignore": ["build/"],
        "debounce_ms": 400,
        "settle_seconds": 0.5,
        "polling": True,
    }
    html = page(client, reverse("agents:detail", args=["report"]))
    assert "Watches src, /srv/inbox" in html
    assert "grouped for 400 ms; the run starts 0.5 s after the last change" in html
    assert "polling" in html
    # Cleared, there is no watch.
    data = opened_form(client, "report")
    data.update(watch_paths="", watch_patterns="", watch_ignore="")
    data.update(watch_debounce_ms="", watch_settle_seconds="")
    data.pop("watch_polling")
    assert post(client, "report", data).status_code == 302
    assert Agent.objects.get(name="report").file_watch == {}


@pytest.mark.parametrize(
    ("fields", "field", "error"),
    [
        (
            {"watch_paths": "src", "watch_debounce_ms": "5"},
            "watch_debounce_ms",
            "debounce_ms must be between 50 and 60000 (milliseconds), not 5",
        ),
        (
            {"watch_patterns": "*.py"},
            "watch_paths",
            "paths is required: the files or folders to watch, absolute or relative to the "
            "working directory (or clear the other file watch fields, for no file watch)",
        ),
        (
            {"watch_paths": "src\nsrc/"},
            "watch_paths",
            "line 2: &#x27;src/&#x27; is given twice (also paths[0])",
        ),
        (
            {"watch_paths": f"docs\n{settings.DATA_DIR}/db"},
            "watch_paths",
            "line 2: ",
        ),
    ],
)
def test_a_wrong_file_watch_is_said_on_its_field_and_saves_nothing(
    client, editor, fields, field, error
):
    make_agent("report")
    as_user(client, editor)

    response = post(client, "report", opened_form(client, "report", **fields))

    assert response.status_code == 200
    html = response.content.decode()
    assert error in errors_of(html, field)
    for name, value in fields.items():
        assert form_data(html, edit_url("report"))[name] == value
    assert Agent.objects.get(name="report").file_watch == {}


# --- The admin and the wizard -----------------------------------------------------------------


def test_the_admin_edits_the_triggers_with_the_same_fields(client, admin_user):
    agent = make_agent("report", conditions=[{"glob_nonempty": "*.csv"}])
    make_agent("cron-git")
    client.force_login(admin_user)
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    html = page(client, url)
    assert "agentform.js" in html and "agentform.css" in html
    assert '<option value="glob_nonempty" selected>' in html

    data = form_data(html, "")  # the admin's form posts to its own address
    data.update(
        depends_on="cron-git on=done",
        dependency_mode="any",
        watch_paths="inbox",
        **condition_rows({"kind": "path_exists", "path": "ready"}),
    )
    response = client.post(url, data)

    assert response.status_code == 302, response.content.decode()[-3000:]
    agent.refresh_from_db()
    assert agent.depends_on == [{"agent": "cron-git", "on": "done"}]
    assert agent.dependency_mode == "any"
    assert agent.conditions == [{"path_exists": "ready"}]
    assert agent.file_watch == {"paths": ["inbox"]}


def test_the_wizard_keeps_the_templates_triggers_and_does_not_ask_for_them(client, editor):
    as_user(client, editor)
    new_url = reverse("agents:new")
    step2 = page(client, new_url, template="report")
    assert "conditions_kind" not in step2 and "watch_paths" not in step2

    created = form_data(step2, new_url, name="weekly", working_dir="/tmp")

    assert client.post(new_url, created).status_code == 302
    agent = Agent.objects.get(name="weekly")
    assert (agent.depends_on, agent.conditions, agent.file_watch) == ([], [], {})
