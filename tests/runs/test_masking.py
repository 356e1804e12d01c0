"""Secrets masked by one rule wherever output is kept or shown (DESIGN.md §4 "Secrets,
precisely"): in the text as it shows (escape sequences removed), the whole original span; each
line of a multi-line secret on its own; across reads; in JSON; a short secret of an agent saved
before the rule only as a whole word."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from agents import secrets
from agents.masking import MASK, Masker
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from cronos_site.web import ansi
from runs import rawlog
from runs.execution.executor import execute
from runs.execution.output import OutputSink
from runs.models import Run, RunChunk
from tests.factories import make_agent

TOKEN = "ghp_Secret123VALUE456"
# Parts of TOKEN that no masked output may show, whatever it is split by.
TOKEN_PARTS = ("ghp_Secret123", "Secret123", "VALUE456")
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDfBk7nKqGh1yN5xsBTbXPVbMWVJfqgO1p8nFQcGBzKGQAAAJjB4oFowe\n"
    "Kl\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
PEM_LINES = [line for line in PEM.splitlines() if len(line) >= 6]


# --- through a real agent --------------------------------------------------------------------


@pytest.fixture
def log_dir(settings, tmp_path) -> Path:
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    return settings.CRONOS_LOG_DIR


def run_command(command: str, tmp_path: Path, **variables: str) -> Run:
    agent = make_agent(
        "leaky",
        runner=Agent.Runner.COMMAND,
        command=command,
        working_dir=str(tmp_path),
        variables=[secrets.secret(name, value) for name, value in variables.items()],
    )
    return execute(
        Run.objects.create(
            agent=agent, agent_version=agent.history.latest(), trigger=Run.Trigger.MANUAL
        ).pk
    )


def stored(run: Run, log_dir: Path) -> tuple[bytes, str]:
    """The run's raw log (as its download gives it) and its chunks, as kept; its log file is
    gone, the database holding all of its output (runs.rawlog)."""
    chunks = "".join(
        RunChunk.objects.filter(run=run).order_by("seq").values_list("text", flat=True)
    )
    assert not list(log_dir.rglob("*.log"))
    return "".join(rawlog.pieces(run)).encode(), chunks


def run_page_text(client, viewer, run: Run) -> str:
    """The run page as a person reads it: tags removed, entities decoded."""
    client.force_login(viewer)
    response = client.get(reverse("runs:detail", args=[run.pk]))
    assert response.status_code == 200
    return html.unescape(re.sub(r"<[^>]+>", "", response.content.decode()))


@pytest.mark.django_db(transaction=True)
def test_a_secret_split_by_grep_colours_is_masked_in_the_log_the_chunks_and_the_page(
    tmp_path, log_dir, client, viewer
):
    command = (
        "printf '%s\\n' \"x:$TOKEN\" | grep --color=always VALUE; "
        "echo 'no secret: VALUE' | grep --color=always VALUE"
    )
    run = run_command(command, tmp_path, TOKEN=TOKEN)

    assert run.state == Run.State.SUCCEEDED, run.reason
    raw, chunks = stored(run, log_dir)
    # grep coloured the match: the token was printed split by escape sequences.
    assert raw.endswith(b"no secret: \x1b[01;31m\x1b[KVALUE\x1b[m\x1b[K\n")
    assert raw.startswith(f"x:{MASK}\n".encode())
    shown = run_page_text(client, viewer, run)
    assert f"x:{MASK}" in shown
    for part in TOKEN_PARTS:
        assert part.encode() not in raw
        assert part not in ansi.plain(chunks)
        assert part not in shown


@pytest.mark.django_db(transaction=True)
def test_each_line_of_a_multi_line_secret_printed_alone_is_masked(
    tmp_path, log_dir, client, viewer
):
    # The second line alone, then the whole key with a colour in the middle of its third line.
    command = (
        "printf '%s\\n' \"$KEY\" | sed -n 2p; "
        "printf '%s\\n' \"$KEY\" | sed 's/tzc2g/tzc2g\\x1b[1m/'; echo done"
    )
    run = run_command(command, tmp_path, KEY=PEM)

    assert run.state == Run.State.SUCCEEDED, run.reason
    raw, chunks = stored(run, log_dir)
    assert raw.startswith(f"{MASK}\n".encode()) and raw.endswith(b"done\n")
    shown = run_page_text(client, viewer, run)
    for line in PEM_LINES:
        assert line.encode() not in raw
        assert line not in ansi.plain(chunks)
        assert line not in shown


@pytest.mark.django_db(transaction=True)
def test_a_six_character_secret_is_masked_whole(tmp_path, log_dir):
    run = run_command('echo "pin=$PIN, again:$PIN."; echo a${PIN}b', tmp_path, PIN="x9Q2z7")

    raw, chunks = stored(run, log_dir)
    assert raw == f"pin={MASK}, again:{MASK}.\na{MASK}b\n".encode()
    assert chunks == raw.decode()


@pytest.mark.django_db(transaction=True)
def test_an_agent_saved_with_a_short_secret_keeps_running_masked_as_a_whole_word_and_flagged(
    tmp_path, log_dir, client, viewer
):
    agent = make_agent(
        "old-agent",
        runner=Agent.Runner.COMMAND,
        command='echo "FLAG=$FLAG; see the e-mail"; echo "$FLAG"',
        working_dir=str(tmp_path),
    )
    # Saved before the rule: the stored value is one letter.
    Agent.objects.filter(pk=agent.pk).update(variables=[secrets.secret("FLAG", "e")])
    agent.refresh_from_db()

    run = execute(Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL).pk)

    assert run.state == Run.State.SUCCEEDED, run.reason
    raw, _ = stored(run, log_dir)
    # The "e" of a word stays: masking them all would show which letter the secret is.
    assert raw == f"FLAG={MASK}; see the {MASK}-mail\n{MASK}\n".encode()
    client.force_login(viewer)
    response = client.get(reverse("agents:detail", args=[agent.name]))
    flag = re.search(
        r'<div class="notice" id="to-fix">(.*?)</div>', response.content.decode(), re.S
    )
    assert flag is not None
    assert "its next save must fix" in flag.group(1)
    assert "secret FLAG is shorter than 6 characters" in flag.group(1)
    agent.description = "a change"
    with pytest.raises(ValidationError) as refused:
        save_agent(agent, Actor.system())
    assert any("secret FLAG" in m for m in refused.value.message_dict["variables"])


@pytest.mark.django_db
def test_an_agent_that_breaks_no_rule_is_not_flagged(client, viewer):
    agent = make_agent("fine", variables=[secrets.secret("TOKEN", TOKEN)])
    client.force_login(viewer)
    response = client.get(reverse("agents:detail", args=[agent.name]))
    assert 'id="to-fix"' not in response.content.decode()


# --- the rule itself -------------------------------------------------------------------------

SEPARATORS = {
    "CSI colour (grep)": "\x1b[01;31m\x1b[K",
    "CSI cursor move": "\x1b[2C",
    "OSC title ended by BEL": "\x1b]0;a title\x07",
    "OSC hyperlink ended by ESC \\": "\x1b]8;;https://example.com/x\x1b\\",
    "two-character escape": "\x1b(B",
    "control character": "\x00\x07",
    "backspace": "\x08",
    "DEL": "\x7f",
    "C1 control": "\x9b",
    "zero-width space": "\u200b",
    "soft hyphen": "\u00ad",
    "zero-width no-break space": "\ufeff",
    "right-to-left mark": "\u200f",
}


@pytest.mark.parametrize("separator", SEPARATORS.values(), ids=SEPARATORS.keys())
def test_a_secret_split_by_something_invisible_is_masked_whole(separator):
    printed = f"token: ghp_Sec{separator}ret123{separator}VALUE456 ok\n".encode()
    masked = Masker([TOKEN]).mask_bytes(printed)
    assert masked == f"token: {MASK} ok\n".encode()


@pytest.mark.parametrize("separator", SEPARATORS.values(), ids=SEPARATORS.keys())
def test_what_the_page_shows_of_masked_output_never_holds_a_secret(separator):
    printed = f"a{separator}ghp_Secret123{separator}VALUE456{separator}z\n"
    shown = ansi.plain(Masker([TOKEN]).mask_text(printed))
    assert not any(part in shown for part in TOKEN_PARTS)
    assert MASK in shown


def test_a_secret_split_at_any_byte_across_two_reads_is_masked():
    printed = (
        b"x:ghp_Secret123\x1b[01;31m\x1b[KVALUE\x1b[m\x1b[K456 and "
        b"ghp_Sec\x1b]8;;https://e.example/\x1b\\ret123VALUE456\x1b]8;;\x1b\\ end\n"
    )
    masker = Masker([TOKEN])
    whole = masker.mask_bytes(printed)
    assert whole.count(MASK.encode()) == 2
    for cut in range(len(printed) + 1):
        first, held = masker.mask_stream(printed[:cut])
        second, held = masker.mask_stream(held + printed[cut:], final=True)
        assert held == b""
        assert first + second == whole, cut


@pytest.mark.django_db
def test_the_output_sink_masks_a_secret_split_by_colours_across_flushes(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path
    run = Run.objects.create(agent=make_agent("sink"), trigger=Run.Trigger.MANUAL)
    sink = OutputSink(run, [TOKEN])
    for piece in (b"x:ghp_Sec", b"ret123\x1b[01", b";31m\x1b[KVAL", b"UE\x1b[m\x1b[K456", b"\n"):
        sink.feed(piece)
        sink.flush()
    sink.close()

    raw = (tmp_path / sink.log_path).read_bytes()
    assert raw == f"x:{MASK}\n".encode()
    assert "".join(RunChunk.objects.filter(run=run).values_list("text", flat=True)) == raw.decode()


def test_a_line_of_a_multi_line_secret_is_masked_alone_but_a_short_line_is_not():
    masker = Masker([PEM])
    for line in PEM_LINES:
        assert masker.mask_text(f"> {line}\n") == f"> {MASK}\n"
    # "Kl" alone is too short to mean anything (and masking it would hit other text).
    assert masker.mask_text("Kl\n") == "Kl\n"
    assert masker.mask_text(f"key:\n{PEM}") == f"key:\n{MASK}"


@pytest.mark.parametrize(
    "value", ['pa"ss\\word-42', "line one\nline two", "café-crème-Ω", "<tag>&/x</tag>"]
)
def test_a_secret_in_json_is_masked_in_every_spelling_and_the_line_stays_json(value):
    masker = Masker([value])
    for ascii_only in (True, False):
        line = json.dumps(
            {"type": "tool_result", "content": f"got {value}!"}, ensure_ascii=ascii_only
        )
        masked = masker.mask_bytes(line.encode())
        assert json.loads(masked)["content"] == f"got {MASK}!", line
    go_style = json.dumps({"c": value}).replace("<", "\\u003c").replace(">", "\\u003e")
    assert json.loads(masker.mask_bytes(go_style.replace("&", "\\u0026").encode()))["c"] == MASK


def test_a_secret_split_by_colours_inside_json_is_masked_and_the_line_stays_json():
    content = "x:ghp_Secret123\x1b[01;31m\x1b[KVALUE\x1b[m\x1b[K456 done"
    line = json.dumps({"type": "user", "content": content}).encode()
    assert b"\\u001b[01;31m" in line
    masked = Masker([TOKEN]).mask_bytes(line)
    assert json.loads(masked)["content"] == f"x:{MASK} done"


@pytest.mark.parametrize(
    "printed",
    [
        "".join(f"{c}\b{c}" for c in TOKEN),  # bold, as man pages print it
        "".join(f"_\b{c}" for c in TOKEN),  # underlined
    ],
    ids=["bold", "underlined"],
)
def test_an_overstruck_secret_is_masked_whole(printed):
    masked = Masker([TOKEN]).mask_text(f"[{printed}]")
    assert masked == f"[{MASK}]"


def test_a_short_secret_is_masked_only_as_a_whole_word():
    masker = Masker(["e"])
    assert masker.mask_text("FLAG=e; see the e-mail, e.") == (
        f"FLAG={MASK}; see the {MASK}-mail, {MASK}."
    )
    assert masker.mask_text('{"flag": "e"}') == f'{{"flag": "{MASK}"}}'


def test_a_secret_inside_another_or_overlapping_it_is_masked_whole():
    masker = Masker(["abcdef-123", "123-uvwxyz", "cdef-1"])
    assert masker.mask_text("<abcdef-123-uvwxyz>") == f"<{MASK}>"
