"""The output sink: a raw log file and ordered chunks, secrets masked before either is written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.masking import Masker
from agents.secrets import MASK
from runs.execution.output import OutputSink
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


def test_the_end_of_a_read_that_could_start_a_secret_is_held_back_never_split():
    masker = Masker(["abcdefgh", "abcdef"])
    assert masker.mask_stream(b"xx abcdefgh") == (f"xx {MASK}".encode(), b"")
    # "abcdef" complete but maybe the start of "abcdefgh": held back whole.
    assert masker.mask_stream(b"xx abcdef") == (b"xx ", b"abcdef")
    assert masker.mask_stream(b"xx ab") == (b"xx ", b"ab")
    assert masker.mask_stream(b"nothing here") == (b"nothing here", b"")
    assert masker.mask_stream(b"xx ab", final=True) == (b"xx ab", b"")


def test_truncate_keeps_the_head_and_the_tail_with_a_marker_and_counts_everything(run, tmp_path):
    sink = OutputSink(run, [], started=STARTED, limit_bytes=10, limit_action="truncate")
    assert sink.flush() == ""
    sink.feed(b"0123456789abcdef\n")
    assert sink.flush() == "0123456789abcdef\n"  # the parser reads everything
    sink.feed(b"more that is discarded\n")
    assert sink.flush() == "more that is discarded\n"
    sink.close()

    raw = (tmp_path / sink.log_path).read_bytes()
    assert raw == (
        b"01234\n"
        b"[cronos] output limit of 10 bytes reached; the rest of the output is not kept but for "
        b"its last 5 bytes, added when it ends\n"
        b"[cronos] 30 bytes not kept (output limit of 10 bytes); "
        b"the last 5 bytes of the output follow\n"
        b"rded\n"
    )
    assert "".join(c.text for c in chunks(run)) == raw.decode()
    assert sink.limit_reached
    assert (sink.kept_bytes, sink.dropped_bytes) == (10, 30)
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


# --- the output limit: head and tail ---------------------------------------------------------


def numbered(count: int) -> bytes:
    return b"".join(b"line %07d\n" % i for i in range(count))  # 13 bytes a line


def feed_in_reads(sink: OutputSink, data: bytes, size: int = 65536) -> str:
    """Feed `data` as a pipe reader would, flushing after each read; what the parser read."""
    parsed = []
    for start in range(0, len(data), size):
        sink.feed(data[start : start + size])
        parsed.append(sink.flush())
    return "".join(parsed)


def test_a_long_output_keeps_its_first_and_last_lines_whole_with_the_marker_between(run, tmp_path):
    data = numbered(80_000)  # 1 MB
    sink = OutputSink(run, [], started=STARTED, limit_bytes=100_000)
    assert feed_in_reads(sink, data) == data.decode()
    sink.close()

    raw = (tmp_path / sink.log_path).read_bytes()
    assert "".join(c.text for c in chunks(run)) == raw.decode()
    lines = raw.decode().splitlines()
    notices = [i for i, line in enumerate(lines) if line.startswith("[cronos] ")]
    assert len(notices) == 2 and notices[1] == notices[0] + 1
    assert "bytes not kept" in lines[notices[1]]
    head, tail = lines[: notices[0]], lines[notices[1] + 1 :]
    # Whole lines, the first ones and the last ones, in order.
    assert head == [f"line {i:07d}" for i in range(len(head))]
    assert tail == [f"line {i:07d}" for i in range(80_000 - len(tail), 80_000)]
    assert len(raw) <= 100_000 + 300  # the limit, and two lines of Cronos's own
    assert 45_000 < len("\n".join(head)) <= 50_000 and 45_000 < len("\n".join(tail)) <= 50_000
    assert sink.kept_bytes == 13 * (len(head) + len(tail))
    assert sink.dropped_bytes == len(data) - sink.kept_bytes
    assert f"{sink.dropped_bytes} bytes not kept" in lines[notices[1]]


def test_output_within_the_limit_is_kept_whole_even_past_its_head(run, tmp_path):
    data = numbered(7000)  # 91 kB: past the head (50 kB), within the limit
    sink = OutputSink(run, [], started=STARTED, limit_bytes=100_000, limit_action="kill")
    feed_in_reads(sink, data, size=4096)
    assert not sink.limit_reached
    sink.close()
    assert (tmp_path / sink.log_path).read_bytes() == data
    assert "".join(c.text for c in chunks(run)) == data.decode()
    assert not sink.limit_reached and sink.dropped_bytes == 0 and sink.kept_bytes == len(data)


def test_the_limit_is_reached_only_once_the_output_passes_it(run):
    sink = OutputSink(run, [], started=STARTED, limit_bytes=100, limit_action="kill")
    sink.feed(b"x" * 100)
    sink.flush()
    assert not sink.limit_reached
    sink.feed(b"y")
    sink.flush()
    assert sink.limit_reached
    sink.close()
    text = "".join(c.text for c in chunks(run))
    assert "[cronos] output limit of 100 bytes exceeded; stopping the run\n" in text
    assert text.endswith("the last 50 bytes of the output follow\n" + "x" * 49 + "y")


def test_the_head_and_the_notice_are_stored_live_and_the_tail_after_them(run):
    sink = OutputSink(run, [], started=STARTED, limit_bytes=1000)
    feed_in_reads(sink, numbered(1000), size=500)
    live = "".join(c.text for c in chunks(run))  # what a viewer has seen so far
    assert live.startswith("line 0000000\n")
    assert live.endswith("added when it ends\n")
    assert "line 0000999" not in live
    sink.close()
    rows = chunks(run)
    assert [c.seq for c in rows] == list(range(len(rows)))
    text = "".join(c.text for c in rows)
    assert text.startswith(live)
    assert text.endswith("line 0000999\n")
    assert text.index("bytes not kept") > text.index("added when it ends")


def test_the_tail_buffer_never_holds_more_than_the_rest_of_the_limit(run):
    sink = OutputSink(run, [], started=STARTED, limit_bytes=10_000)
    for _ in range(200):
        sink.feed(b"z" * 65536)
        sink.flush()
        assert sink._tail_bytes <= 5_000
    sink.close()
    assert sink.kept_bytes == 10_000
    assert sink.dropped_bytes == 200 * 65536 - 10_000


SECRET = "ghp-0123456789abcdefSECRET"


def leaks(raw: bytes, secret: str = SECRET) -> list[str]:
    """Pieces of `secret` (6 characters or more) found in `raw`."""
    found = []
    for size in range(6, len(secret) + 1):
        for start in range(len(secret) - size + 1):
            piece = secret[start : start + size]
            if piece.encode() in raw:
                found.append(piece)
    return found


@pytest.mark.parametrize("split", [None, 3, 13, 20])
def test_a_secret_across_the_head_cut_is_masked_not_cut(run, tmp_path, split):
    # The head of a 200-byte limit ends at byte 100: inside the secret, and without a newline
    # near it; `split`: the secret also arrives in two reads.
    data = b"a" * 90 + SECRET.encode() + b"b" * 400
    sink = OutputSink(run, [SECRET], started=STARTED, limit_bytes=200)
    if split is None:
        parts = [data]
    else:
        parts = [data[: 90 + split], data[90 + split :]]
    parsed = "".join(sink.feed(part) or sink.flush() for part in parts)
    sink.close()
    assert parsed == "a" * 90 + MASK + "b" * 400
    raw = (tmp_path / sink.log_path).read_bytes()
    assert leaks(raw) == []
    assert leaks("".join(c.text for c in chunks(run)).encode()) == []
    assert raw.startswith(b"a" * 90)  # the head ends in the mask, on a character's edge
    raw.decode()  # no character cut in two


def test_a_secret_across_the_start_of_the_tail_is_masked_not_cut(run, tmp_path):
    sink = OutputSink(run, [SECRET], started=STARTED, limit_bytes=200)
    # The kept tail is the last 100 bytes: it starts inside the secret.
    sink.feed(b"a" * 500 + SECRET.encode()[:10])
    sink.flush()
    sink.feed(SECRET.encode()[10:] + b"c" * 90)
    sink.close()
    raw = (tmp_path / sink.log_path).read_bytes()
    assert leaks(raw) == []
    assert leaks("".join(c.text for c in chunks(run)).encode()) == []
    assert raw.endswith(b"c" * 90)
    raw.decode()
