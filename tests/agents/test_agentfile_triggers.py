"""`triggers.webhooks` in agent.yaml (DESIGN.md §7.7, §7.12): exported without a secret,
checked with a JSON schema and the trigger rules, imported through agents.triggers (made,
changed, never deleted), all or nothing with the agent."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.core.management import call_command

from agents import agentfile as config
from agents import catalogue, legacy
from agents.legacy import EXPORT_HEADER, Status, export_directory, import_directory
from agents.models import Agent, WebhookTrigger
from agents.triggers import create_trigger, delete_trigger, rotate_secret, update_trigger
from agents.versions import snapshot
from audit.actor import Actor
from audit.models import AuditEntry
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system()


@pytest.fixture
def actor(django_user_model) -> Actor:
    django_user_model.objects.create_superuser("ana", "ana@example.com", "pw")
    return Actor.cli("ana")


def exported(agent: Agent, tmp_path: Path) -> tuple[str, dict]:
    """The agent.yaml text cronos_export writes for `agent`, and its mapping."""
    export_directory(tmp_path / "out", SYSTEM, [agent])
    text = (tmp_path / "out" / "agents" / agent.name / "agent.yaml").read_text()
    return text, yaml.safe_load(text)


def write_agent(root: Path, name: str, body: str) -> Path:
    """An import folder holding one command agent, `body` appended to its agent.yaml."""
    folder = root / "agents" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.yaml").write_text(
        f"name: {name}\nenabled: false\nschedule: '0 */4 * * *'\nworking_dir: /tmp\n"
        f"command: echo hello\n{body}"
    )
    (folder / "CLAUDE.md").write_text("")
    return folder / "agent.yaml"


def webhooks_of(agent: Agent) -> dict[str, dict]:
    """The agent's live triggers by name, with the settings a file can set."""
    return {
        t.name: {
            "kind": t.kind,
            "auth": t.auth,
            "payload": t.payload,
            "filter_path": t.filter_path,
            "filter_pattern": t.filter_pattern,
            "rate_per_minute": t.rate_per_minute,
            "enabled": t.enabled,
        }
        for t in agent.webhooks.filter(deleted_at__isnull=True)
    }


def database() -> tuple:
    """Everything an import may write: agents, versions, triggers (with secrets), audit rows."""
    return (
        sorted((a.name, tuple(sorted(snapshot(a).items(), key=str))) for a in Agent.objects.all()),
        Agent.history.count(),
        sorted(
            WebhookTrigger.objects.values_list(
                "agent__name",
                "name",
                "uuid",
                "auth",
                "payload",
                "filter_path",
                "filter_pattern",
                "rate_per_minute",
                "enabled",
                "secret",
                "deleted_at",
            )
        ),  # fmt: skip
        AuditEntry.objects.count(),
    )


# --- Export ---------------------------------------------------------------------------------------


def test_export_writes_each_live_webhook_by_name_with_no_secret_hash_uuid_or_url(tmp_path):
    agent = make_agent("deployer")
    bearer = create_trigger(agent, SYSTEM, name="plain")
    github = create_trigger(
        agent,
        SYSTEM,
        name="on-push",
        auth=WebhookTrigger.Auth.GITHUB,
        payload=WebhookTrigger.Payload.ENV,
        filter_path="$.ref",
        filter_pattern="^refs/heads/main$",
        rate_per_minute=120,
    )
    update_trigger(github.trigger, SYSTEM, enabled=False)
    standard = create_trigger(
        agent, SYSTEM, name="billing", auth=WebhookTrigger.Auth.STANDARD, payload="none"
    )
    rotated = rotate_secret(standard.trigger, SYSTEM)  # the previous secret is still stored
    gone = create_trigger(agent, SYSTEM, name="gone")
    delete_trigger(gone.trigger, SYSTEM)
    git = create_trigger(
        agent, SYSTEM, name="git-main", kind="git", repo="/srv/repo", event="post-commit"
    )

    text, mapping = exported(agent, tmp_path)

    assert mapping["triggers"] == {
        "webhooks": [
            {"name": "billing", "auth": "standard", "payload": "none"},
            {
                "name": "on-push",
                "auth": "github",
                "payload": "env",
                "filter": {"path": "$.ref", "pattern": "^refs/heads/main$"},
                "rate_per_minute": 120,
                "enabled": False,
            },
            {"name": "plain", "auth": "bearer", "payload": "file"},
        ]
    }
    assert list(mapping)[-2:] == ["command", "triggers"]  # after depends_on, before env
    stored = WebhookTrigger.objects.filter(agent=agent)
    never = [bearer.secret, github.secret, standard.secret, rotated, git.secret, "/hooks/"]
    never += [t.secret for t in stored if t.secret] + [t.previous_secret for t in stored]
    never += [str(t.uuid) for t in stored] + [t.uuid.hex for t in stored]
    found = [value for value in never if value and value in text]
    assert found == []
    assert "git-main" not in text  # a git hook belongs to its repository and host
    assert "gone" not in text
    assert text.startswith(EXPORT_HEADER + legacy.EXPORT_WEBHOOKS_NOTE)


