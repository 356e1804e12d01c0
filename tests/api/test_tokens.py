"""Personal access tokens: the service (audit.tokens), the page where people manage their
own (`/account/tokens/`) and `cronos_token`."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from audit import tokens
from audit.actor import Actor
from audit.models import ApiToken, AuditEntry

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"cronos_[A-Za-z0-9_-]{43}")


def own(user) -> Actor:
    return Actor(user=user, source=AuditEntry.Source.WEB, ip_address="192.0.2.7")


# --- The service --------------------------------------------------------------------------


def test_a_token_is_shown_once_and_only_its_hash_is_kept(operator, caplog):
    caplog.set_level(logging.DEBUG)
    token, secret = tokens.create_token(operator, "ci", own(operator))
    assert TOKEN.fullmatch(secret)
    token.refresh_from_db()
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert (token.prefix, token.name, token.user) == (secret[:12], "ci", operator)
    # Nowhere else: not in the row, the audit log or the logs.
    stored = [str(value) for value in ApiToken.objects.values_list().get()]
    assert not any(secret in value for value in stored)
    entry = AuditEntry.objects.get(action="api_token.create")
    assert (entry.actor, entry.source, entry.ip_address) == (operator, "web", "192.0.2.7")
    assert (entry.object_type, entry.object_id) == ("audit.apitoken", str(token.pk))
    assert secret not in f"{entry.object_name} {entry.message} {entry.changes}"
    tokens.authenticate(secret)
    assert secret not in caplog.text


def test_the_token_authenticates_its_owner_and_nothing_else_does(operator):
    _, secret = tokens.create_token(operator, "ci", own(operator))
    assert tokens.authenticate(secret) == operator
    assert tokens.authenticate(secret[:-1]) is None
    assert tokens.authenticate(secret + "x") is None
    assert tokens.authenticate("") is None
    assert tokens.authenticate(secret.removeprefix("cronos_")) is None
    assert tokens.authenticate("cronos_" + "A" * 5000) is None


def test_a_revoked_token_and_a_deactivated_persons_token_are_refused(operator, viewer):
    token, secret = tokens.create_token(operator, "ci", own(operator))
    _, other = tokens.create_token(viewer, "laptop", own(viewer))
    assert tokens.revoke_token(token, own(operator)) is True
    assert tokens.authenticate(secret) is None
    assert tokens.revoke_token(token, own(operator)) is False  # once is enough
    assert AuditEntry.objects.filter(action="api_token.revoke").count() == 1

    viewer.is_active = False
    viewer.save(update_fields=["is_active"])
    assert tokens.authenticate(other) is None


def test_only_the_owner_or_an_admin_revokes_a_token(operator, viewer, admin_user):
    token, _ = tokens.create_token(operator, "ci", own(operator))
    with pytest.raises(PermissionDenied, match="vera cannot revoke another person's token"):
        tokens.revoke_token(token, own(viewer))
    assert tokens.revoke_token(token, own(admin_user)) is True
    entry = AuditEntry.objects.get(action="api_token.revoke")
    assert entry.actor_username == "ada" and "otto" in entry.message


def test_people_make_their_own_tokens_only(operator, admin_user):
    with pytest.raises(PermissionDenied, match="people make their own tokens"):
        tokens.create_token(operator, "ci", own(admin_user))
    # Nobody logged in is nobody: no token for anyone.
    with pytest.raises(PermissionDenied):
        tokens.create_token(operator, "ci", Actor(user=None, source=AuditEntry.Source.WEB))
    # The shell account (who could change the database anyway) may, audited as itself.
    token, _ = tokens.create_token(operator, "ci", Actor.cli())
    assert token.user == operator
    assert AuditEntry.objects.get(action="api_token.create").actor_username.endswith("(shell)")


def test_a_token_needs_a_name_of_its_own(operator):
    with pytest.raises(ValidationError, match="Give the token a name"):
        tokens.create_token(operator, "  \n ", own(operator))
    with pytest.raises(ValidationError, match="at most 100"):
        tokens.create_token(operator, "x" * 101, own(operator))
    tokens.create_token(operator, " ci\n", own(operator))  # one line, trimmed
    with pytest.raises(ValidationError, match="already has a token named 'ci'"):
        tokens.create_token(operator, "ci", own(operator))
    assert ApiToken.objects.get().name == "ci"


def test_last_use_is_noted_at_most_once_a_minute(operator):
    start = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        token, secret = tokens.create_token(operator, "ci", own(operator))
        tokens.authenticate(secret)
        token.refresh_from_db()
        assert token.last_used_at == start
        clock.shift(timedelta(seconds=59))
        tokens.authenticate(secret)
        token.refresh_from_db()
        assert token.last_used_at == start
        clock.shift(timedelta(seconds=1))
        tokens.authenticate(secret)
        token.refresh_from_db()
        assert token.last_used_at == start + timedelta(minutes=1)


# --- The page -----------------------------------------------------------------------------


def test_the_page_shows_a_new_token_once_and_lists_it_by_its_prefix(client, viewer):
    client.force_login(viewer)
    response = client.post("/account/tokens/", {"name": "laptop"})
    assert response.status_code == 201
    html = response.content.decode()
    [secret] = TOKEN.findall(html)
    assert tokens.authenticate(secret) == viewer
    assert "shown only this once" in html

    page = client.get("/account/tokens/").content.decode()
    assert secret not in page and not TOKEN.search(page)
    assert "laptop" in page and f"{secret[:12]}…" in page
    assert "0\xa0minutes ago" in page  # its last use: just now, by authenticate above


def test_the_page_refuses_a_name_already_in_use_saying_why(client, viewer):
    client.force_login(viewer)
    client.post("/account/tokens/", {"name": "laptop"})
    response = client.post("/account/tokens/", {"name": "laptop"})
    assert response.status_code == 400
    assert "already has a token named" in response.content.decode()
    assert ApiToken.objects.count() == 1


def test_the_page_revokes_ones_own_token_but_not_anothers(client, viewer, operator):
    mine, secret = tokens.create_token(viewer, "laptop", own(viewer))
    theirs, _ = tokens.create_token(operator, "ci", own(operator))
    client.force_login(viewer)
    assert client.post(f"/account/tokens/{theirs.pk}/revoke/").status_code == 404
    response = client.post(f"/account/tokens/{mine.pk}/revoke/", follow=True)
    assert "Revoked the token laptop" in response.content.decode()
    assert tokens.authenticate(secret) is None
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert client.get(f"/account/tokens/{mine.pk}/revoke/").status_code == 405


def test_the_page_needs_a_login_and_is_in_the_menu(client, viewer):
    assert client.get("/account/tokens/").status_code == 302
    client.force_login(viewer)
    assert 'href="/account/tokens/"' in client.get("/").content.decode()


# --- The command --------------------------------------------------------------------------


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("cronos_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_cronos_token_makes_lists_and_revokes(operator):
    out, err = run("create", "--user", "otto", "--name", "ci")
    secret = out.strip()
    assert TOKEN.fullmatch(secret) and "shown only this once" in err
    assert tokens.authenticate(secret) == operator

    listed, _ = run("list", "--user", "otto")
    assert f"{secret[:12]}…" in listed and "ci" in listed and "active" in listed
    assert secret not in listed

    out, _ = run("revoke", "--user", "otto", "--name", "ci")
    assert out.startswith("Revoked otto's token 'ci'")
    assert tokens.authenticate(secret) is None
    assert "revoked" in run("list", "--user", "otto")[0]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("create", "--user", "nobody", "--name", "x"), "There is no Cronos user named 'nobody'."),
        (("create", "--user", "otto"), "create needs --name: the token's name."),
        (("revoke", "--user", "otto", "--name", "x"), "otto has no active token named 'x'."),
        (("create", "--user", "otto", "--name", " "), "name: Give the token a name"),
    ],
)
def test_cronos_token_refuses_with_one_line_and_status_2(operator, args, said):
    with pytest.raises(CommandError) as refused:
        run(*args)
    assert str(refused.value).startswith(said)
    assert refused.value.returncode == 2
