"""The output sink: a raw log file and ordered chunks, secrets masked before either is written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.secrets import MASK
from runs.execution.output import OutputSink, safe_cut, secret_patterns
from runs.models import Run, RunChunk
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

STARTED = datetime(2026, 11, 26, 13, 4, 5, tzinfo=UTC)


@pytest.fixture
def run(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path
    agent = make_agent("sink-agent")
    return Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)


def chunks(run: Run) -> list[RunChunk]:
    return list(RunChunk.objects.filter(run=run).order_by("seq"))


def test_the_log_file_is_named_after_the_agent_the_start_time_and_the_run(run, tmp_path):
    sink = OutputSink(run, [], started=STARTED)
    sink.close()
    assert sink.log_path == f"runs/2026-11-26/sink-agent-130405-{run.pk}.log"
    assert (tmp_path / sink.log_path).exists()


def test_output_goes_to_the_file_and_to_ordered_chunks_one_per_flush(run, tmp_path):
    sink = OutputSink(run, [], started=STARTED)
    sink.feed(b"one\n")
    sink.feed(b"two\n")
    assert sink.flush() == "one\ntwo\n"
    sink.feed(b"three")
    sink.flush()
    sink.close()

    assert (tmp_path / sink.log_path).read_bytes() == b"one\ntwo\nthree"
    rows = chunks(run)
    assert [c.seq for c in rows] == [0, 1]
    assert "".join(c.text for c in rows) == "one\ntwo\nthree"
    run.refresh_from_db()
    assert run.output_bytes == len(b"one\ntwo\nthree")


def test_a_utf8_character_split_across_reads_is_decoded_whole(run):
    sink = OutputSink(run, [], started=STARTED)
    sink.feed(b"caf" + b"\xc3")
    sink.flush()
    sink.feed(b"\xa9 \xe2\x82")
    sink.flush()
    sink.feed(b"\xac\n")
    sink.close()
    assert "".join(c.text for c in chunks(run)) == "café €\n"


def test_binary_output_is_kept_as_bytes_and_shown_with_replacement_characters(run, tmp_path):
    data = bytes(range(256)) * 4
    sink = OutputSink(run, [], started=STARTED)
    sink.feed(data)
    sink.close()
    assert (tmp_path / sink.log_path).read_bytes() == data
    text = "".join(c.text for c in chunks(run))
    assert "\ufffd" in text
    assert "\x00" not in text  # PostgreSQL cannot store NUL in text


def test_secrets_are_masked_in_the_file_and_the_chunks_even_when_split_across_reads(run, tmp_path):
    sink = OutputSink(run, ["hunter2-secret", 'q"uote'], started=STARTED)
    sink.feed(b"token=hunter2-")
    sink.flush()
    sink.feed(b"secret and again hunter2-secret\n")
    sink.feed(b'{"v": "q\\"uote"}\n')
    sink.close()

    raw = (tmp_path / sink.log_path).read_bytes()
    assert b"hunter2" not in raw
    assert b"uote" not in raw
    assert raw == f'token={MASK} and again {MASK}\n{{"v": "{MASK}"}}\n'.encode()
    text = "".join(c.text for c in chunks(run))
    assert "hunter2" not in text
    assert text == raw.decode()


def test_a_held_back_tail_that_was_not_a_secret_is_written_at_the_next_flush(run, tmp_path):
    sink = OutputSink(run, ["secret"], started=STARTED)
    sink.feed(b"progress: sec")
    assert sink.flush() == "progress: "
    sink.feed(b"onds left")
    assert sink.flush() == "seconds left"
    sink.close()
    assert (tmp_path / sink.log_path).read_bytes() == b"progress: seconds left"


def test_safe_cut_never_splits_a_secret():
    patterns = secret_patterns(["abcdef", "abc"])
    assert safe_cut(b"xx abcdef", patterns) == 9
    # "abc" complete but maybe the start of "abcdef": held back whole.
    assert safe_cut(b"xx abc", patterns) == 3
    assert safe_cut(b"xx ab", patterns) == 3
    assert safe_cut(b"nothing here", patterns) == 12


def test_truncate_keeps_the_first_bytes_writes_one_notice_and_counts_everything(run, tmp_path):
    sink = OutputSink(run, [], started=STARTED, limit_bytes=10, limit_action="truncate")
    sink.feed(b"0123456789abcdef\n")
    sink.flush()
    sink.feed(b"more that is discarded\n")
    sink.close()

    raw = (tmp_path / sink.log_path).read_bytes()
    assert (
        raw == b"0123456789\n[cronos] output limit of 10 bytes reached; further output discarded\n"
    )
    assert sink.limit_reached
    assert sink.received_bytes == 17 + 23
    run.refresh_from_db()
    assert run.output_bytes == 40


def test_a_limit_that_falls_inside_a_secret_does_not_leak_its_start(run, tmp_path):
    sink = OutputSink(run, ["topsecret"], started=STARTED, limit_bytes=8)
    sink.feed(b"key=topsecret\n")
    sink.close()
    raw = (tmp_path / sink.log_path).read_bytes()
    assert b"top" not in raw
    assert raw.startswith(b"key=\n[cronos] output limit")


def test_a_notice_starts_on_its_own_line(run, tmp_path):
    sink = OutputSink(run, [], started=STARTED)
    sink.feed(b"no newline at the end")
    sink.notice("stopped 1 process(es)")
    sink.close()
    raw = (tmp_path / sink.log_path).read_bytes()
    assert raw == b"no newline at the end\n[cronos] stopped 1 process(es)\n"
    assert "".join(c.text for c in chunks(run)) == raw.decode()


def test_a_large_flush_is_stored_as_several_chunks_in_order(run):
    sink = OutputSink(run, [], started=STARTED)
    data = b"".join(b"line %06d\n" % i for i in range(20000))  # 220 kB
    sink.feed(data)
    sink.close()
    rows = chunks(run)
    assert len(rows) >= 4
    assert [c.seq for c in rows] == list(range(len(rows)))
    assert "".join(c.text for c in rows) == data.decode()