def test_an_agent_without_webhooks_exports_the_same_bytes_as_before_triggers_existed(tmp_path):
    agent = make_agent("quiet", extra_config={"owner": "ana"})
    before = exported(agent, tmp_path / "before")[0]

    gone = create_trigger(agent, SYSTEM, name="gone")
    delete_trigger(gone.trigger, SYSTEM)
    create_trigger(agent, SYSTEM, name="hook", kind="git", repo="/srv/repo", event="post-commit")
    after, mapping = exported(agent, tmp_path / "after")

    assert after == before
    assert "triggers" not in mapping
    assert after.startswith(EXPORT_HEADER + "name:")


def test_webhooks_kept_as_an_unknown_key_before_cronos_read_them_are_not_exported(tmp_path):
    # An agent.yaml imported before triggers.webhooks was a known key left it in extra_config.
    stale = [{"name": "old", "auth": "bearer"}]
    agent = make_agent("older", extra_config={"triggers": {"webhooks": stale, "mqtt": {"a": 1}}})

    mapping = exported(agent, tmp_path)[1]

    assert mapping["triggers"] == {"mqtt": {"a": 1}}


# --- Round trip -----------------------------------------------------------------------------------


def test_export_then_import_changes_nothing_and_writes_no_audit_entry(actor, tmp_path):
    agent = make_agent("deployer")
    create_trigger(agent, SYSTEM, name="plain")
    made = create_trigger(
        agent,
        SYSTEM,
        name="on-push",
        auth=WebhookTrigger.Auth.GITHUB,
        filter_path="$.ref",
        filter_pattern="^refs/heads/(main|release/.*)$",
        rate_per_minute=5,
    )
    update_trigger(made.trigger, SYSTEM, enabled=False)
    create_trigger(agent, SYSTEM, name="hook", kind="git", repo="/srv/repo", event="post-commit")
    export_directory(tmp_path, SYSTEM, [agent])
    before = database()

    report = import_directory(tmp_path, actor)

    [result] = report.agents
    assert result.status == Status.UNCHANGED, report.lines()
    assert report.lines() == [
        "unchanged       deployer"
    ]  # the git hook is not "kept": not a webhook
    assert database() == before


def test_a_file_without_triggers_imports_as_before_and_keeps_the_agents_webhooks(actor, tmp_path):
    agent = make_agent("deployer", enabled=False)
    create_trigger(agent, SYSTEM, name="b-hook")
    create_trigger(agent, SYSTEM, name="a-hook")
    write_agent(tmp_path, "deployer", "description: changed\n")
    before = webhooks_of(agent)

    report = import_directory(tmp_path, actor)

    [result] = report.agents
    assert result.status == Status.UPDATED
    assert result.changed == ["description"]
    assert webhooks_of(agent) == before
    assert report.lines()[1] == (
        "    webhooks a-hook, b-hook kept: not in the file, and an import never deletes a "
        "trigger (delete it on the agent's page)"
    )


# --- Import: made and changed -----------------------------------------------------------------


WEBHOOKS = """\
triggers:
  webhooks:
    - name: on-push
      auth: github
      payload: env
      filter: {path: $.ref, pattern: ^refs/heads/main$}
      rate_per_minute: 30
    - name: plain
      enabled: false
"""


