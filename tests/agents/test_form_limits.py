"""How large an agent's texts and lists may be (agents.limits): the same rule on every path (the
pages' form, the wizard, the admin, an import), an error that keeps what the person typed, a
styled page for a post too large to read, and a long prompt shown collapsed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from agents import limits
from agents.importfiles import MAX_PROMPT_BYTES
from agents.legacy import Status, import_directory
from agents.models import Agent
from audit.actor import Actor
from tests.agents.test_views import as_user, form_data, page
from tests.audit.test_roles import edit_form_data
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-cronos"
FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "bin" / "claude"


def edit(client, agent: Agent, **changes):
    url = reverse("agents:edit", args=[agent.name])
    return client.post(url, form_data(page(client, url), url, **changes))


# --- One rule on every path ---------------------------------------------------------------


def test_a_prompt_over_the_limit_is_refused_on_its_field_keeping_what_was_typed(client, editor):
    agent = make_agent(runner=Agent.Runner.CLAUDE, prompt="short", command="")
    as_user(client, editor)
    long = "Remember this.\n" * (limits.PROMPT_CHARS // 15 + 1)

    response = edit(client, agent, prompt=long)

    assert response.status_code == 200
    form = response.context["form"]
    # The form takes the text without its last newline, as it takes every prompt.
    assert form.errors["prompt"] == [
        f"The prompt is {len(long) - 1:,} characters long; the limit is 200,000. Move reference "
        "material into files in the working directory, which the agent reads when it needs them."
    ]
    assert form["prompt"].value() == long  # drawn back into the text area
    assert long in response.content.decode()
    assert Agent.objects.get().prompt == "short"


def test_a_prompt_at_the_limit_is_saved(client, editor):
    agent = make_agent(runner=Agent.Runner.CLAUDE, prompt="short", command="")
    as_user(client, editor)
    at_limit = "x" * limits.PROMPT_CHARS
    assert edit(client, agent, prompt=at_limit).status_code == 302
    assert Agent.objects.get().prompt == at_limit


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "description",
            "d" * 2_001,
            "The description is 2,001 characters long; the limit is 2,000",
        ),
        ("command", "c" * 10_001, "The command is 10,001 characters long; the limit is 10,000"),
        ("extra_args", "\n".join(["--x"] * 201), "201 arguments; at most 200."),
        ("allowed_tools", "\n".join(["t" * 1_000] * 21), "The tools are 21,000 characters long"),
        ("notify_emails", "\n".join(f"a{i}@example.com" for i in range(201)), "201 addresses"),
        (
            "plain_variables",
            "\n".join(f"V{i}=x" for i in range(101)),
            "101 variables; at most 100.",
        ),
        ("plain_variables", "BIG=" + "v" * 10_001, "BIG is 10,001 characters long; a value is"),
    ],
)
def test_each_text_and_list_has_a_limit_on_the_edit_page(client, editor, field, value, message):
    agent = make_agent()
    as_user(client, editor)
    response = edit(client, agent, **{field: value})
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert Agent.history.count() == 1


def test_a_long_secret_is_refused_naming_it_alone(client, editor):
    agent = make_agent()
    as_user(client, editor)
    value = "s3cr3t" * 2_000
    response = edit(client, agent, secret_variables=f"LONG_KEY={value}")
    errors = response.context["form"].errors["secret_variables"]
    assert errors == [
        "secret LONG_KEY is 12,000 characters long; a value is at most 10,000. Put longer "
        "content in a file in the working directory and give its path."
    ]
    assert value[:50].encode() not in response.content
    assert Agent.objects.get().variables == []


def test_the_wizard_keeps_the_same_limits(client, editor):
    make_agent("source")
    as_user(client, editor)
    new = reverse("agents:new")
    data = form_data(page(client, new, clone="source"), new, description="d" * 2_001)
    response = client.post(new, data)
    assert response.status_code == 200
    assert "The description is 2,001 characters long" in response.content.decode()
    assert response.context["form"]["description"].value() == "d" * 2_001
    assert not Agent.objects.filter(name="source-copy").exists()


def test_the_admin_keeps_the_same_limits(client, admin_user):
    agent = make_agent()
    client.force_login(admin_user)
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    response = client.post(url, edit_form_data(agent, description="d" * 2_001))
    assert response.status_code == 200
    assert "The description is 2,001 characters long" in response.content.decode()
    assert response.context["adminform"].form["description"].value() == "d" * 2_001
    assert Agent.objects.get().description == "cron-git agent"


def test_the_text_areas_have_no_maxlength_that_would_cut_a_paste_short(client, editor):
    # A browser cuts a paste at a maxlength silently; the server's error keeps the whole text.
    agent = make_agent()
    as_user(client, editor)
    html = page(client, reverse("agents:edit", args=[agent.name]))
    for name in ("description", "prompt", "command"):
        area = re.search(rf'<textarea name="{name}"[^>]*>', html)
        assert area is not None and "maxlength" not in area[0], name


def test_an_import_over_a_limit_is_refused_naming_the_file_and_the_limit(
    tmp_path, monkeypatch, settings, django_user_model
):
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    source = tmp_path / "source"
    shutil.copytree(LEGACY / "agents", source / "agents", copy_function=shutil.copyfile)
    prompt = source / "agents" / "weekly-report" / "CLAUDE.md"
    prompt.write_text("Summarise.\n" * 20_000)  # 220,000 characters, 215 KB: read, then refused
    django_user_model.objects.create_superuser("ana", "ana@example.com", "pw")

    report = import_directory(source, Actor.cli("ana"))

    refused = next(r for r in report.agents if r.name == "weekly-report")
    assert refused.status != Status.CREATED
    assert any(
        "The prompt is 220,000 characters long; the limit is 200,000" in p for p in refused.problems
    ), refused.problems
    assert not Agent.objects.filter(name="weekly-report").exists()


def test_the_import_reads_any_prompt_the_limit_allows():
    # A prompt at the limit, in 4-byte characters, is a file the import still reads: over the
    # limit, a person is told the limit, not a file size.
    assert MAX_PROMPT_BYTES >= 4 * limits.PROMPT_CHARS


# --- A post too large to read --------------------------------------------------------------


def test_a_post_too_large_to_read_gets_a_page_saying_so(client, editor, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000  # the site's limit, small for the test
    agent = make_agent()
    as_user(client, editor)
    url = reverse("agents:edit", args=[agent.name])
    data = form_data(page(client, url), url, prompt="x" * 150_000)

    response = client.post(url, data)

    assert response.status_code == 413
    html = response.content.decode()
    problem = html[html.index('<section class="card problem-page"') :]
    assert "too large" in problem and "Nothing was saved" in problem
    assert "0.2 MB" in problem and "0.1 MB" in problem  # what was sent, what is read
    assert "200,000 characters" in problem  # the prompt's limit, the likely cause
    assert "data-problem" in problem  # what an HTMX request shows (static/cronos.js)
    assert "<nav" in html and 'href="/runs/"' in html  # inside the site's frame
    assert Agent.objects.get().prompt == ""


def test_a_request_django_cannot_read_gets_the_sites_400_page(client, editor, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    as_user(client, editor)
    response = client.post(reverse("agents:bulk"), {f"f{i}": "x" for i in range(10)})
    assert response.status_code == 400
    assert "Too many fields" in response.content.decode()
    assert "<nav" in response.content.decode()


def test_the_largest_legitimate_form_fits_under_the_sites_upload_limit(settings):
    # Every text and list at its limit, in characters that take 4 bytes of UTF-8 and so 12 once
    # percent-encoded: the form must be read (and refused or saved), never cut off by
    # DATA_UPLOAD_MAX_MEMORY_SIZE (the "Bad Request (400)" that lost a 3 MB prompt).
    wide = "\U0001f600"
    body = urlencode({"all": wide * limits.largest_form_chars()})
    assert len(body) <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_a_3_mb_prompt_gets_the_forms_error_not_a_bare_400(client, editor):
    agent = make_agent(runner=Agent.Runner.CLAUDE, prompt="short", command="")
    as_user(client, editor)
    response = edit(client, agent, prompt="p" * 3_000_000)
    assert response.status_code == 200
    assert "The prompt is 3,000,000 characters long" in response.content.decode()
    assert Agent.objects.get().prompt == "short"


# --- A long prompt on the agent's page -----------------------------------------------------


def stored(agent: Agent, **fields) -> Agent:
    """An agent as saved before the limits: its fields written straight to the database."""
    Agent.objects.filter(pk=agent.pk).update(**fields)
    return Agent.objects.get(pk=agent.pk)


@pytest.mark.parametrize(
    "prompt",
    ["line of the prompt\n" * 50_000, "one line without an end " * 40_000],
    ids=["many lines", "one long line"],
)
def test_a_long_prompt_is_shown_collapsed_with_show_all(client, viewer, prompt):
    agent = stored(make_agent(), prompt=prompt)
    as_user(client, viewer)
    html = page(client, reverse("agents:detail", args=[agent.name]))
    details = re.search(
        r'<details class="long-text">\s*<summary><pre class="preview">(.*?)</pre>'
        r'<span class="show-all">Show all \(([^)]*)\)</span>',
        html,
        re.S,
    )
    assert details is not None
    preview, size = details[1], details[2]
    assert len(preview) <= 2_000 and preview.count("\n") < 20
    assert prompt.startswith(preview)
    assert f"{len(prompt):,} characters" in size
    assert '<details class="long-text" open' not in html  # closed until asked
    assert prompt in html  # the whole text, behind "show all"


def test_a_short_prompt_is_shown_whole(client, viewer):
    agent = stored(make_agent(), prompt="line one\nline two\n")
    as_user(client, viewer)
    html = page(client, reverse("agents:detail", args=[agent.name]))
    assert "<pre>line one\nline two\n</pre>" in html
    assert 'class="long-text"' not in html


def test_a_long_description_is_cut_in_the_page_head(client, viewer):
    agent = stored(make_agent(), description="words " * 10_000)
    as_user(client, viewer)
    html = page(client, reverse("agents:detail", args=[agent.name]))
    lead = re.search(r'<p class="lead">(.*?)</p>', html, re.S)
    assert lead is not None and len(lead[1]) <= 300
