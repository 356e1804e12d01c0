"""A hostile import folder: every path it names or holds stays inside it, or is refused by name.

Each refused shape is one run record beside the two good ones of the fixture: the message names
the record and what is wrong, nothing of that run is written (no row, no log, no chunk), the
good runs are imported, and the folder is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.actor import Actor
from runs.legacy import import_runs
from runs.models import Run, RunChunk

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


def import_refusing_one(source: Path, log_dir: Path, expected: str) -> str:
    """Import with the agents; the hostile record is refused naming `expected`, the rest kept."""
    before = files(source)
    out = StringIO()
    with deadline(), pytest.raises(CommandError, match="1 run record"):
        call_command("cronos_import", str(source), stdout=out)
    text = out.getvalue()
    assert expected in text, text
    assert "runs/ history: imported 2, already there 0, failed 1" in text
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
    ["../../../../../etc/passwd", "../../../outside/passwd", "../../agents/../../outside/passwd"],
)
def test_a_log_file_with_dot_dot_out_of_the_folder_is_refused(source, log_dir, outside, log_file):
    record = write_record(source, log_file)
    text = import_refusing_one(
        source, log_dir, f"{record}: log file {log_file!r} is outside the import folder"
    )
    assert "passwd" not in {p.name for p in log_dir.rglob("*")}
    assert "passwd" in text  # named, not read


def test_an_absolute_log_file_is_refused_even_inside_the_folder(source, log_dir, outside):
    write_record(source, str(outside / "passwd"))
    import_refusing_one(source, log_dir, "is an absolute path")
    inside = source / "runs/2026-11-20/cron-git-080000.log"
    write_record(source, str(inside), id="hostile-2", path="runs/2026-11-22/cron-git-000003.json")
    Run.objects.all().delete()
    with pytest.raises(CommandError, match="2 run record"):
        call_command("cronos_import", str(source), stdout=StringIO())


def test_a_log_file_that_is_a_symlink_out_of_the_folder_is_refused(source, log_dir, outside):
    (source / "runs/2026-11-22/cron-git-000002.log").symlink_to(outside / "passwd")
    write_record(source, "cron-git-000002.log")
    import_refusing_one(
        source, log_dir, "log file 'cron-git-000002.log' is outside the import folder"
    )


def test_a_log_file_that_is_a_symlink_to_a_device_is_refused(source, log_dir):
    (source / "runs/2026-11-22/cron-git-000002.log").symlink_to("/dev/zero")
    write_record(source, "cron-git-000002.log")
    import_refusing_one(
        source, log_dir, "log file 'cron-git-000002.log' is outside the import folder"
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


def test_a_log_file_with_a_nul_or_of_the_wrong_type_is_refused(source, log_dir):
    write_record(source, "x\x00.log")
    import_refusing_one(source, log_dir, "holds a NUL character")
    write_record(source, ["a.log"])
    Run.objects.all().delete()
    with pytest.raises(CommandError, match="1 run record"):
        out = StringIO()
        call_command("cronos_import", str(source), stdout=out)
    assert "log_file must be the name of the log file beside the record" in out.getvalue()


def test_a_record_that_is_a_symlink_out_of_the_folder_is_refused(source, log_dir, outside):
    target = write_record(outside, path="record.json")
    (source / RECORD).symlink_to(target)
    import_refusing_one(
        source, log_dir, f"{source / RECORD}: the record is outside the import folder"
    )


def test_a_record_that_is_a_fifo_is_refused_without_opening_it(source, log_dir):
    os.mkfifo(source / RECORD)
    import_refusing_one(source, log_dir, "the record is not a regular file: it is a named pipe")


def test_an_enormous_record_is_refused(source, log_dir):
    with open(source / RECORD, "wb") as huge:
        huge.truncate(200 * 1024 * 1024)
    import_refusing_one(source, log_dir, "the record is larger than the 8.0 MB an import reads")


def test_a_date_folder_that_is_a_symlink_out_of_the_folder_is_refused(source, log_dir, outside):
    (source / "runs/2026-11-22").rmdir()
    write_record(outside, path="2026-11-22/cron-git-000002.json")
    (source / "runs/2026-11-22").symlink_to(outside / "2026-11-22")
    import_refusing_one(
        source, log_dir, f"{source / 'runs/2026-11-22'}: the folder is outside the import folder"
    )


def test_a_runs_folder_that_is_a_symlink_out_of_the_folder_is_refused(source, log_dir, outside):
    shutil.move(source / "runs", outside / "runs")
    (source / "runs").symlink_to(outside / "runs")
    out = StringIO()
    with deadline(), pytest.raises(CommandError, match="1 run record"):
        call_command("cronos_import", str(source), stdout=out)
    assert f"{source / 'runs'}: the runs/ folder is outside the import folder" in out.getvalue()
    assert not Run.objects.exists()


def test_symlinks_that_stay_inside_the_folder_are_followed(source, log_dir):
    (source / "runs/2026-11-22/cron-git-000002.log").symlink_to("../2026-11-20/cron-git-080000.log")
    write_record(source, "cron-git-000002.log")
    call_command("cronos_import", str(source), stdout=StringIO())
    run = Run.objects.get(legacy_id="hostile-1")
    assert run.output_bytes == (source / "runs/2026-11-20/cron-git-080000.log").stat().st_size


def test_the_written_log_is_named_from_the_run_never_from_the_record(source, log_dir):
    write_record(source, "../2026-11-20/cron-git-080000.log")
    call_command("cronos_import", str(source), stdout=StringIO())
    run = Run.objects.get(legacy_id="hostile-1")
    assert run.log_path == f"runs/2026-11-22/cron-git-000002-{run.pk}.log"
    assert (log_dir / run.log_path).read_bytes() == (
        source / "runs/2026-11-20/cron-git-080000.log"
    ).read_bytes()
    # Two records naming one log file get a file each, and neither overwrites another run's.
    paths = list(Run.objects.values_list("log_path", flat=True))
    assert len(set(paths)) == 3


def test_a_dry_run_refuses_the_same_and_writes_nothing(source, log_dir, outside):
    record = write_record(source, "../../../outside/passwd")
    out = StringIO()
    with deadline(), pytest.raises(CommandError, match="1 run record"):
        call_command("cronos_import", str(source), "--dry-run", stdout=out)
    assert (
        f"{record}: log file '../../../outside/passwd' is outside the import folder"
        in out.getvalue()
    )
    assert not Run.objects.exists()
    assert not log_dir.exists()


def test_a_record_with_a_byte_order_mark_is_imported(source, log_dir):
    record = write_record(source, "../2026-11-20/cron-git-080000.log")
    record.write_bytes(b"\xef\xbb\xbf" + record.read_bytes().replace(b"\n", b"\r\n"))
    call_command("cronos_import", str(source), stdout=StringIO())
    assert Run.objects.filter(legacy_id="hostile-1").exists()


def test_an_id_too_long_to_keep_is_refused_by_name(source, log_dir):
    write_record(source, id="x" * 65)
    import_refusing_one(source, log_dir, "id is 65 characters long; Cronos keeps ids of up to 64")
