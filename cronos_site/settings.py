"""Cronos settings: one module, read from the environment.

With no variables set, Cronos runs in its embedded default shape: SQLite (WAL, IMMEDIATE
transactions), django-q2 on the ORM broker, an in-memory channel layer, and files kept in a
git-ignored ``data/`` folder of the checkout. ``DATABASE_URL`` and ``REDIS_URL`` move it to the
scaled-out shape (DESIGN.md section 2). Every key is listed in the README.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


class SettingError(ImproperlyConfigured):
    """A variable of the environment that Cronos cannot use; the message names it."""


def env_value(name: str) -> str | None:
    """NAME's value with surrounding spaces removed, or None when unset or empty.

    Empty means unset for every setting (`DATABASE_URL=` in a .env file or a compose file is
    a common way of writing "not given"): the default applies instead of a crash.
    """
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def env_str(name: str, default: str = "") -> str:
    value = env_value(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    value = env_value(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingError(f"{name} must be true or false (got {value!r}).")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    """A whole number from NAME, at least `minimum`; SettingError when it is not one."""
    value = env_value(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingError(f"{name} must be a whole number (got {value!r}).") from None
    if minimum is not None and number < minimum:
        raise SettingError(f"{name} must be at least {minimum} (got {value!r}).")
    return number


def env_float(
    name: str, default: float, minimum: float | None = None, above: bool = False
) -> float:
    """A number of seconds (or any real number) from NAME, at least `minimum` (more than it
    when `above`); SettingError when it is not one."""
    value = env_value(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise SettingError(f"{name} must be a number (got {value!r}).") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SettingError(f"{name} must be a finite number (got {value!r}).")
    if minimum is not None and (number <= minimum if above else number < minimum):
        bound = f"more than {minimum:g}" if above else f"at least {minimum:g}"
        raise SettingError(f"{name} must be {bound} (got {value!r}).")
    return number


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_secret(name: str) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (docker/k8s secrets)."""
    path = env_value(f"{name}_FILE")
    if path:
        try:
            # A regular file of a sane size: a pipe or /dev/zero would hang every command.
            if not Path(path).is_file():
                raise SettingError(f"{name}_FILE names {path}, which is not a regular file.")
            if Path(path).stat().st_size > 64 * 1024:
                raise SettingError(f"{name}_FILE names {path}, which is larger than 64 KB.")
            return Path(path).read_text().strip() or None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SettingError(
                f"{name}_FILE names {path}, which cannot be read: {reason}."
            ) from None
    return env_value(name)


