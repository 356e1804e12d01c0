"""Shared fixtures: one user per role, and an outsider with no role at all; the frozen clock
of the date-sensitive tests and the `--at` option that moves it."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
import time_machine
from django.contrib.auth.models import Group

from audit import roles
from tests.audit.guard import flush_past_the_audit_triggers


@pytest.fixture(autouse=True, scope="session")
def _own_work_dir(tmp_path_factory):
    """Each test session has its own CRONOS_WORK_DIR (run folders are named by run id, and
    every session's database counts ids from 1); processes the tests start inherit it."""
    from django.conf import settings

    path = tmp_path_factory.mktemp("work")
    os.environ["CRONOS_WORK_DIR"] = str(path)
    settings.CRONOS_WORK_DIR = path
    return path


@pytest.fixture
def unisolated(settings):
    """Agents started without namespaces (CRONOS_ALLOW_UNISOLATED), as on a host that has none
    or with CRONOS_AGENT_USER alone: for tests of the subreaper containment that then applies,
    whose process ids must be the host's (inside a pid namespace they are the run's own)."""
    settings.CRONOS_AGENT_NAMESPACES = False
    settings.CRONOS_ALLOW_UNISOLATED = True
    return settings


def _user(django_user_model, username: str, *role_names: str):
    if role_names and not Group.objects.filter(name=role_names[0]).exists():
        # A transactional test before this one flushed the tables the migration filled.
        from django.apps import apps

        roles.sync_roles(apps)
    user = django_user_model.objects.create_user(
        username=username, password="correct horse battery", is_staff=True
    )
    for role in role_names:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def admin_user(django_user_model):
    return _user(django_user_model, "ada", roles.ADMIN)


@pytest.fixture
def editor(django_user_model):
    return _user(django_user_model, "eddie", roles.EDITOR)


@pytest.fixture
def operator(django_user_model):
    return _user(django_user_model, "otto", roles.OPERATOR)


@pytest.fixture
def approver(django_user_model):
    return _user(django_user_model, "april", roles.APPROVER)


@pytest.fixture
def viewer(django_user_model):
    return _user(django_user_model, "vera", roles.VIEWER)


@pytest.fixture
def outsider(django_user_model):
    return _user(django_user_model, "olga")


@pytest.fixture
def role_user(request, django_user_model):
    """Parametrize with a role name (or "outsider") to get a logged-in-able user of it."""
    role = request.param
    if role == "outsider":
        return _user(django_user_model, "olga")
    return _user(django_user_model, f"{role}-user", role)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Real hashing costs ~0.3 s a user; the tests check roles, not the hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- Lanes that need real services ----------------------------------------------------------

START_HINTS = {
    "PostgreSQL": "start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": "start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' "
    "--appendonly no",
}


def _missing_services() -> list[str]:
    """The services this run was pointed at (DATABASE_URL, REDIS_URL) that do not answer."""
    from django.conf import settings as django_settings

    missing = []
    db = django_settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.postgresql":
        import psycopg

        try:
            psycopg.connect(
                host=db["HOST"] or "127.0.0.1",
                port=db["PORT"] or 5432,
                user=db["USER"] or None,
                dbname="postgres",
                connect_timeout=3,
            ).close()
        except psycopg.Error as exc:
            missing.append(f"PostgreSQL at {db['HOST']}:{db['PORT']} ({exc})".strip())
    if django_settings.REDIS_URL:
        import redis

        try:
            redis.Redis.from_url(django_settings.REDIS_URL, socket_timeout=3).ping()
        except redis.RedisError as exc:
            missing.append(f"Redis at {django_settings.REDIS_URL} ({exc})")
    return missing


def pytest_collection_modifyitems(config, items):
    missing = _missing_services()
    if not missing:
        return
    hints = "; ".join(
        f"{name} is not answering: {START_HINTS[name.split()[0]]}" for name in missing
    )
    if os.environ.get("CI", "").lower() == "true":
        # In CI these lanes are required: a missing service fails the run.
        raise pytest.UsageError(f"CI=true and a required service is missing. {hints}")
    skip = pytest.mark.skip(reason=hints)
    for item in items:
        item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _flush_past_the_audit_triggers():
    """The audit log's triggers refuse DELETE and TRUNCATE, and so Django's flush between
    transactional tests: the suite lifts them for the flush only (tests/audit/guard.py)."""
    with flush_past_the_audit_triggers():
        yield


@pytest.fixture(autouse=True)
def _empty_cache():
    """Django's cache (the health figures' kept buckets) outlives a test's rolled-back
    database: every test starts with an empty one."""
    from django.core.cache import cache

    cache.clear()
    yield


# --- Time: the date-sensitive tests run on a frozen clock ------------------------------------
#
# A test whose outcome depends on the date or the time of day (data made relative to "now",
# per-day charts, "the last 7 days", the next 24 hours, next runs computed from now) is marked
# `@pytest.mark.date_sensitive`. Its clock is then frozen for the whole test, fixtures
# included, at FROZEN_AT, or at the instant given with `pytest --at=ISO`: the suite passes
# at any hour of the wall clock, and tests/test_any_hour.py runs the marked tests at the
# instants where date code breaks (just after midnight UTC and in the site's zone, DST nights).
# `@pytest.mark.date_sensitive(tick=True)` lets the frozen clock run on from there.
#
# A test whose assertions hold at one instant only pins it itself with time_machine (which
# wins over this clock), with a comment saying why.
#
# With `--at`, every other test starts at that instant too, its clock running on from there
# as the wall clock would (`make test-any-hour`): one that reads the wall clock and depends on
# the hour fails there, marked or not. Not the browser and integration tests: their server
# and cluster are other processes, on the real clock, which no travel here moves; they make
# their data from that same real clock, and assert nothing that depends on the day.
#
# `--at` may be given more than once: each of those tests then runs once per instant (its id
# ends with `[at=ISO]`), in one pytest, as tests/test_any_hour.py starts it.

# An ordinary noon: far from midnight in every zone near UTC, and from any DST change.
FROZEN_AT = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
REAL_CLOCK_MARKERS = ("browser", "integration")


def pytest_addoption(parser):
    parser.addoption(
        "--at",
        metavar="ISO",
        action="append",
        default=[],
        help="freeze the clock of the date_sensitive tests at this instant (ISO 8601 with a "
        f"UTC offset) instead of {FROZEN_AT.isoformat()}, and start every other test's clock "
        "there (but the browser and integration tests'); given more than once, each of those "
        "tests runs at each instant; see tests/test_any_hour.py",
    )


def at_options(config) -> list[datetime]:
    instants = []
    for text in config.getoption("at"):
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            raise pytest.UsageError(f"--at {text!r} is not an ISO 8601 instant") from None
        if instant.utcoffset() is None:
            raise pytest.UsageError(f"--at {text!r} needs a UTC offset, e.g. {text}+00:00")
        instants.append(instant)
    return instants


def pytest_configure(config):
    at_options(config)  # a bad --at stops the run before any test
    from tests.processes import ENGINE

    if ENGINE not in ("q2", "celery"):
        raise pytest.UsageError(f"CRONOS_TEST_ENGINE must be q2 or celery (got {ENGINE!r})")
    if ENGINE == "celery" and not os.environ.get("REDIS_URL"):
        raise pytest.UsageError(
            "CRONOS_TEST_ENGINE=celery needs Redis: set REDIS_URL (make test does: "
            "REDIS_URL=redis://127.0.0.1:6379/15)"
        )


@pytest.fixture(autouse=True, scope="session")
def _broker_keys_of_this_session():
    """A worker stopped hard may leave a fetched message in Redis under the session's queue
    name (CRONOS_Q_NAME=cronos-test-<pid>), in keys that never expire: deleted at the end.
    Never a wildcard beyond that name: sessions and sites share the Redis database."""
    yield
    from django.conf import settings as django_settings

    name = django_settings.Q_CLUSTER["name"]
    if not django_settings.REDIS_URL or not name.startswith("cronos-test-"):
        return
    import redis

    try:
        client = redis.Redis.from_url(django_settings.REDIS_URL, socket_timeout=3)
        keys = [*client.scan_iter(f"{name}:*"), *client.scan_iter(name)]
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # nothing to clean if it is gone


def pytest_generate_tests(metafunc):
    """With `--at`, each test its clock follows runs at each instant given, its id ending with
    it (`[at=ISO]`): the date_sensitive tests, and every other but the real-clock ones."""
    instants = at_options(metafunc.config)
    definition = metafunc.definition
    travels = definition.get_closest_marker("date_sensitive") is not None or not any(
        definition.get_closest_marker(m) for m in REAL_CLOCK_MARKERS
    )
    if instants and travels:
        ids = [f"at={instant.isoformat()}" for instant in instants]
        metafunc.parametrize("_at", instants, ids=ids)


@pytest.fixture
def _at() -> datetime | None:
    """The instant of `--at` a test runs at: given by pytest_generate_tests, or none."""
    return None


@pytest.fixture(autouse=True)
def _test_clock(request, _at):
    node = request.node
    at = _at
    marker = node.get_closest_marker("date_sensitive")
    if marker is not None:
        tick = marker.kwargs.get("tick", False)
        with time_machine.travel(at or FROZEN_AT, tick=tick) as traveller:
            yield traveller
    elif at is not None and not any(node.get_closest_marker(m) for m in REAL_CLOCK_MARKERS):
        with time_machine.travel(at, tick=True):
            yield None
    else:
        yield None


@pytest.fixture
def frozen_clock(_test_clock):
    """The traveller of a date_sensitive test, to move its clock (`frozen_clock.move_to(...)`)."""
    assert _test_clock is not None, "frozen_clock is for tests marked date_sensitive"
    return _test_clock
