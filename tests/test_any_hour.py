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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One pytest per instant, all started at once (each has its own in-memory database)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "DATABASE_URL")}
    # The marked tests are unit tests: SQLite and no Redis, whatever lane this is.
    env.pop("REDIS_URL", None)
    env[CHILD] = "1"
    base = tmp_path_factory.mktemp("any-hour")
    started = {}
    for index, (name, instant) in enumerate(INSTANTS.items()):
        log = base / f"{index}.log"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-m",
            "date_sensitive",
            f"--at={instant}",
            f"--basetemp={base / str(index)}",
            "tests",
        ]
        with log.open("w") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        started[name] = (process, log)
    finished = {}
    try:
        for name, (process, log) in started.items():
            process.wait(timeout=600)
            finished[name] = (process.returncode, log.read_text())
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return finished


@pytest.mark.parametrize("name", list(INSTANTS))
def test_the_date_sensitive_tests_pass_at(runs, name):
    returncode, output = runs[name]
    tail = "\n".join(output.splitlines()[-40:])
    assert returncode == 0, f"at {INSTANTS[name]} ({name}):\n{tail}"
    assert " passed" in tail and " failed" not in tail and " error" not in tail, tail
