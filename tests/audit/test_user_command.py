"""cronos_user: roles, and a password that keeps the site's rules, given on a terminal or on
standard input; never a traceback."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from audit.models import AuditEntry
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def user_command(*args: str, stdin: io.StringIO | None = None) -> str:
    out = io.StringIO()
    call_command("cronos_user", *args, stdout=out, stdin=stdin or io.StringIO(""))
    return out.getvalue()


def test_a_password_from_stdin_is_set_and_audited():
    out = user_command("nina", "--role", "operator", "--password-stdin",
                       stdin=io.StringIO("a long and fine phrase\n"))  # fmt: skip
    nina = get_user_model().objects.get(username="nina")
    assert nina.check_password("a long and fine phrase")
    assert out == "Created nina: roles operator (password set).\n"
    assert AuditEntry.objects.get(action="user.create").message == "password set"


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("1", "This password is too short"),
        ("password", "This password is too common"),
        ("nina-the-user", "too similar to the username"),
    ],
)
def test_a_password_the_site_rules_refuse_changes_nothing_and_says_why(password, why):
    with pytest.raises(CommandError, match="The password was refused: .*" + why):
        user_command("nina-the-user", "--password-stdin", stdin=io.StringIO(password + "\n"))
    assert not get_user_model().objects.filter(username="nina-the-user").exists()
    assert not AuditEntry.objects.exists()


def test_a_refused_password_leaves_an_existing_user_as_they_were(django_user_model):
    user = django_user_model.objects.create_user("nina", password="the old phrase 42")
    with pytest.raises(CommandError, match="too short"):
        user_command("nina", "--role", "admin", "--password-stdin", stdin=io.StringIO("1\n"))
    user.refresh_from_db()
    assert user.check_password("the old phrase 42")
    assert not user.groups.exists()


def test_an_empty_stdin_or_an_empty_line_is_refused():
    with pytest.raises(CommandError, match="found nothing on standard input"):
        user_command("nina", "--password-stdin", stdin=io.StringIO(""))
    with pytest.raises(CommandError, match="The password is empty"):
        user_command("nina", "--password-stdin", stdin=io.StringIO("\n"))
    assert not get_user_model().objects.exists()


def test_password_without_a_terminal_says_to_use_stdin():
    with pytest.raises(CommandError, match="--password-stdin"):
        user_command("nina", "--password", stdin=io.StringIO("whatever\n"))
    assert not get_user_model().objects.exists()


def test_password_on_a_terminal_is_asked_twice(monkeypatch):
    answers = iter(["a long and fine phrase", "a long and fine phrase"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    user_command("nina", "--password", stdin=Terminal())
    assert get_user_model().objects.get(username="nina").check_password("a long and fine phrase")


def test_a_weak_password_on_a_terminal_is_refused_naming_every_rule_it_breaks(monkeypatch):
    answers = iter(["12345", "12345"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    with pytest.raises(CommandError) as refused:
        user_command("nina", "--password", stdin=Terminal())
    assert str(refused.value) == (
        "The password was refused: This password is too short. It must contain at least "
        "8 characters. This password is too common. Nothing was changed."
    )
    assert refused.value.returncode == 2
    assert not get_user_model().objects.exists()


def test_two_different_passwords_on_a_terminal_change_nothing(monkeypatch):
    answers = iter(["a long and fine phrase", "another phrase"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    with pytest.raises(CommandError, match="differ"):
        user_command("nina", "--password", stdin=Terminal())
    assert not get_user_model().objects.exists()


def test_a_new_user_without_a_password_cannot_log_in_and_is_told_so():
    out = user_command("nina", "--role", "viewer")
    assert "no password yet" in out
    assert not get_user_model().objects.get(username="nina").has_usable_password()


def test_a_username_the_admin_would_refuse_is_refused():
    with pytest.raises(CommandError, match="username: Enter a valid username"):
        user_command("bad name!")
    assert not get_user_model().objects.exists()


@pytest.mark.django_db(transaction=True)
def test_password_without_a_terminal_is_one_line_as_a_real_process():
    result = subprocess.run(
        [sys.executable, "manage.py", "cronos_user", "nina", "--password"],
        cwd=ROOT,
        env=process_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "EOFError" not in result.stderr
    assert result.stderr.startswith("CommandError: --password asks on a terminal")


@pytest.mark.django_db(transaction=True)
def test_password_stdin_as_a_real_process(settings):
    # The other process hashes with the site's hasher, which this test must know to check.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    result = subprocess.run(
        [sys.executable, "manage.py", "cronos_user", "nina", "--password-stdin"],
        cwd=ROOT,
        env=process_env(),
        input="a long and fine phrase\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert get_user_model().objects.get(username="nina").check_password("a long and fine phrase")


def test_deactivate_and_activate_are_audited_and_stop_and_allow_logins(client, django_user_model):
    nina = django_user_model.objects.create_user("nina", password="a long and fine phrase")
    assert user_command("nina", "--deactivate") == "Updated nina: roles none (deactivated).\n"
    nina.refresh_from_db()
    assert not nina.is_active
    entry = AuditEntry.objects.get(action="user.update")
    assert (entry.changes, entry.message) == ({"is_active": [True, False]}, "deactivated")
    assert entry.object_name == "nina" and entry.source == "cli"
    login = {"username": "nina", "password": "a long and fine phrase"}
    assert client.post(reverse("login"), login).status_code == 200  # refused: the form again

    assert user_command("nina", "--activate") == "Updated nina: roles none (active).\n"
    entry = AuditEntry.objects.filter(action="user.update").order_by("pk").last()
    assert (entry.changes, entry.message) == ({"is_active": [False, True]}, "activated")
    assert client.post(reverse("login"), login).status_code == 302


def test_deactivating_a_user_who_does_not_exist_is_refused_and_creates_nobody():
    with pytest.raises(CommandError, match="There is no Cronos user named 'ghost'") as refused:
        user_command("ghost", "--deactivate")
    assert refused.value.returncode == 2
    assert not get_user_model().objects.exists()
    assert not AuditEntry.objects.exists()


def test_activate_and_deactivate_together_are_refused():
    with pytest.raises(CommandError, match="not allowed with argument"):
        user_command("nina", "--activate", "--deactivate")


def test_unlock_is_used_alone(django_user_model):
    django_user_model.objects.create_user("nina")
    with pytest.raises(CommandError, match="--unlock is used alone") as refused:
        user_command("nina", "--unlock", "--role", "admin")
    assert refused.value.returncode == 2
    assert not AuditEntry.objects.exists()


def test_a_session_from_before_a_deactivation_does_not_come_back_with_the_account(client, viewer):
    client.force_login(viewer)
    assert client.get("/").status_code == 200
    other = type(client)()
    other.force_login(viewer)

    call_command("cronos_user", "vera", "--deactivate")
    call_command("cronos_user", "vera", "--activate")

    # Both browsers' cookies were from before: they are signed out, and may sign in again.
    assert client.get("/").status_code == 302
    assert other.get("/").status_code == 302
    login = {"username": "vera", "password": "correct horse battery"}
    assert client.post(reverse("login"), login).status_code == 302  # and may sign in again


def test_deactivating_in_the_admin_ends_the_persons_sessions(client, admin_user, viewer):
    from django.contrib.sessions.models import Session

    browser = type(client)()
    browser.force_login(viewer)
    user = get_user_model().objects.get(username="vera")
    client.force_login(admin_user)
    page = client.get(f"/admin/auth/user/{user.pk}/change/")
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k != "password"}
    data.update(
        {
            "username": "vera",
            "is_active": "",
            "groups": [g.pk for g in user.groups.all()],
            "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        }
    )
    data.pop("is_active")
    data.pop("date_joined", None)
    data.pop("last_login", None)
    response = client.post(f"/admin/auth/user/{user.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    user.refresh_from_db()
    assert not user.is_active
    assert browser.get("/").status_code == 302
    assert Session.objects.count() == 1  # the admin's own
