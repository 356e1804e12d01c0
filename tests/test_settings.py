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


# Loads the settings module's own source twice in one interpreter (so that the process id in the
# test database's name and the generated keys are the same both times), first with every variable
# unset and then with each set to the value given, and prints every setting of each as its repr.
# The source is compiled as if it lived in a scratch checkout (argv[2]): BASE_DIR, and so the
# default data, work and log folders, are the test's own, and CRONOS_DATA_DIR can be emptied too.
LOAD_SETTINGS_TWICE = """
import json, os, sys
source, fake_path, names, value = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
code = compile(open(source).read(), fake_path, "exec")
def load(env):
    for name in names:
        os.environ.pop(name, None)
    os.environ.update(env)
    scope = {"__file__": fake_path, "__name__": "cronos_settings_copy"}
    exec(code, scope)
    return {k: repr(v) for k, v in scope.items() if k.isupper() and not k.startswith("_")}
unset = load({})
given = load({name: value for name in names})
print(json.dumps({"unset": unset, "given": given}))
"""

# The helpers through which settings code reads the environment, which treat an empty value as
# unset; per file, the one function allowed to touch os.environ itself.
ENV_READERS = {
    ROOT / "cronos_site" / "settings.py": "env_value",
    ROOT / "cronos_site" / "web" / "management" / "commands" / "cronos_init.py": "_env",
}
ENV_HELPERS = {"env_value", "env_str", "env_bool", "env_int", "env_float", "env_list"}
ENV_HELPERS |= {"env_secret", "_env"}


def every_setting(value: str, tmp_path: Path, source: Path | None = None) -> dict[str, dict]:
    """Every setting (each upper-case name of the settings module) as its repr, with every
    variable Cronos reads unset, and with every one of them set to `value`."""
    names = variables_cronos_reads()
    names |= {f"{name}_FILE" for name in names}
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("CRONOS_")}
    checkout = tmp_path / "checkout"
    (checkout / "cronos_site").mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SETTINGS_TWICE,
            str(source or ROOT / "cronos_site" / "settings.py"),
            str(checkout / "cronos_site" / "settings.py"),
            json.dumps(sorted(names)),
            value,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("value", ["", "  \t "], ids=["empty", "spaces"])
def test_every_variable_set_empty_means_unset(tmp_path, value):
    names = variables_cronos_reads()
    # The list is read from the code, so a new setting is covered without touching this test.
    assert {"DATABASE_URL", "REDIS_URL", "CRONOS_WORKERS", "CRONOS_ADMIN_PASSWORD"} <= names
    assert {"CRONOS_DATA_DIR", "CRONOS_LOG_DIR", "SECRET_KEY", "CRONOS_ALLOW_UNISOLATED"} <= names
    loaded = every_setting(value, tmp_path)
    unset, given = loaded["unset"], loaded["given"]
    # Every setting, not a sample: the database, the broker, the folders, the keys, the limits.
    assert len(unset) > 80
    for name in ("DATABASES", "Q_CLUSTER", "CRONOS_LOG_DIR", "SECRET_KEY", "AXES_COOLOFF_TIME"):
        assert name in unset
    # The defaults are the scratch checkout's: nothing of the real one was read or written.
    assert unset["DATA_DIR"] == repr(tmp_path / "checkout" / "data")
    assert given == unset


def test_every_setting_is_read_from_the_environment_through_the_helpers():
    # The test above sets the variables named in env_* calls: a setting read from os.environ
    # directly, or through a name built at run time, would escape it.
    import ast

    for path, reader in ENV_READERS.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        inside = {
            node
            for function in ast.walk(tree)
            if isinstance(function, ast.FunctionDef) and function.name in ENV_HELPERS
            for node in ast.walk(function)
        }
        allowed = {
            node
            for function in ast.walk(tree)
            if isinstance(function, ast.FunctionDef) and function.name == reader
            for node in ast.walk(function)
        }
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}:
                assert node in allowed, f"{where} reads the environment outside {reader}()"
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                imported = {alias.name for alias in node.names}
                assert not imported & {"environ", "getenv", "environb"}, where
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ENV_HELPERS
                and node not in inside
            ):
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                    f"{where}: {node.func.id}() must name its variable as a literal"
                )


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
        # A cap that rounds to $0.00 would block every run; one past a DecimalField's room
        # would break every hand-over.
        ("CRONOS_SITE_DAILY_BUDGET_USD", "0.004", "must be 0 (no cap) or an amount from 0.01"),
        ("CRONOS_SITE_DAILY_BUDGET_USD", "1e30", "must be 0 (no cap) or an amount from 0.01"),
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