def kept_secret(path: Path, make) -> str:
    """A locally generated secret, created once and kept in the data directory (0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make() + "\n")
    return path.read_text().strip()


# Where Cronos keeps its own files: the database, generated keys, run logs. Private to Cronos
# (0700, files 0600) and hidden from agents (DESIGN.md §4 "Isolation from Cronos").
DATA_DIR = Path(env_str("CRONOS_DATA_DIR", str(BASE_DIR / "data"))).resolve()
# Where agents' own files live, outside data/: each run's folder (CRONOS_RUN_DIR), the demo
# repository, and later review worktrees. Agents see this; they never see DATA_DIR.
CRONOS_WORK_DIR = Path(env_str("CRONOS_WORK_DIR", str(BASE_DIR / "work"))).resolve()
for _inner, _outer in ((CRONOS_WORK_DIR, DATA_DIR), (DATA_DIR, CRONOS_WORK_DIR)):
    if _inner == _outer or _outer in _inner.parents:
        raise SettingError(
            f"CRONOS_WORK_DIR ({CRONOS_WORK_DIR}) and CRONOS_DATA_DIR ({DATA_DIR}) must not "
            "contain each other: agents see the first and must never see the second."
        )
# Checked before anything is changed: the data folder is made private (0700), which a shared
# folder (/, /tmp, a home) must never be.
if DATA_DIR == Path(DATA_DIR.anchor) or (DATA_DIR.exists() and DATA_DIR.stat().st_mode & 0o1000):
    raise SettingError(
        f"CRONOS_DATA_DIR ({DATA_DIR}) must be a folder of Cronos's own, not a shared one such "
        "as / or /tmp: Cronos makes it private (0700)."
    )
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
with contextlib.suppress(OSError):  # a folder someone else owns keeps its mode; isolation hides it
    if DATA_DIR.stat().st_uid == os.geteuid():
        DATA_DIR.chmod(0o700)

# The production flag turns on every hardening that `manage.py check --deploy` asks for and
# refuses generated keys: a production site must be given its keys.
PRODUCTION = env_bool("CRONOS_PRODUCTION")
DEBUG = env_bool("DEBUG")

SECRET_KEY = env_secret("SECRET_KEY")
if SECRET_KEY is None:
    if PRODUCTION:
        raise SettingError("CRONOS_PRODUCTION is set: give SECRET_KEY (or SECRET_KEY_FILE).")
    SECRET_KEY = kept_secret(DATA_DIR / "secret_key", lambda: secrets.token_urlsafe(50))

# Keys for agent secrets (Fernet, comma separated; the first encrypts, all decrypt), so that
# keys can be rotated: add a new key first, run `cronos_rotate_secrets`, then drop the old one.
CRONOS_SECRET_KEYS = [
    k.strip() for k in (env_secret("CRONOS_SECRET_KEYS") or "").split(",") if k.strip()
]
if not CRONOS_SECRET_KEYS:
    if PRODUCTION:
        raise SettingError("CRONOS_PRODUCTION is set: give CRONOS_SECRET_KEYS.")
    from cryptography.fernet import Fernet

    CRONOS_SECRET_KEYS = [
        kept_secret(DATA_DIR / "secret_keys", lambda: Fernet.generate_key().decode())
    ]

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "audit.apps.CronosAdminConfig",  # django.contrib.admin, its site auditing password changes
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "simple_history",
    "django_q",
    "django_celery_beat",  # housekeeping rows on the Celery engine; before "runs" (its admin)
    "channels",
    "ninja",  # the JSON API's docs page from its own static files, not a CDN (cronos_site.api)
    "axes",  # login throttling; before "audit", whose login entries read what axes decided
    "audit",
    "agents",
    "runs",
    "cronos_site.web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",  # Content-Security-Policy on every response (below)
    "cronos_site.web.middleware.NoStoreMiddleware",  # pages are private: Cache-Control: no-store
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "cronos_site.web.middleware.UsableRequestMiddleware",  # a 400 for what no page can use
    "cronos_site.web.middleware.HtmxResponsesMiddleware",  # login redirects, messages in fragments
    # Records who made each agent version (django-simple-history).
    "simple_history.middleware.HistoryRequestMiddleware",
    # Every page requires login unless its view says @login_not_required (Django 5.1+).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # Last, as django-axes asks: turns a login refused by the throttle into the 429 page.
    "axes.middleware.AxesMiddleware",
]

# The largest form a person can legitimately post (an agent with every field at its limit,
# agents/limits.py, in 4-byte characters: 5.02 MB) fits; past it the request is refused with
# the site's page saying why (views.site.bad_request), never a bare "Bad Request (400)".
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

ROOT_URLCONF = "cronos_site.urls"
CSRF_FAILURE_VIEW = "cronos_site.web.views.site.csrf_failure"  # a site page that says what to do
ASGI_APPLICATION = "cronos_site.asgi.application"
WSGI_APPLICATION = "cronos_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # Admins see on every page when agents run unisolated (DESIGN.md §4).
                "cronos_site.web.context_processors.isolation_warning",
                "cronos_site.web.context_processors.approvals_waiting",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# SQLite is tuned for several processes (web, cluster, scheduler) writing at once: WAL lets
# readers go on during a write, IMMEDIATE takes the write lock at BEGIN so two writers queue on
# the busy timeout instead of failing with "database is locked" on lock upgrade.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": env_int("CRONOS_SQLITE_TIMEOUT", 30, minimum=0),
    "init_command": ("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"),
}
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'cronos.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
except (ValueError, KeyError) as exc:  # an unknown scheme is a KeyError-like ValueError
    raise SettingError(f"DATABASE_URL is not a database URL Cronos can use: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" and str(
    DATABASES["default"]["NAME"]
) in ("", ":memory:"):
    # Each process would have a database of its own: the web, the workers and the scheduler
    # would never see each other's rows.
    raise SettingError("DATABASE_URL must name a SQLite file (sqlite:////path/to/cronos.db).")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = dict(SQLITE_OPTIONS)
    # Tests that start other processes (cluster, schedulers, browser) need a file database;
    # one per test session, so that two sessions on one checkout never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-cronos-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Broker, channel layer ------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    # Else Celery takes it for an AMQP host and retries for ever, and django-q2 fails late.
    raise SettingError(
        "REDIS_URL must be a redis://, rediss:// or unix:// URL such as "
        f"redis://127.0.0.1:6379/0 (got {REDIS_URL!r})."
    )

Q_CLUSTER: dict[str, Any] = {
    # The broker's queue is named after the cluster: separate names keep two Cronos sites (or
    # two test sessions) on one Redis from taking each other's tasks.
    "name": env_str("CRONOS_Q_NAME", "cronos"),
    "workers": env_int("CRONOS_WORKERS", 2, minimum=1),
    # A task is an agent run, which may last hours: the timeout is the executor's job (it
    # ends the agent's process group itself), so the cluster never kills a worker mid-run.
    # The ORM broker hands a task out again when not acknowledged within `retry` seconds;
    # set far beyond any run, and the executor's claim refuses a second delivery anyway.
    "retry": env_int("CRONOS_Q_RETRY", 7 * 24 * 3600),
    "timeout": env_int("CRONOS_Q_RETRY", 7 * 24 * 3600) - 600,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 1000,
    "catch_up": False,
    "poll": env_float("CRONOS_Q_POLL", 0.05, minimum=0, above=True),
    "label": "Task engine",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Named after the site like its queue: two sites on one Redis never see each
            # other's live output (a group is "run-<id>", and ids repeat between sites).
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{Q_CLUSTER['name']}:asgi"},
        }
    }
else:
    Q_CLUSTER["orm"] = "default"
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth -------------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# --- Login throttling (django-axes, audit/throttling.py; DESIGN.md §4 "People") -----------
# Axes's backend comes first: a locked-out user name and address is refused before any password
# is checked, so the answer never tells whether the password was right.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Per user name *and* address: a guesser is stopped, yet cannot lock a person out from another
# address, nor does one person's lockout stop the others behind a shared address.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env_int("CRONOS_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("CRONOS_LOGIN_COOLOFF_MINUTES", 15))
for _name, _value in (
    ("CRONOS_LOGIN_FAILURE_LIMIT", AXES_FAILURE_LIMIT),
    ("CRONOS_LOGIN_COOLOFF_MINUTES", AXES_COOLOFF_TIME.total_seconds() // 60),
):
    if _value < 1:  # 0 would lock out at once, or for ever: axes's "no cool-off"
        raise SettingError(f"{_name} must be at least 1 (got {_value:g}).")
# A lockout lasts the cool-off from the failure that caused it: attempts refused during it do
# not extend it (so the time the login page gives is the time it ends); they are counted and
# the count goes into the audit entry written when it ends.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True  # a person who logs in starts again from no failures
# The client's address as the audit log has it (X-Forwarded-For only from trusted proxies).
AXES_CLIENT_IP_CALLABLE = "audit.actor.client_ip"
# The login page again, status 429, saying until when (audit/throttling.py).
AXES_LOCKOUT_CALLABLE = "audit.throttling.lockout_response"
AXES_DISABLE_ACCESS_LOG = True  # logins are in the audit log already
AXES_ENABLE_ADMIN = False  # lockouts are in the audit log; lifting one is `cronos_user --unlock`
AXES_VERBOSE = False  # no start-up banner on every command
# The reverse proxies (addresses or networks, comma separated) whose X-Forwarded-For names the
# client. None by default: the connection's address is the client's, whatever a header says.
CRONOS_TRUSTED_PROXIES = env_list("CRONOS_TRUSTED_PROXIES")
for _proxy in CRONOS_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise SettingError(
            f"CRONOS_TRUSTED_PROXIES must list addresses or networks (got {_proxy!r})."
        ) from None

# --- I18N, time -----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
    # OSError: with the tzdata package installed, a folder name ("America") is a directory.
    raise SettingError(
        f"TIME_ZONE must be an IANA time zone such as Europe/Paris or UTC (got {TIME_ZONE!r})."
    ) from None
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"

# --- Content-Security-Policy (django-csp) ---------------------------------------------------
# Scripts and styles come only from our own static files: no inline <script>, <style>, style=
# or on*= anywhere, nothing evaluated (htmx is told so in templates/base.html), so markup that
# slips into a page cannot run. 'self' in connect-src covers the live output's websocket on the
# same host and port (CSP Level 3; tests/browser/test_csp.py follows a run under it). The admin
# runs under the same policy: Django's admin needs nothing inline on the pages Cronos uses.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Cronos -----------------------------------------------------------------------------------
# Run logs live under here, as runs/{YYYY-MM-DD}/... (the prototype's layout). With workers on
# several hosts, point every host at the same shared directory.
CRONOS_LOG_DIR = Path(env_str("CRONOS_LOG_DIR", str(DATA_DIR))).resolve()
if CRONOS_LOG_DIR == CRONOS_WORK_DIR or CRONOS_WORK_DIR in CRONOS_LOG_DIR.parents:
    raise SettingError(
        f"CRONOS_LOG_DIR ({CRONOS_LOG_DIR}) is inside CRONOS_WORK_DIR ({CRONOS_WORK_DIR}), which "
        "agents can read: keep run logs elsewhere."
    )
# A slot counts as missed when the scheduler sees it later than this (DESIGN.md section 4).
CRONOS_MISSED_GRACE_SECONDS = env_int("CRONOS_MISSED_GRACE_SECONDS", 60, minimum=0)
# The scheduler hands a run to the engine this long before its slot; the worker then waits
# for the exact instant, so the broker's poll interval is not on the critical path.
# 0.75 rather than a whole second: with a lead equal to an every-second schedule's period, the
# pass for the next slot would run exactly while this slot's agents start (measured: p99 36 ms
# against 79 ms on 2 cores).
CRONOS_DISPATCH_LEAD_SECONDS = env_float("CRONOS_DISPATCH_LEAD_SECONDS", 0.75, minimum=0)
# Executors heartbeat this often; a running run silent for CRONOS_STALE_AFTER_SECONDS is lost.
CRONOS_HEARTBEAT_SECONDS = env_float("CRONOS_HEARTBEAT_SECONDS", 5, minimum=0, above=True)
CRONOS_STALE_AFTER_SECONDS = env_int("CRONOS_STALE_AFTER_SECONDS", 30, minimum=1)
if CRONOS_STALE_AFTER_SECONDS < 2 * CRONOS_HEARTBEAT_SECONDS:
    # A run whose heartbeats are further apart than half the stale period would be taken
    # for lost while it runs.
    raise SettingError(
        f"CRONOS_STALE_AFTER_SECONDS ({CRONOS_STALE_AFTER_SECONDS}) must be at least twice "
        f"CRONOS_HEARTBEAT_SECONDS ({CRONOS_HEARTBEAT_SECONDS:g})."
    )
# A queued run no worker claimed for this long is handed over again (its cluster may have died
# holding the task); a run created but never handed over is reclaimed after the orphan delay.
CRONOS_REDELIVER_AFTER_SECONDS = env_int("CRONOS_REDELIVER_AFTER_SECONDS", 300, minimum=1)
CRONOS_ORPHAN_AFTER_SECONDS = env_int("CRONOS_ORPHAN_AFTER_SECONDS", 30, minimum=1)
# Between SIGTERM and SIGKILL when a run is stopped (timeout, cancel, limit).
CRONOS_KILL_GRACE_SECONDS = env_float("CRONOS_KILL_GRACE_SECONDS", 5, minimum=0)
# After a claude session's final `result`, how long the CLI has to exit before it is ended
# (children such as MCP servers can keep it alive); the outcome comes from the result.
CRONOS_RESULT_GRACE_SECONDS = env_float("CRONOS_RESULT_GRACE_SECONDS", 10, minimum=0)

# Triggers (DESIGN.md §7.7). The largest webhook body taken (bytes; a larger one is answered
# 413 from its Content-Length, before it is read), and the address people and git hooks reach
# this site at (links in hooks and messages).
CRONOS_WEBHOOK_MAX_BYTES = env_int("CRONOS_WEBHOOK_MAX_BYTES", 256 * 1024, minimum=1024)
CRONOS_BASE_URL = env_str("CRONOS_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
if not CRONOS_BASE_URL.startswith(("http://", "https://")):
    raise SettingError(
        f"CRONOS_BASE_URL must start with http:// or https:// (it is {CRONOS_BASE_URL!r})"
    )
# The largest run log `cronos_import` copies from a prototype folder (bytes).
CRONOS_IMPORT_MAX_LOG_BYTES = env_int("CRONOS_IMPORT_MAX_LOG_BYTES", 64 * 1024 * 1024, minimum=0)
# An agent without a timeout or an output limit of its own runs under these (0 = none), applied
# at run time and never written into the agent, so its agent.yaml round-trips unchanged: a run
# that hangs must not hold its agent's lock forever (runs/execution/limits.py).
CRONOS_DEFAULT_TIMEOUT_SECONDS = env_int("CRONOS_DEFAULT_TIMEOUT_SECONDS", 2 * 3600, minimum=0)
CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES = env_int(
    "CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES", 50 * 1024 * 1024, minimum=0
)
# Money (DESIGN.md §7.5): the rolling 24-hour spend (USD) of all claude agents together above
# which their runs are skipped (reason `budget`; an alert at 80 %); 0 = no site cap.
CRONOS_SITE_DAILY_BUDGET_USD = env_float("CRONOS_SITE_DAILY_BUDGET_USD", 0, minimum=0)
if CRONOS_SITE_DAILY_BUDGET_USD and not 0.01 <= CRONOS_SITE_DAILY_BUDGET_USD <= 99_999_999.99:
    raise SettingError(
        "CRONOS_SITE_DAILY_BUDGET_USD must be 0 (no cap) or an amount from 0.01 to "
        f"99999999.99 US dollars (got {env_value('CRONOS_SITE_DAILY_BUDGET_USD')!r})."
    )

# Retention (DESIGN.md §7.10; runs.retention): the output (chunks and log files) of runs that
# ended more than this many days ago, or beyond this many most recent runs of their agent, is
# removed; the runs' rows, metrics and audit entries stay. An agent's own values win. 0 = keep.
CRONOS_RETENTION_DAYS = env_int("CRONOS_RETENTION_DAYS", 0, minimum=0)
CRONOS_RETENTION_RUNS = env_int("CRONOS_RETENTION_RUNS", 0, minimum=0)
# Outcome checks (DESIGN.md §7.6; runs.outcomes): a line an agent prints when it had nothing
# to do, so that an expected commit or change is not asked of it.
CRONOS_NOTHING_TO_DO = env_str("CRONOS_NOTHING_TO_DO", "CRONOS: nothing to do")

# Live output: how often a viewer of a running run reads the database when nothing woke it.
# Embedded, this is the latency of a line; on Redis each batch is pushed as it is committed
# (runs/live.py) and this is only the safety net for a missed message.
CRONOS_LIVE_POLL_SECONDS = env_float(
    "CRONOS_LIVE_POLL_SECONDS", 1.0 if REDIS_URL else 0.1, minimum=0, above=True
)
# The engine adapter (runs.engines): `q2` (django-q2, the default: ORM broker embedded, Redis
# with REDIS_URL), `celery` (Celery on Redis, django-celery-beat for housekeeping) or `inline`
# (in the calling process); a dotted class path still works, for test engines.
CRONOS_ENGINE = env_str("CRONOS_ENGINE", "q2")
if CRONOS_ENGINE not in ("q2", "celery", "inline") and "." not in CRONOS_ENGINE:
    raise SettingError(f"CRONOS_ENGINE must be q2, celery or inline (got {CRONOS_ENGINE!r}).")
if CRONOS_ENGINE in ("celery", "runs.engines.celery.CeleryEngine") and not REDIS_URL:
    raise SettingError(
        "CRONOS_ENGINE=celery needs a Redis broker: set REDIS_URL (e.g. redis://127.0.0.1:6379/0)."
    )
# Celery (CRONOS_ENGINE=celery; runs/engines/celery.py reads the CELERY_* names). Every value is
# a decision, not a default left alone (DESIGN.md §6; research/wave2.md §7):
CELERY_BROKER_URL = REDIS_URL or "redis://127.0.0.1:6379/0"
# One queue and one key prefix per site (CRONOS_Q_NAME, as django-q2's queue): two sites or two
# test sessions on one Redis never take each other's runs.
CELERY_TASK_DEFAULT_QUEUE = Q_CLUSTER["name"]
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redis hands a fetched but unacknowledged message out again after this many seconds. Runs
    # are acknowledged when a worker process accepts them and the executor's claim refuses a
    # second delivery, so this only bounds how long a message lost with a dying worker waits.
    "visibility_timeout": env_int("CRONOS_CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60),
    "global_keyprefix": f"{Q_CLUSTER['name']}:",
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Early acknowledgement: a run is never handed to a second worker because the first is slow;
# a worker killed mid-run leaves the run to the reaper (lost, then Cronos's own retry policy).
CELERY_TASK_ACKS_LATE = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_EXPIRES = None  # else beat schedules its own `celery.backend_cleanup`
# The executor owns timeouts (it ends the agent's process group); a hard limit kills the worker.
CELERY_TASK_TIME_LIMIT = None
# Fetch only when a process is free: a prefetched run waiting behind a long one would pass the
# visibility timeout and be delivered twice (measured in the lab; docs/plans/celery-engine.md).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_DISABLE_PREFETCH = True
CELERY_WORKER_CONCURRENCY = Q_CLUSTER["workers"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULER = "runs.engines.beat:HousekeepingScheduler"
CELERY_TIMEZONE = "UTC"
DJANGO_CELERY_BEAT_TZ_AWARE = True
# Isolation of agents from Cronos (runs/execution/isolation.py): user, mount and pid
# namespaces hide the data folder where the host allows them; CRONOS_AGENT_USER (a user name,
# Cronos running as root) runs agents as that separate account. Without either, agents are
# refused unless CRONOS_ALLOW_UNISOLATED is true (then admins see a warning on every page).
CRONOS_AGENT_NAMESPACES = env_bool("CRONOS_AGENT_NAMESPACES", True)
CRONOS_AGENT_USER = env_str("CRONOS_AGENT_USER")
CRONOS_ALLOW_UNISOLATED = env_bool("CRONOS_ALLOW_UNISOLATED")
# The `claude` executable; tests and demos put a stand-in here.
CRONOS_CLAUDE_BIN = env_str("CRONOS_CLAUDE_BIN", "claude")

SIMPLE_HISTORY_REVERT_DISABLED = True  # rollback is Cronos's own: audited, secrets masked

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise SettingError(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL (got {LOG_LEVEL.lower()!r})."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Axes notes every login at INFO; its warnings (a failure, a lockout) are the news.
        "axes": {"level": "WARNING"},
    },
}

# --- Production -----------------------------------------------------------------------------
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
