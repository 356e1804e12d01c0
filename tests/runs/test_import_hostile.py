"""A hostile import folder: only its own regular files are read, each log beside its record.

Each bad shape is one run record beside the two good ones of the fixture: the line names the
record and what is wrong, `refused` when the import does not read a file (a link, not a regular
file, over its bound, not text, a log_file that leads out of the record's folder) and `failed`
when what it read cannot become a run; nothing of that run is written (no row, no log, no
chunk), the good runs are imported, and the folder is left as it was. A refused log refuses its
record whole (runs.legacy says why), so that fixing it and importing again brings the run and
its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.legacy import Status
from audit.actor import Actor
from runs.legacy import import_runs
from runs.models import Run, RunChunk
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-cronos"
SECRET = "root:x:0:0:the contents of a file outside the import folder\n"
RECORD = "runs/2026-11-22/cron-git-000002.json"


@pytest.fixture(autouse=True)
def log_dir(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    return settings.CRONOS_LOG_DIR


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder beside the import folder, with a file nobody should see through an import."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "passwd").write_text(SECRET)
    (folder / "passwd").chmod(0o600)
    return folder


@pytest.fixture
def source(tmp_path) -> Path:
    copy = tmp_path / "source"
    shutil.copytree(LEGACY, copy, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(copy):
        os.chmod(folder, 0o755)
    (copy / "runs/2026-11-22").mkdir()
    return copy


@contextlib.contextmanager
def deadline(seconds: int = 10) -> Iterator[None]:
    """Fail, rather than hang for ever, if the body blocks (opening a FIFO would)."""

    def expired(signum, frame):
        raise TimeoutError(f"the import blocked for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def write_record(source: Path, log_file=None, *, path: str = RECORD, **fields) -> Path:
    data = {
        "id": "hostile-1",
        "agent": "cron-git",
        "trigger": "scheduled",
        "started_at": "2026-11-22T00:00:02.000Z",
        "finished_at": "2026-11-22T00:00:09.000Z",
        "status": "success",
        "exit_code": 0,
        **fields,
    }
    if log_file is not None:
        data["log_file"] = log_file
    record = source / path
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(data))
    return record


def files(path: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every entry under path (links not followed): what it is and what it holds."""
    out: dict[str, tuple[str, bytes | str]] = {}
    for entry in sorted(path.rglob("*")):
        mode = entry.lstat().st_mode
        if stat.S_ISLNK(mode):
            out[str(entry.relative_to(path))] = ("link", os.readlink(entry))
        elif stat.S_ISREG(mode):
            out[str(entry.relative_to(path))] = ("file", entry.read_bytes())
        else:
            out[str(entry.relative_to(path))] = (stat.filemode(mode)[0], "")
    return out


def import_refusing_one(
    source: Path, log_dir: Path, expected: str, status: Status = Status.REFUSED
) -> str:
    """Import with the agents; the hostile record is not imported, on a line of its `status`
    naming `expected`, and the rest is kept."""
    before = files(source)
    out = StringIO()
    with deadline(), pytest.raises(CommandError, match=f"1 run record.*1 {status}"):
        call_command("cronos_import", str(source), stdout=out)
    text = out.getvalue()
    assert any(
        line.startswith(f"{status:<16}") and expected in line for line in text.splitlines()
    ), text
    counts = "refused 1, failed 0" if status == Status.REFUSED else "refused 0, failed 1"
    assert f"runs/ history: imported 2, already there 0, {counts}" in text
    assert Run.objects.count() == 2
    assert not Run.objects.filter(legacy_id="hostile-1").exists()
    assert not any(
        SECRET.strip() in chunk for chunk in RunChunk.objects.values_list("text", flat=True)
    )
    written = sorted(p.name for p in log_dir.rglob("*") if p.is_file())
    assert len(written) == 2 and all(name.startswith("cron-git-") for name in written)
    assert files(source) == before
    return text