def test_import_makes_the_webhooks_of_the_file_for_a_new_agent_without_printing_a_secret(
    actor, tmp_path
):
    write_agent(tmp_path, "deployer", WEBHOOKS)
    out = StringIO()

    call_command("cronos_import", str(tmp_path), "--user", "ana", stdout=out)

    agent = Agent.objects.get(name="deployer")
    assert webhooks_of(agent) == {
        "on-push": {
            "kind": "webhook",
            "auth": "github",
            "payload": "env",
            "filter_path": "$.ref",
            "filter_pattern": "^refs/heads/main$",
            "rate_per_minute": 30,
            "enabled": True,
        },
        "plain": {
            "kind": "webhook",
            "auth": "bearer",
            "payload": "file",
            "filter_path": "",
            "filter_pattern": "",
            "rate_per_minute": 60,
            "enabled": False,
        },
    }
    printed = out.getvalue()
    assert "created         deployer" in printed
    assert (
        "    webhook on-push made: see its URL on the agent's page, and rotate its secret there "
        "to show one (an import never prints a secret)"
    ) in printed
    triggers = list(agent.webhooks.all())
    assert all(t.secret for t in triggers)  # each has a secret of its own, made by Cronos
    leaks = [t.secret for t in triggers if t.secret in printed] + [
        word for word in ("cronos_wh_", "whsec_", "/hooks/") if word in printed
    ]
    assert leaks == []
    made = AuditEntry.objects.filter(action="webhook.create").order_by("id")
    assert [(e.actor_username, e.changes["webhook"][1]["name"]) for e in made] == [
        ("ana", "on-push"),
        ("ana", "plain"),
    ]
    assert made[1].changes["webhook"][1]["enabled"] is False  # made disabled, not changed after
    assert not AuditEntry.objects.filter(action="webhook.change").exists()


def test_import_changes_the_webhooks_the_agent_has_makes_the_new_and_keeps_the_rest(
    actor, tmp_path
):
    agent = make_agent("deployer", enabled=False)
    first = create_trigger(agent, SYSTEM, name="plain", rate_per_minute=10)
    push = create_trigger(agent, SYSTEM, name="on-push", auth=WebhookTrigger.Auth.GITHUB)
    create_trigger(agent, SYSTEM, name="other")
    versions = Agent.history.count()
    write_agent(tmp_path, "deployer", WEBHOOKS + "    - name: fresh\n      payload: none\n")

    report = import_directory(tmp_path, actor)

    [result] = report.agents
    assert result.status == Status.UPDATED
    assert result.changed[-1] == "triggers.webhooks"
    found = webhooks_of(agent)
    assert found["plain"]["enabled"] is False
    assert found["plain"]["rate_per_minute"] == 60  # not in the file: the default
    assert (found["on-push"]["filter_path"], found["on-push"]["rate_per_minute"]) == ("$.ref", 30)
    assert found["on-push"]["payload"] == "env"
    assert found["fresh"]["payload"] == "none"
    assert found["other"]["enabled"] is True
    # Changed in place: same URL, same secret, so senders need not be told.
    first.trigger.refresh_from_db()
    assert first.trigger.secret == WebhookTrigger.objects.get(uuid=first.trigger.uuid).secret
    assert WebhookTrigger.objects.get(name="on-push").uuid == push.trigger.uuid
    assert report.lines()[1:] == [
        "    webhook fresh made: see its URL on the agent's page, and rotate its secret there to "
        "show one (an import never prints a secret)",
        "    changed webhook on-push: payload, filter, rate_per_minute",
        "    changed webhook plain: rate_per_minute, enabled",
        "    webhook other kept: not in the file, and an import never deletes a trigger (delete "
        "it on the agent's page)",
    ]
    changes = AuditEntry.objects.filter(action="webhook.change").order_by("id")
    assert [e.message for e in changes] == ["trigger on-push changed", "trigger plain changed"]
    # Not part of the versioned Agent row: no version for a trigger's change.
    assert Agent.history.count() == versions + 1  # the file's other keys (description) only


