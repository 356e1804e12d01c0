"""Shared fixtures: one user per role, and an outsider with no role at all."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from audit import roles


def _user(django_user_model, username: str, *role_names: str):
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