@pytest.mark.parametrize(
    "log_file",
    [
        "../../../../../etc/passwd",
        "../../../outside/passwd",
        "../../agents/../../outside/passwd",
        # Inside the import folder, but not beside the record: still refused.
        "../2026-11-20/cron-git-080000.log",
        "./../2026-11-20/cron-git-080000.log",
        "..",
    ],
)
def test_a_log_file_with_dot_dot_is_refused_wherever_it_leads(source, log_dir, outside, log_file):
    record = write_record(source, log_file)
    text = import_refusing_one(
        source,
        log_dir,
        f"{record}: not imported: log file {log_file!r} is outside its record's folder",
    )
    assert "passwd" not in {p.name for p in log_dir.rglob("*")}
    assert log_file in text  # named, not read
    # log_file is what is wrong, and the hint says so.
    assert "fix its log_file (or remove it, to import the run without a log)" in text


def test_a_log_file_in_a_folder_below_the_record_is_refused(source, log_dir):
    (source / "runs/2026-11-22/logs").mkdir()
    (source / "runs/2026-11-22/logs/cron-git-000002.log").write_text("a log one folder down\n")
    record = write_record(source, "logs/cron-git-000002.log")
    import_refusing_one(
        source,
        log_dir,
        f"{record}: not imported: log file 'logs/cron-git-000002.log' is outside its",
    )


def test_an_absolute_log_file_is_refused_even_inside_the_folder(source, log_dir, outside):
    record = write_record(source, str(outside / "passwd"))
    import_refusing_one(
        source, log_dir, f"{record}: not imported: log file '{outside / 'passwd'}' is an absolute"
    )
    inside = source / "runs/2026-11-20/cron-git-080000.log"
    write_record(source, str(inside), id="hostile-2", path="runs/2026-11-22/cron-git-000003.json")
    Run.objects.all().delete()
    with pytest.raises(CommandError, match="2 run record"):
        call_command("cronos_import", str(source), stdout=StringIO())


def test_a_log_file_that_is_a_symlink_out_of_the_folder_is_refused(source, log_dir, outside):
    (source / "runs/2026-11-22/cron-git-000002.log").symlink_to(outside / "passwd")
    record = write_record(source, "cron-git-000002.log")
    import_refusing_one(
        source,
        log_dir,
        f"{record}: not imported: log file 'cron-git-000002.log' is a symbolic link to "
        f"{outside / 'passwd'}",
    )


def test_a_log_file_that_is_a_symlink_to_a_device_is_refused(source, log_dir):
    (source / "runs/2026-11-22/cron-git-000002.log").symlink_to("/dev/zero")
    write_record(source, "cron-git-000002.log")
    import_refusing_one(
        source, log_dir, "log file 'cron-git-000002.log' is a symbolic link to /dev/zero"
    )


def test_a_log_file_that_is_a_symlink_inside_the_folder_is_refused_too(source, log_dir):
    (source / "runs/2026-11-22/cron-git-000002.log").symlink_to("../2026-11-20/cron-git-080000.log")
    record = write_record(source, "cron-git-000002.log")
    text = import_refusing_one(
        source,
        log_dir,
        f"{record}: not imported: log file 'cron-git-000002.log' is a symbolic link to "
        "../2026-11-20/cron-git-080000.log",
    )
    # The line says what becomes of the run, and how to import it: log_file names the right
    # file, so the file is what to fix (with a copy), or log_file what to remove.
    assert (
        "put a copy there instead; import again once that is fixed, or remove its log_file to "
        "import the run without a log"
    ) in text
    assert "fix its log_file" not in text


def test_a_log_file_naming_no_file_fails_saying_to_fix_it(source, log_dir):
    record = write_record(source, "cron-git-00002.log")
    import_refusing_one(
        source,
        log_dir,
        f"{record}: not imported: log file 'cron-git-00002.log' is not beside the record; "
        "fix its log_file (or remove it, to import the run without a log) and import again",
        Status.FAILED,
    )


def test_a_log_file_that_is_a_hard_link_to_a_file_outside_is_refused(source, log_dir, outside):
    os.link(outside / "passwd", source / "runs/2026-11-22/cron-git-000002.log")
    record = write_record(source, "cron-git-000002.log")
    import_refusing_one(
        source, log_dir, f"{record}: not imported: log file 'cron-git-000002.log' is a hard link"
    )