def test_a_dry_run_says_what_would_be_made_and_changed_and_writes_nothing(actor, tmp_path):
    agent = make_agent("deployer", enabled=False, description="deployer agent")
    create_trigger(agent, SYSTEM, name="plain")
    create_trigger(agent, SYSTEM, name="on-push", auth=WebhookTrigger.Auth.GITHUB)
    write_agent(tmp_path, "deployer", "description: deployer agent\n" + WEBHOOKS)
    write_agent(tmp_path, "newcomer", "triggers:\n  webhooks: [{name: hello}]\n")
    before = database()
    out = StringIO()

    call_command("cronos_import", str(tmp_path), "--dry-run", stdout=out)

    assert database() == before
    lines = out.getvalue().splitlines()
    assert lines[:6] == [
        "would update    deployer (changed: triggers.webhooks)",
        "    would change webhook on-push: payload, filter, rate_per_minute",
        "    would change webhook plain: enabled",
        "would create    newcomer",
        "    would make webhook hello (with a new secret, not printed)",
        lines[5],
    ]
    assert lines[5].startswith("Dry run of 2 agent(s)")


# --- Import: what is refused --------------------------------------------------------------------


def problems_of(body: str) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(yaml.safe_load("name: x\n" + body), default_name="x")
    return caught.value.problems


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "triggers: {webhooks: {name: a}}",
            "triggers.webhooks: expected a list, got a mapping",
        ),
        (
            "triggers: {webhooks: [a]}",
            "triggers.webhooks[0]: expected a mapping, got 'a' (text)",
        ),
        (
            "triggers: {webhooks: [{name: 5}]}",
            "triggers.webhooks[0].name: expected text, got 5 (a number)",
        ),
        (
            "triggers: {webhooks: [{auth: bearer}]}",
            "triggers.webhooks[0]: 'name' is a required property",
        ),
        (
            "triggers: {webhooks: [{name: a}, {name: b, auth: hmac}]}",
            "triggers.webhooks[1].auth: 'hmac' is not one of ['bearer', 'github', 'standard']",
        ),
        (
            "triggers: {webhooks: [{name: a, payload: stdin}]}",
            "triggers.webhooks[0].payload: 'stdin' is not one of ['file', 'env', 'none']",
        ),
        (
            "triggers: {webhooks: [{name: a, secret: hunter2}]}",
            "triggers.webhooks[0]: Additional properties are not allowed ('secret' was "
            "unexpected) (the keys are: name, auth, payload, filter, rate_per_minute, enabled)",
        ),
        (
            "triggers: {webhooks: [{name: a, filter: {path: $.ref, pattern: x, flags: i}}]}",
            "triggers.webhooks[0].filter: Additional properties are not allowed ('flags' was "
            "unexpected) (the keys are: path, pattern)",
        ),
        (
            "triggers: {webhooks: [{name: a, rate_per_minute: 0}]}",
            "triggers.webhooks[0].rate_per_minute: 0 is less than the minimum of 1",
        ),
        (
            "triggers: {webhooks: [{name: a, rate_per_minute: 6001}]}",
            "triggers.webhooks[0].rate_per_minute: 6001 is greater than the maximum of 6000",
        ),
        (
            "triggers: {webhooks: [{name: a, rate_per_minute: true}]}",
            "triggers.webhooks[0].rate_per_minute: expected a whole number, got true (true/false)",
        ),
        (
            "triggers: {webhooks: [{name: a, rate_per_minute: '60'}]}",
            "triggers.webhooks[0].rate_per_minute: expected a whole number, got '60' (text)",
        ),
        (
            "triggers: {webhooks: [{name: a, enabled: 'yes'}]}",
            "triggers.webhooks[0].enabled: expected true or false, got 'yes' (text)",
        ),
        (
            "triggers: {webhooks: [{name: a, filter: {path: $.ref}}]}",
            "triggers.webhooks[0].filter: 'pattern' is a required property",
        ),
        (
            "triggers: {webhooks: [{name: a, filter: {path: $.ref, pattern: 'a(b'}}]}",
            "triggers.webhooks[0].filter.pattern: not a regular expression: missing ) at "
            "position 3",
        ),
        (
            "triggers: {webhooks: [{name: a, filter: {path: $.ref, pattern: " + "x" * 501 + "}}]}",
            "triggers.webhooks[0].filter.pattern: longer than 500 characters",
        ),
        (
            "triggers: {webhooks: [{name: Deploy Now}]}",
            "triggers.webhooks[0].name: a name is 1 to 64 lower-case letters, digits, - and _, "
            "starting with a letter or digit",
        ),
        (
            "triggers: {webhooks: [{name: a}, {name: b}, {name: a, auth: github}]}",
            "triggers.webhooks[2].name: 'a' is given twice (also triggers.webhooks[0]); each "
            "webhook of an agent has its own name",
        ),
        ("triggers: [a]", "triggers: expected a mapping of keys to values, got a list"),
    ],
)
def test_a_wrong_webhook_is_named_by_its_item_and_key(body, problem):
    assert problems_of(body) == [problem]


