"""The suite passes at any hour: the date-sensitive tests, run at the instants where date code
breaks.

Each test marked `date_sensitive` runs on a frozen clock (tests/conftest.py), at an ordinary
noon unless `pytest --at=ISO` says otherwise. Here they run again, in a pytest of their own,
at each instant below; a marked test that only passes at noon (runs "90 minutes ago" on the
day before, a window counted from the wrong midnight, an hour that DST removed) fails here
instead of in the CI run that happens to start after midnight. By hand:

    .venv/bin/pytest -m date_sensitive --at=2026-06-15T00:30:00+00:00
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Set in the pytest started here: it selects no test of this file, and this says so too.
CHILD = "CRONOS_ANY_HOUR_CHILD"

INSTANTS = {
    "just after midnight UTC": "2026-06-15T00:30:00+00:00",
    # 00:30 CEST: the tests that set TIME_ZONE to Europe/Paris start their day here.
    "just after midnight in Europe/Paris": "2026-06-14T22:30:00+00:00",
    "a new year, just after midnight UTC": "2027-01-01T00:30:00+00:00",
    # 03:30 CEST, just after Paris skipped 02:00-03:00: the day has 23 hours.
    "the night Paris springs forward": "2027-03-28T01:30:00+00:00",
    # 02:30 CET, the second time that night: the day has 25 hours.
    "the night Paris falls back": "2027-10-31T01:30:00+00:00",
}

pytestmark = pytest.mark.skipif(
    os.environ.get(CHILD) == "1", reason="inside a run started by tests/test_any_hour.py"
)


def shares(workers: int) -> list[list[str]]:
    """The instants, dealt out to `workers` pytests: one a core, not one an instant (each
    pytest pays once for collecting the suite and making its database)."""
    names = list(INSTANTS)
    return [names[i::workers] for i in range(min(workers, len(names)))]


def marked_files(session: pytest.Session) -> list[str]:
    """The files of this session's marked tests (all of them in `pytest`), or the whole suite
    when it has none (this file run alone): the pytests started here collect only those."""
    files = {
        str(item.path.relative_to(ROOT))
        for item in session.items
        if item.get_closest_marker("date_sensitive") is not None
    }
    return sorted(files) or ["tests"]


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """The marked tests at every instant, in a pytest a core, started at once (each has its own
    database): `--at` given once per instant runs each test once per instant (tests/conftest.py),
    its id ending with the instant. What each test did at each instant, from `-rA`'s lines."""
    files = marked_files(request.session)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "DATABASE_URL")}
    # The marked tests are unit tests: SQLite and no Redis, whatever lane this is.
    env.pop("REDIS_URL", None)
    env[CHILD] = "1"
    base = tmp_path_factory.mktemp("any-hour")
    started = []
    for index, names in enumerate(shares(os.cpu_count() or 1)):
        log = base / f"{index}.log"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rA",
            "-m",
            "date_sensitive",
            *(f"--at={INSTANTS[name]}" for name in names),
            f"--basetemp={base / str(index)}",
            *files,
        ]
        with log.open("w") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        started.append((names, process, log))
    finished = {}
    try:
        for names, process, log in started:
            process.wait(timeout=600)
            for name in names:
                finished[name] = (process.returncode, log.read_text())
    finally:
        for _, process, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    return finished


@pytest.mark.parametrize("name", list(INSTANTS))
def test_the_date_sensitive_tests_pass_at(runs, name):
    returncode, output = runs[name]
    lines = output.splitlines()
    tail = "\n".join(lines[-40:])
    # `-rA` names each test with its outcome; this instant's end its id (tests/conftest.py).
    here = re.compile(rf"[\[-]at={re.escape(INSTANTS[name])}[\]-]")
    mine = [line for line in lines if here.search(line)]
    failed = [line for line in mine if line.startswith(("FAILED", "ERROR"))]
    assert not failed, f"at {INSTANTS[name]} ({name}):\n" + "\n".join(failed)
    assert any(line.startswith("PASSED") for line in mine), f"at {INSTANTS[name]}:\n{tail}"
    # Any other exit status than 0 is a test that failed at another instant of the same
    # pytest (1), or a pytest that could not run its tests.
    failed_elsewhere = any(line.startswith(("FAILED", "ERROR")) and "at=" in line for line in lines)
    assert returncode == 0 or (returncode == 1 and failed_elsewhere), tail