def test_a_log_file_that_is_a_fifo_is_refused_without_opening_it(source, log_dir):
    os.mkfifo(source / "runs/2026-11-22/cron-git-000002.log")
    write_record(source, "cron-git-000002.log")
    import_refusing_one(source, log_dir, "is not a regular file: it is a named pipe (FIFO)")


def test_a_log_file_that_is_a_device_inside_the_folder_is_refused(source, log_dir):
    try:
        os.mknod(
            source / "runs/2026-11-22/cron-git-000002.log", 0o644 | stat.S_IFCHR, os.makedev(1, 5)
        )
    except (PermissionError, OSError):
        pytest.skip("this host cannot make a device file")
    write_record(source, "cron-git-000002.log")
    import_refusing_one(source, log_dir, "is not a regular file: it is a device")


def test_a_log_file_that_is_a_folder_is_refused(source, log_dir):
    write_record(source, ".")
    import_refusing_one(source, log_dir, "log file '.' is not a regular file: it is a folder")


def test_an_enormous_log_file_is_refused_without_reading_it(source, log_dir):
    with open(source / "runs/2026-11-22/cron-git-000002.log", "wb") as huge:
        huge.truncate(200 * 1024 * 1024)  # sparse: takes no room
    write_record(source, "cron-git-000002.log")
    import_refusing_one(source, log_dir, "is larger than the 64.0 MB an import reads (200.0 MB)")


def test_the_log_bound_is_a_setting(source, log_dir, settings):
    settings.CRONOS_IMPORT_MAX_LOG_BYTES = 10
    report = import_runs(source, Actor.system(), dry_run=True, incoming={"cron-git"})
    assert len(report.problems) == 2
    assert "is larger than the 10 bytes an import reads" in report.problems[0]


def test_a_log_file_with_a_nul_is_refused_and_one_of_the_wrong_type_fails(source, log_dir):
    write_record(source, "x\x00.log")
    import_refusing_one(source, log_dir, "holds a NUL character")
    write_record(source, ["a.log"])
    Run.objects.all().delete()
    with pytest.raises(CommandError, match=r"1 run record\(s\) not imported \(0 refused, 1 fail"):
        out = StringIO()
        call_command("cronos_import", str(source), stdout=out)
    assert "log_file must be the name of the log file beside the record" in out.getvalue()


def test_a_record_that_is_a_symlink_out_of_the_folder_is_refused(source, log_dir, outside):
    target = write_record(outside, path="record.json")
    (source / RECORD).symlink_to(target)
    import_refusing_one(
        source, log_dir, f"{source / RECORD}: the record is a symbolic link to {target}"
    )


def test_a_record_that_is_a_symlink_inside_the_folder_is_refused_too(source, log_dir):
    target = write_record(source, path="runs/2026-11-22/.hidden/record.json")
    (source / RECORD).symlink_to(".hidden/record.json")
    import_refusing_one(
        source, log_dir, f"{source / RECORD}: the record is a symbolic link to .hidden/record.json"
    )
    assert target.exists()


def test_a_record_that_is_a_fifo_is_refused_without_opening_it(source, log_dir):
    os.mkfifo(source / RECORD)
    import_refusing_one(source, log_dir, "the record is not a regular file: it is a named pipe")


def test_an_enormous_record_is_refused(source, log_dir):
    with open(source / RECORD, "wb") as huge:
        huge.truncate(200 * 1024 * 1024)
    import_refusing_one(
        source, log_dir, "the record is larger than the 1.0 MB an import reads (200.0 MB)"
    )


def test_a_record_nested_thousands_deep_is_refused_and_the_others_imported(source, log_dir):
    # json.loads recurses once per level: unchecked, this ended the whole import.
    (source / RECORD).write_text('{"id": ' + "[" * 100_000 + "]" * 100_000 + "}")
    import_refusing_one(
        source, log_dir, f"{source / RECORD}: the record is nested too deeply for an import to read"
    )


def test_a_record_that_is_not_json_fails(source, log_dir):
    (source / RECORD).write_text('{"id": "hostile-1",')
    import_refusing_one(source, log_dir, f"{source / RECORD}: not valid JSON (", Status.FAILED)