def test_a_webhook_with_a_json_path_that_does_not_parse_is_refused():
    [problem] = problems_of("triggers: {webhooks: [{name: a, filter: {path: '$[', pattern: x}}]}")
    assert problem.startswith("triggers.webhooks[0].filter.path: not a JSON path (")


def test_every_wrong_item_is_reported_and_only_the_good_ones_are_read():
    body = (
        "triggers: {webhooks: [{name: ok}, {name: b, auth: hmac, rate_per_minute: 0}, "
        "{name: c, filter: {path: '$.a', pattern: '('}}]}"
    )
    assert [p.split(":")[0] for p in problems_of(body)] == [
        "triggers.webhooks[1].auth",
        "triggers.webhooks[1].rate_per_minute",
        "triggers.webhooks[2].filter.pattern",
    ]


def test_good_webhooks_parse_to_trigger_settings_and_other_trigger_keys_are_kept():
    mapping = yaml.safe_load(
        "name: x\ntriggers:\n  mqtt: {topic: inbox}\n  webhooks:\n"
        "    - {name: a, rate_per_minute: 60.0}\n    - {name: b, auth: standard, payload: none}\n"
    )

    parsed = config.parse(mapping, default_name="x")

    assert parsed.webhooks == [
        {
            "name": "a",
            "auth": "bearer",
            "payload": "file",
            "filter_path": "",
            "filter_pattern": "",
            "rate_per_minute": 60,
            "enabled": True,
        },
        {
            "name": "b",
            "auth": "standard",
            "payload": "none",
            "filter_path": "",
            "filter_pattern": "",
            "rate_per_minute": 60,
            "enabled": True,
        },
    ]
    assert type(parsed.webhooks[0]["rate_per_minute"]) is int
    extra = dict(parsed.fields["extra_config"])
    meta = extra.pop("_cronos")
    assert extra == {"triggers": {"mqtt": {"topic": "inbox"}}}
    assert parsed.notices == ["kept unknown key 'triggers.mqtt' (Cronos does not use it)"]
    # The webhooks are not the Agent row's: not in its bookkeeping of how the file spells things.
    assert meta == {"absent": ["description", "enabled", "schedule", "working_dir", "command"]}


def test_the_webhook_schema_is_a_valid_draft_2020_12_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(config.WEBHOOKS_SCHEMA)


def test_a_bad_webhook_refuses_the_whole_agent_and_leaves_the_database_as_it_was(actor, tmp_path):
    agent = make_agent("deployer", enabled=False)
    create_trigger(agent, SYSTEM, name="plain")
    path = write_agent(
        tmp_path,
        "deployer",
        "description: changed\ntriggers:\n  webhooks:\n    - name: fresh\n"
        "    - name: plain\n      rate_per_minute: 10\n    - name: broken\n      auth: hmac\n",
    )
    write_agent(tmp_path, "bystander", "")
    before = database()
    out = StringIO()

    with pytest.raises(Exception, match="1 agent\\(s\\) not imported: 1 failed \\(deployer\\)"):
        call_command("cronos_import", str(tmp_path), stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "created         bystander",
        "failed          deployer",
        f"    {path}: triggers.webhooks[2].auth: 'hmac' is not one of "
        "['bearer', 'github', 'standard']",
    ]
    after = database()
    # The good agent beside it was imported; of this one, neither the row nor a trigger.
    assert [row for row in after[0] if row[0] != "bystander"] == before[0]
    assert after[2] == before[2]
    assert not AuditEntry.objects.filter(action__startswith="webhook.", actor_username="ana")


