"""Login throttling (DESIGN.md §4 "People"): django-axes per user name and address, through the
real login views over HTTP, and the audit entries a lockout makes."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.urls import reverse

from audit.models import AuditEntry

pytestmark = pytest.mark.django_db

RIGHT = "correct horse battery"  # the fixtures' password (tests/conftest.py)
HOME = "203.0.113.9"
ELSEWHERE = "198.51.100.7"
# An ordinary noon, the lockouts' times are asserted to the minute.
NOON = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(NOON, tick=False) as traveller:
        yield traveller


def log_in(client, username: str, password: str, address: str = HOME, path: str = "", **extra):
    return client.post(
        path or reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR=address,
        **extra,
    )


def fail(client, times: int, username: str = "vera", **kwargs) -> list[int]:
    return [
        log_in(client, username, f"wrong guess {i}", **kwargs).status_code for i in range(times)
    ]


def lockout_message(response) -> str:
    match = re.search(r'<p class="error" role="alert">(.*?)</p>', response.content.decode(), re.S)
    return match.group(1) if match else ""


def actions() -> list[str]:
    return list(AuditEntry.objects.order_by("pk").values_list("action", flat=True))


def logged_in(client) -> bool:
    return client.get(reverse("agents:list")).status_code == 200


def test_five_failures_lock_out_even_the_right_password_with_429_and_when_it_ends(
    client, viewer, clock
):
    assert fail(client, 4) == [200] * 4
    fifth = log_in(client, "vera", "wrong guess 5")
    assert fifth.status_code == 429
    right = log_in(client, "vera", RIGHT)
    assert right.status_code == 429
    assert "paused until 12:15 UTC (15\xa0minutes from now)" in lockout_message(right)
    assert not logged_in(client)
    # The answer is the same whatever the password: it was not even checked.
    assert lockout_message(log_in(client, "vera", "wrong again")) == lockout_message(right)
    assert "do not match" not in right.content.decode()
    assert actions() == ["login_failed"] * 5 + ["login.locked"]
    locked = AuditEntry.objects.get(action="login.locked")
    assert (locked.object_name, locked.ip_address, locked.source) == ("vera", HOME, "web")
    assert "until 2026-06-15 12:15:00 UTC" in locked.message


def test_refused_attempts_during_a_lockout_write_no_entries(client, viewer, clock):
    fail(client, 5)
    assert fail(client, 30) == [429] * 30
    assert actions() == ["login_failed"] * 5 + ["login.locked"]


def test_the_lockout_is_per_user_name_and_address(client, viewer, operator, clock):
    fail(client, 5)
    # Another user name from the same address, and the same one from another address.
    assert log_in(client, "otto", RIGHT).status_code == 302
    client.logout()
    assert log_in(client, "vera", RIGHT, address=ELSEWHERE).status_code == 302


def test_a_forged_x_forwarded_for_does_not_escape_the_lockout(client, viewer, clock):
    fail(client, 5)
    forged = log_in(client, "vera", RIGHT, HTTP_X_FORWARDED_FOR=ELSEWHERE)
    assert forged.status_code == 429
    # Nor does spreading the failures over forged addresses and user agents avoid one.
    client.logout()
    statuses = [
        log_in(
            client,
            "otto",
            f"guess {i}",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{i}",
            HTTP_USER_AGENT=f"b{i}",
        ).status_code
        for i in range(6)
    ]
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert set(AuditEntry.objects.values_list("ip_address", flat=True)) == {HOME}


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_clients(
    client, viewer, clock, settings
):
    settings.CRONOS_TRUSTED_PROXIES = ["10.0.0.0/8"]
    via_proxy = {"address": "10.0.0.2", "HTTP_X_FORWARDED_FOR": f"forged, {HOME}, 10.0.0.3"}
    assert fail(client, 5, **via_proxy)[-1] == 429
    assert set(AuditEntry.objects.values_list("ip_address", flat=True)) == {HOME}
    # Someone else behind the same proxy is not locked out.
    other = log_in(client, "vera", RIGHT, "10.0.0.2", HTTP_X_FORWARDED_FOR=ELSEWHERE)
    assert other.status_code == 302


def test_after_the_cool_off_the_right_password_works_and_the_end_counts_the_refusals(
    client, viewer, clock
):
    fail(client, 5)
    clock.shift(timedelta(minutes=5))
    assert fail(client, 2) + [log_in(client, "vera", RIGHT).status_code] == [429] * 3
    clock.shift(timedelta(minutes=10, seconds=1))  # 15 minutes and a second after the lockout
    assert log_in(client, "vera", RIGHT).status_code == 302
    assert logged_in(client)
    assert actions() == ["login_failed"] * 5 + ["login.locked", "login.unlocked", "login"]
    ended = AuditEntry.objects.get(action="login.unlocked")
    assert (ended.object_name, ended.ip_address, ended.source) == ("vera", HOME, "system")
    assert "cool-off ran out at 2026-06-15 12:15:00 UTC" in ended.message
    assert ended.message.endswith("3 attempts refused during it")


def test_the_end_is_written_when_the_next_login_on_the_site_clears_it(
    client, viewer, operator, clock
):
    fail(client, 5)
    log_in(client, "vera", RIGHT)
    clock.shift(timedelta(minutes=16))
    # Someone else's failed login: axes clears every expired lockout then.
    log_in(client, "otto", "wrong", address=ELSEWHERE)
    assert actions()[-2:] == ["login.unlocked", "login_failed"]
    assert AuditEntry.objects.get(action="login.unlocked").message.endswith(
        "1 attempt refused during it"
    )


def test_cronos_user_unlock_lets_them_in_at_once_and_is_audited(client, viewer, clock):
    fail(client, 5)
    fail(client, 2)
    out = io.StringIO()
    call_command("cronos_user", "vera", "--unlock", stdout=out)
    assert out.getvalue() == "Unlocked vera: 1 lockout lifted.\n"
    ended = AuditEntry.objects.get(action="login.unlocked")
    assert ended.source == "cli" and ended.actor_username.endswith("(shell)")
    assert f"lockout of 'vera' from {HOME} ended: lifted with cronos_user --unlock" in ended.message
    assert ended.message.endswith("2 attempts refused during it")
    assert log_in(client, "vera", RIGHT).status_code == 302
    assert actions() == ["login_failed"] * 5 + ["login.locked", "login.unlocked", "login"]


def test_unlocking_a_user_name_that_is_not_locked_out_says_so_and_writes_nothing(viewer):
    out = io.StringIO()
    call_command("cronos_user", "vera", "--unlock", stdout=out)
    assert out.getvalue() == "vera was not locked out; its failed logins are forgotten.\n"
    assert not AuditEntry.objects.exists()


def test_the_admin_login_is_throttled_too(client, viewer, clock):
    admin_login = reverse("admin:login")
    assert fail(client, 5, path=admin_login)[-1] == 429
    right = log_in(client, "vera", RIGHT, path=admin_login)
    assert right.status_code == 429
    assert "paused until 12:15 UTC" in lockout_message(right)
    assert 'name="next" value="/admin/"' in right.content.decode()
    # The site's login and the admin's share one count.
    assert log_in(client, "vera", RIGHT).status_code == 429
    assert AuditEntry.objects.get(action="login.locked").source == "admin"


def test_a_person_who_logs_in_starts_again_from_no_failures(client, viewer, clock):
    fail(client, 4)
    assert log_in(client, "vera", RIGHT).status_code == 302
    client.logout()
    assert fail(client, 4) == [200] * 4
    assert "login.locked" not in actions()


def test_the_lockout_page_is_the_same_over_asgi_as_daphne_serves_it(viewer, clock):
    # Over ASGI axes's middleware runs its async branch, which passes the lockout callable
    # other arguments (audit/throttling.py ignores them).
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    client = AsyncClient()

    def post(password: str):
        return async_to_sync(client.post)(
            reverse("login"), {"username": "vera", "password": password}, REMOTE_ADDR=HOME
        )

    assert [post(f"wrong {i}").status_code for i in range(5)] == [200] * 4 + [429]
    right = post(RIGHT)
    assert right.status_code == 429
    assert "paused until 12:15 UTC" in lockout_message(right)
    assert actions() == ["login_failed"] * 5 + ["login.locked"]


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        (
            "CRONOS_TRUSTED_PROXIES",
            "10.0.0.1,proxy.local",
            "CRONOS_TRUSTED_PROXIES must list addresses",
        ),
        ("CRONOS_LOGIN_FAILURE_LIMIT", "0", "CRONOS_LOGIN_FAILURE_LIMIT must be at least 1"),
        ("CRONOS_LOGIN_COOLOFF_MINUTES", "0", "CRONOS_LOGIN_COOLOFF_MINUTES must be at least 1"),
    ],
)
def test_a_throttling_setting_cronos_cannot_use_is_one_line_naming_it(
    tmp_path, variable, value, words
):
    import os
    import subprocess
    import sys

    from tests.processes import ROOT

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "CRONOS_DATA_DIR": str(tmp_path / "data"), variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"cronos: {words}")
    assert "Traceback" not in result.stderr


def test_the_client_address_believes_only_the_hops_trusted_proxies_appended(rf, settings):
    from audit.actor import client_ip

    def address(peer: str, forwarded: str | None = None) -> str | None:
        meta = {"REMOTE_ADDR": peer}
        if forwarded is not None:
            meta["HTTP_X_FORWARDED_FOR"] = forwarded
        return client_ip(rf.get("/", **meta))

    assert address(HOME, ELSEWHERE) == HOME  # no trusted proxy: the header is ignored
    settings.CRONOS_TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.1"]
    assert address(HOME, ELSEWHERE) == HOME  # not from a trusted proxy: ignored
    assert address("10.0.0.5", ELSEWHERE) == ELSEWHERE
    assert address("10.0.0.5", f"{HOME}, {ELSEWHERE}, 192.0.2.1") == ELSEWHERE
    assert address("10.0.0.5", f"{HOME}, not-an-address, 192.0.2.1") == "192.0.2.1"
    assert address("10.0.0.5", "") == "10.0.0.5"
    assert address("10.0.0.5") == "10.0.0.5"
    assert address("::ffff:10.0.0.5", f"::ffff:{ELSEWHERE}") == ELSEWHERE


def test_failures_spread_over_user_agents_make_one_lockout_with_one_count(client, viewer, clock):
    statuses = [
        log_in(client, "vera", "wrong", HTTP_USER_AGENT=f"browser {i}").status_code
        for i in range(5)
    ]
    assert statuses == [200] * 4 + [429]
    assert log_in(client, "vera", RIGHT, HTTP_USER_AGENT="browser 9").status_code == 429
    assert log_in(client, "vera", RIGHT, HTTP_USER_AGENT="browser 0").status_code == 429
    clock.shift(timedelta(minutes=16))
    assert log_in(client, "vera", RIGHT).status_code == 302
    assert actions() == ["login_failed"] * 5 + ["login.locked", "login.unlocked", "login"]
    assert AuditEntry.objects.get(action="login.unlocked").message.endswith(
        "2 attempts refused during it"
    )


def test_a_lockout_removed_by_axes_own_command_is_still_ended_in_the_log(client, viewer, clock):
    fail(client, 5)
    call_command("axes_reset_username", "vera", stdout=io.StringIO())
    ended = AuditEntry.objects.get(action="login.unlocked")
    assert ended.source == "system"
    assert "removed outside Cronos before the cool-off ran out" in ended.message
    assert log_in(client, "vera", RIGHT).status_code == 302