def test_a_binary_record_is_refused_as_binary(source, log_dir):
    (source / RECORD).write_bytes(b"\x00\x01\x02\xff" * 64)
    import_refusing_one(
        source, log_dir, f"{source / RECORD}: the record is a binary file, not text"
    )


@pytest.mark.parametrize("exit_code", [10**40, True, 2**31])
def test_an_exit_code_no_process_can_exit_with_fails(source, log_dir, exit_code):
    write_record(source, exit_code=exit_code)
    import_refusing_one(
        source, log_dir, "exit_code must be a whole number, as a process exits", Status.FAILED
    )


def test_a_date_folder_that_is_a_symlink_out_of_the_folder_is_refused(source, log_dir, outside):
    (source / "runs/2026-11-22").rmdir()
    write_record(outside, path="2026-11-22/cron-git-000002.json")
    (source / "runs/2026-11-22").symlink_to(outside / "2026-11-22")
    import_refusing_one(
        source,
        log_dir,
        f"{source / 'runs/2026-11-22'}: the folder is a symbolic link to "
        f"{outside / '2026-11-22'}; an import reads only the folder's own files",
    )


def test_a_date_folder_that_is_a_symlink_inside_the_folder_is_refused_too(source, log_dir):
    (source / "runs/2026-11-22").rmdir()
    (source / "runs/.elsewhere").mkdir()
    write_record(source, "cron-git-000002.log", path="runs/.elsewhere/cron-git-000002.json")
    (source / "runs/.elsewhere/cron-git-000002.log").write_text("a log\n")
    (source / "runs/2026-11-22").symlink_to(".elsewhere")
    import_refusing_one(
        source,
        log_dir,
        f"{source / 'runs/2026-11-22'}: the folder is a symbolic link to .elsewhere",
    )


def test_a_runs_folder_that_is_a_symlink_out_of_the_folder_is_refused(source, log_dir, outside):
    shutil.move(source / "runs", outside / "runs")
    (source / "runs").symlink_to(outside / "runs")
    out = StringIO()
    with deadline(), pytest.raises(CommandError, match="1 run record"):
        call_command("cronos_import", str(source), stdout=out)
    assert (
        f"{source / 'runs'}: the runs/ folder is a symbolic link to {outside / 'runs'}"
        in out.getvalue()
    )
    assert not Run.objects.exists()


def test_the_written_log_is_named_from_the_run_never_from_the_record(source, log_dir):
    # The same log name beside two records of two days: each run gets a file of its own.
    shutil.copyfile(
        source / "runs/2026-11-20/cron-git-080000.log",
        source / "runs/2026-11-22/cron-git-080000.log",
    )
    write_record(source, "cron-git-080000.log")
    call_command("cronos_import", str(source), stdout=StringIO())
    run = Run.objects.get(legacy_id="hostile-1")
    assert run.log_path == f"runs/2026-11-22/cron-git-000002-{run.pk}.log"
    assert (log_dir / run.log_path).read_bytes() == (
        source / "runs/2026-11-20/cron-git-080000.log"
    ).read_bytes()
    paths = list(Run.objects.values_list("log_path", flat=True))
    assert len(set(paths)) == 3


RUN_21_LOG = b"run 21's raw log: the only copy of what it printed\n"
# Where the imported runs' logs would go, by the names Cronos gives its own (HHMMSS of the start).
IMPORTED_LOG_NAMES = [
    "runs/2026-11-20/cron-git-080000-{pk}.log",
    "runs/2026-11-21/cron-git-120003-{pk}.log",
    "runs/2026-11-22/cron-git-000002-{pk}.log",
]