def test_changing_a_webhooks_auth_refuses_the_agent_and_nothing_is_written(actor, tmp_path):
    agent = make_agent("deployer", enabled=False)
    create_trigger(agent, SYSTEM, name="plain")
    path = write_agent(
        tmp_path,
        "deployer",
        "description: changed\ntriggers:\n  webhooks:\n    - name: fresh\n"
        "    - name: plain\n      auth: github\n",
    )
    before = database()

    report = import_directory(tmp_path, actor)

    [result] = report.agents
    assert result.status == Status.FAILED
    assert result.problems == [
        f"{path}: triggers.webhooks[1].auth: webhook 'plain' uses bearer, and a trigger's auth "
        "cannot change to github; give this one another name, or delete the old one on the "
        "agent's page and import again"
    ]
    assert database() == before


def test_a_webhook_named_as_the_agents_git_hook_is_refused(actor, tmp_path):
    agent = make_agent("deployer", enabled=False)
    create_trigger(agent, SYSTEM, name="hook", kind="git", repo="/srv/r", event="post-commit")
    path = write_agent(tmp_path, "deployer", "triggers: {webhooks: [{name: hook}]}\n")
    before = database()

    report = import_directory(tmp_path, actor)

    assert report.agents[0].problems == [
        f"{path}: triggers.webhooks[0].name: 'hook' is the name of this agent's git hook trigger "
        "(cronos_install_hook); give the webhook another name"
    ]
    assert database() == before


def test_a_trigger_that_fails_after_others_were_made_rolls_the_whole_agent_back(
    actor, tmp_path, monkeypatch
):
    # A rule only the service knows (or a race with an edit on the page) after the agent was
    # saved and a webhook made: the agent's import is one transaction.
    agent = make_agent("deployer", enabled=False)
    create_trigger(agent, SYSTEM, name="plain")
    path = write_agent(
        tmp_path,
        "deployer",
        "description: changed\ntriggers:\n  webhooks:\n    - name: fresh\n"
        "    - name: plain\n      rate_per_minute: 10\n",
    )

    def refusing(trigger, actor, **values):
        raise ValidationError({"rate_per_minute": ["not now"]})

    monkeypatch.setattr(legacy, "update_trigger", refusing)
    before = database()

    report = import_directory(tmp_path, actor)

    assert report.agents[0].status == Status.FAILED
    assert report.agents[0].problems == [f"{path}: triggers.webhooks[1].rate_per_minute: not now"]
    assert database() == before


# --- The catalogue ------------------------------------------------------------------------------


def test_the_catalogues_commented_webhook_example_is_a_valid_triggers_section():
    text = (catalogue.CATALOGUE_DIR / "nightly-tests.yaml").read_text()
    block = text[text.index("# triggers:\n") :].splitlines()
    # Uncommented, without the comments about each key: what a person would paste.
    example = "\n".join(line[2:] for line in block if not re.match(r"#\s+# ", line) and line != "#")

    parsed = config.parse(
        {"name": "x", **yaml.safe_load(example)}, default_name="x", remember_spelling=False
    )

    assert [w["name"] for w in parsed.webhooks] == ["on-push"]
    assert parsed.webhooks[0]["filter_pattern"] == "^refs/heads/main$"


def test_a_template_that_lists_webhooks_is_refused_rather_than_silently_ignored(
    tmp_path, monkeypatch
):
    (tmp_path / "hooked.yaml").write_text(
        "title: Hooked\ndescription: d\nschedule: '@daily'\nworking_dir: /tmp\n"
        "runner: command\ncommand: 'true'\ntriggers: {webhooks: [{name: a}]}\n"
    )
    monkeypatch.setattr(catalogue, "CATALOGUE_DIR", tmp_path)

    with pytest.raises(config.ConfigError) as caught:
        catalogue.template_fields("hooked", "from-hooked")

    assert caught.value.problems == [
        f"{tmp_path / 'hooked.yaml'}: triggers.webhooks: a template makes no triggers; add "
        "webhooks on the agent's page (a template may show one in a comment)"
    ]
