"""Settings come from the environment; each shape is checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "engine": s.DATABASES["default"]["ENGINE"],
    "name": str(s.DATABASES["default"]["NAME"]),
    "options": s.DATABASES["default"].get("OPTIONS", {}),
    "broker": "redis" if "redis" in s.Q_CLUSTER else "orm",
    "layer": s.CHANNEL_LAYERS["default"]["BACKEND"],
    "tz": s.TIME_ZONE,
    "data": str(s.DATA_DIR),
    "debug": s.DEBUG,
}))
"""


def run_python(code: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "TIME_ZONE",
            "CRONOS_PRODUCTION",
            "SECRET_KEY",
            "CRONOS_SECRET_KEYS",
            "DEBUG",
        }
    }
    clean.update(
        {
            "DJANGO_SETTINGS_MODULE": "cronos_site.settings",
            "CRONOS_DATA_DIR": str(tmp_path / "data"),
        }
    )
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_with(env: dict[str, str], tmp_path: Path) -> dict:
    result = run_python(PRINT_SETTINGS, env, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_with_no_variables_cronos_runs_on_sqlite_and_the_orm_broker(tmp_path):
    shape = settings_with({}, tmp_path)
    assert shape["engine"] == "django.db.backends.sqlite3"
    assert shape["name"] == str(tmp_path / "data" / "cronos.sqlite3")
    assert shape["options"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in shape["options"]["init_command"]
    assert shape["broker"] == "orm"
    assert shape["layer"] == "channels.layers.InMemoryChannelLayer"
    assert shape["tz"] == "UTC"
    assert shape["debug"] is False


def test_database_url_and_redis_url_choose_the_scaled_out_shape(tmp_path):
    shape = settings_with(
        {
            "DATABASE_URL": "postgres://cronos@db.example:5432/cronos",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "TIME_ZONE": "Europe/Paris",
        },
        tmp_path,
    )
    assert shape["engine"] == "django.db.backends.postgresql"
    assert shape["name"] == "cronos"
    assert shape["broker"] == "redis"
    assert shape["layer"] == "channels_redis.core.RedisChannelLayer"
    assert shape["tz"] == "Europe/Paris"


def test_a_generated_secret_key_is_kept_private_and_reused(tmp_path):
    settings_with({}, tmp_path)
    key_file = tmp_path / "data" / "secret_key"
    first = key_file.read_text()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    settings_with({}, tmp_path)
    assert key_file.read_text() == first


def test_the_production_flag_passes_the_deploy_check(tmp_path):
    env = {
        "CRONOS_PRODUCTION": "true",
        "SECRET_KEY": Fernet.generate_key().decode() * 2,
        "CRONOS_SECRET_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "cronos.example.com",
    }
    code = (
        "import sys; from django.core.management import execute_from_command_line;"
        "execute_from_command_line(['manage.py','check','--deploy','--fail-level','WARNING'])"
    )
    result = run_python(code, env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = run_python(PRINT_SETTINGS, {"CRONOS_PRODUCTION": "true"}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.django_db
def test_the_sqlite_database_is_in_wal_mode():
    if connection.vendor != "sqlite":
        pytest.skip("the embedded shape only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


def variables_cronos_reads() -> set[str]:
    """Every environment variable named in settings.py's env_* calls (and cronos_init's)."""
    import re

    sources = [
        ROOT / "cronos_site" / "settings.py",
        ROOT / "cronos_site" / "web" / "management" / "commands" / "cronos_init.py",
    ]
    names: set[str] = set()
    for source in sources:
        names |= set(re.findall(r'(?:env_\w*|_env)\(\s*"([A-Z][A-Z0-9_]+)"', source.read_text()))
    return names


def test_every_variable_set_empty_means_unset(tmp_path):
    names = variables_cronos_reads()
    # The list is read from the code, so a new setting is covered without touching this test.
    assert {"DATABASE_URL", "REDIS_URL", "CRONOS_WORKERS", "CRONOS_ADMIN_PASSWORD"} <= names
    empty = {name: "" for name in names} | {f"{name}_FILE": "" for name in names}
    empty["CRONOS_DATA_DIR"] = str(tmp_path / "data")  # where the test's files go
    assert settings_with(empty, tmp_path) == settings_with({}, tmp_path)


def test_every_variable_set_to_spaces_means_unset_too(tmp_path):
    spaces = {"DATABASE_URL": "  ", "TIME_ZONE": " ", "CRONOS_HEARTBEAT_SECONDS": "\t"}
    assert settings_with(spaces, tmp_path) == settings_with({}, tmp_path)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("CRONOS_WORKERS", "two", "CRONOS_WORKERS must be a whole number (got 'two')"),
        ("CRONOS_HEARTBEAT_SECONDS", "5s", "CRONOS_HEARTBEAT_SECONDS must be a number"),
        ("CRONOS_KILL_GRACE_SECONDS", "inf", "CRONOS_KILL_GRACE_SECONDS must be a finite"),
        ("DEBUG", "maybe", "DEBUG must be true or false (got 'maybe')"),
        ("DATABASE_URL", "mysqlx://db/cronos", "DATABASE_URL is not a database URL"),
        ("SECRET_KEY_FILE", "/nonexistent/key", "SECRET_KEY_FILE names /nonexistent/key"),
        # A character device, which reads for ever: refused before it is read.
        ("SECRET_KEY_FILE", "/dev/zero", "SECRET_KEY_FILE names /dev/zero, which is not a regular"),
        ("TIME_ZONE", "Mars/Base", "TIME_ZONE must be an IANA time zone"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ("CRONOS_WORKERS", "-3", "CRONOS_WORKERS must be at least 1 (got '-3')"),
        ("CRONOS_HEARTBEAT_SECONDS", "0", "CRONOS_HEARTBEAT_SECONDS must be more than 0"),
        ("CRONOS_KILL_GRACE_SECONDS", "-1", "CRONOS_KILL_GRACE_SECONDS must be at least 0"),
        ("CRONOS_STALE_AFTER_SECONDS", "1", "must be at least twice CRONOS_HEARTBEAT_SECONDS"),
        ("DATABASE_URL", "sqlite://", "DATABASE_URL must name a SQLite file"),
        ("CRONOS_DATA_DIR", "/var/tmp", "must be a folder of Cronos's own, not a shared one"),
    ],
)
def test_a_setting_cronos_cannot_use_is_one_line_naming_it(tmp_path, variable, value, words):
    env = {"CRONOS_DATA_DIR": str(tmp_path / "data"), variable: value}
    before = Path("/tmp").stat().st_mode
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "cronos_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("cronos: ")
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert Path("/tmp").stat().st_mode == before  # nothing was changed before the refusal