def test_an_import_never_overwrites_nor_copies_an_existing_log(source, log_dir):
    agent = make_agent("cron-git")
    at = datetime(2026, 11, 22, 0, 0, 2, tzinfo=UTC)
    run_21 = Run.import_finished(
        pk=21,
        agent=agent,
        trigger=Run.Trigger.MANUAL,
        state=Run.State.SUCCEEDED,
        created_at=at,
        started_at=at,
        finished_at=at,
        log_path="runs/2026-11-22/cron-git-000002-21.log",
    )
    (log_dir / "runs/2026-11-22").mkdir(parents=True)
    (log_dir / run_21.log_path).write_bytes(RUN_21_LOG)
    # Logs an earlier database left (its runs numbered from 1 again), at every name the
    # imported runs could be given.
    left = {
        name.format(pk=pk): f"left by run {pk}\n".encode()
        for name in IMPORTED_LOG_NAMES
        for pk in range(1, 100)
        if name.format(pk=pk) != run_21.log_path
    }
    for relative, data in left.items():
        (log_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (log_dir / relative).write_bytes(data)
    # Records naming run 21's log: beside them by the same name (another file), and out of the
    # folder to the log itself.
    (source / "runs/2026-11-22/cron-git-000002-21.log").write_bytes(b"the record's own log\n")
    write_record(source, "cron-git-000002-21.log")
    by_path = write_record(
        source, str(log_dir / run_21.log_path), id="hostile-2", path=f"{RECORD[:-5]}-2.json"
    )
    by_dot_dot = write_record(
        source,
        f"../../../logs/{run_21.log_path}",
        id="hostile-3",
        path=f"{RECORD[:-5]}-3.json",
    )

    report = import_runs(source, Actor.system())

    assert (log_dir / run_21.log_path).read_bytes() == RUN_21_LOG
    assert all((log_dir / relative).read_bytes() == data for relative, data in left.items())
    assert report.problems == [
        f"{by_path}: not imported: log file '{log_dir / run_21.log_path}' is an absolute path; "
        "a record names its log by its file name, in the record's own folder; fix its log_file "
        "(or remove it, to import the run without a log) and import again",
        f"{by_dot_dot}: not imported: log file '../../../logs/{run_21.log_path}' is outside its "
        "record's folder; a record names its log by its file name, in the record's own folder; "
        "fix its log_file (or remove it, to import the run without a log) and import again",
    ]
    imported = Run.objects.exclude(pk=21).order_by("started_at")
    assert [run.legacy_id for run in imported][2] == "hostile-1"
    sources = [
        source / "runs/2026-11-20/cron-git-080000.log",
        source / "runs/2026-11-21/cron-git-120000.log",
        source / "runs/2026-11-22/cron-git-000002-21.log",
    ]
    for run, original in zip(imported, sources, strict=True):
        assert run.log_path not in left and run.log_path != run_21.log_path
        written = log_dir / run.log_path
        assert written.read_bytes() == original.read_bytes()
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert not any(
        RUN_21_LOG.decode().strip() in text
        for text in RunChunk.objects.values_list("text", flat=True)
    )


def test_a_log_copied_from_a_private_file_stays_private(source, log_dir):
    log = source / "runs/2026-11-22/cron-git-000002.log"
    log.write_text("a log only its owner may read\n")
    log.chmod(0o600)
    write_record(source, "cron-git-000002.log")
    make_agent("cron-git")
    assert import_runs(source, Actor.system()).problems == []
    for run in Run.objects.all():
        assert stat.S_IMODE((log_dir / run.log_path).stat().st_mode) == 0o600


def test_a_dry_run_refuses_the_same_and_writes_nothing(source, log_dir, outside):
    record = write_record(source, "../../../outside/passwd")
    out = StringIO()
    with deadline(), pytest.raises(CommandError, match="1 run record"):
        call_command("cronos_import", str(source), "--dry-run", stdout=out)
    assert (
        f"{record}: not imported: log file '../../../outside/passwd' is outside its record's"
        in out.getvalue()
    )
    assert not Run.objects.exists()
    assert not log_dir.exists()


def test_a_record_with_a_byte_order_mark_is_imported(source, log_dir):
    record = write_record(source)
    record.write_bytes(b"\xef\xbb\xbf" + record.read_bytes().replace(b"\n", b"\r\n"))
    call_command("cronos_import", str(source), stdout=StringIO())
    assert Run.objects.filter(legacy_id="hostile-1").exists()


def test_an_id_too_long_to_keep_fails_by_name(source, log_dir):
    write_record(source, id="x" * 65)
    import_refusing_one(
        source, log_dir, "id is 65 characters long; Cronos keeps ids of up to 64", Status.FAILED
    )
