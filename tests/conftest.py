"""Shared fixtures: one user per role, and an outsider with no role at all."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import Group

from audit import roles


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


@pytest.fixture(autouse=True)
def _empty_cache():
    """Django's cache (the health figures' kept buckets) outlives a test's rolled-back
    database: every test starts with an empty one."""
    from django.core.cache import cache

    cache.clear()
    yield
