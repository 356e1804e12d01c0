"""The Celery engine's parts on their own (the real workers and beats: tests/faults/test_celery.py
and every test marked `workers`, run again on Celery by `make test`)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from agents import cron
from agents.validation import validate_timezone
from audit.models import AuditEntry
from runs import housekeeping
from runs.engines import ENGINES, HOUSEKEEPING_TASK, engine_name, get_engine
from runs.engines import beat as beat_module
from runs.engines import celery as celery_engine
from runs.engines.beat import HousekeepingScheduler, sync_periodic_tasks
from runs.scheduling.scheduler import Scheduler
from tests.test_settings import run_python

pytestmark = pytest.mark.django_db


def cronos_rows() -> dict[str, PeriodicTask]:
    return {row.name: row for row in PeriodicTask.objects.filter(name__startswith="cronos: ")}


# --- Choosing the engine --------------------------------------------------------------------


@pytest.mark.parametrize(
    "configured, name",
    [
        ("q2", "q2"),
        ("celery", "celery"),
        ("inline", "inline"),
        ("runs.engines.q2.DjangoQEngine", "q2"),
        ("runs.engines.celery.CeleryEngine", "celery"),
        ("tests.runs.engines.RecordingEngine", "tests.runs.engines.RecordingEngine"),
    ],
)
def test_an_engine_is_named_by_its_alias_or_its_path(settings, configured, name):
    settings.CRONOS_ENGINE = configured
    assert engine_name() == name
    engine = get_engine()
    assert f"{type(engine).__module__}.{type(engine).__name__}" == ENGINES.get(name, name)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CRONOS_ENGINE": "rabbit"}, "CRONOS_ENGINE must be q2, celery or inline (got 'rabbit')"),
        ({"CRONOS_ENGINE": "celery"}, "CRONOS_ENGINE=celery needs a Redis broker: set REDIS_URL"),
        ({"TIME_ZONE": "America"}, "TIME_ZONE must be an IANA time zone"),
    ],
)
def test_a_wrong_engine_or_zone_stops_the_site_with_one_line(tmp_path, env, message):
    result = run_python("import django; django.setup()", env, tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_celery_with_redis_is_configured_per_site(tmp_path):
    code = (
        "import django, json; django.setup(); from runs.engines.celery import app; "
        "c = app.conf; print(json.dumps([c.broker_url, c.task_default_queue, "
        "c.broker_transport_options, c.task_acks_late, c.worker_prefetch_multiplier, "
        "c.worker_disable_prefetch, c.beat_scheduler, c.result_expires]))"
    )
    env = {
        "CRONOS_ENGINE": "celery",
        "REDIS_URL": "redis://127.0.0.1:6379/9",
        "CRONOS_Q_NAME": "site-a",
        "CRONOS_CELERY_VISIBILITY_TIMEOUT": "7200",
    }
    result = run_python(code, env, tmp_path)
    assert result.returncode == 0, result.stderr
    url, queue, transport, acks_late, prefetch, no_prefetch, scheduler, expires = json.loads(
        result.stdout.splitlines()[-1]
    )
    assert (url, queue) == ("redis://127.0.0.1:6379/9", "site-a")
    assert transport == {"visibility_timeout": 7200, "global_keyprefix": "site-a:"}
    assert (acks_late, prefetch, no_prefetch) == (False, 1, True)
    assert scheduler == "runs.engines.beat:HousekeepingScheduler"
    assert expires is None


# --- Zones: the tzdata package makes a zone folder an OSError ---------------------------------


@pytest.mark.parametrize(
    "name", ["America", "Europe", "Etc", "", "/etc/passwd", "../x", "Nope/Zone"]
)
def test_a_name_that_is_no_zone_is_refused_with_one_error(name):
    with pytest.raises(cron.UnknownZone):
        cron.zone(name)
    with pytest.raises(Exception) as caught:
        validate_timezone(name)
    assert "is not a known IANA time zone" in str(caught.value)


def test_the_cron_preview_names_a_zone_folder_as_unknown(client, viewer):
    client.force_login(viewer)
    page = client.get(
        reverse("agents:cron_preview"), {"schedule": "0 9 * * *", "timezone": "America"}
    )
    assert page.status_code == 200
    assert "unknown time zone" in page.content.decode()


# --- Delivering runs ------------------------------------------------------------------------


def test_runs_are_sent_to_celery_only_when_their_transaction_commits(
    monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[list[int]] = []
    monkeypatch.setattr(
        celery_engine.execute_run, "apply_async", lambda args, **kw: sent.append(args)
    )
    with django_capture_on_commit_callbacks() as callbacks:
        celery_engine.CeleryEngine().enqueue([7, 8])
        assert sent == []  # not before the commit: a worker would find no such run
    assert len(callbacks) == 1
    callbacks[0]()
    assert sent == [[7], [8]]


def test_a_broker_that_is_down_loses_no_run_and_raises_nothing(
    monkeypatch, caplog, django_capture_on_commit_callbacks
):
    def down(args, **kw):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(celery_engine.execute_run, "apply_async", down)
    with (
        caplog.at_level(logging.ERROR, logger="runs.engines.celery"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        celery_engine.CeleryEngine().enqueue([7, 8])
    failures = [r for r in caplog.records if "re-delivery will send it again" in r.getMessage()]
    assert [r.run_id for r in failures] == [7, 8]  # each run tried; the first did not stop it


# --- Housekeeping: who drives which task ------------------------------------------------------


def test_on_celery_beat_drives_every_task_and_the_scheduler_keeps_release(settings):
    settings.CRONOS_ENGINE = "q2"
    assert [t.name for t in Scheduler().housekeeper.tasks] == [t.name for t in housekeeping.TASKS]
    settings.CRONOS_ENGINE = "celery"
    kept = [t.name for t in Scheduler().housekeeper.tasks]
    assert kept == ["release"]
    driven = [t.name for t in housekeeping.beat_tasks()]
    assert set(driven) == {
        "reap",
        "release",
        "redeliver",
        "approvals",
        "reviews",
        "deferrals",
        "followups",
        "deliveries",
        "retention",
    }
    assert set(driven) == {t.name for t in housekeeping.TASKS}


def test_a_worker_runs_a_housekeeping_task_by_name(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    assert housekeeping.run_task("redeliver") == []
    assert housekeeping.run_task("reap") == []
    assert housekeeping.run_task("release") == []
    with pytest.raises(KeyError, match="no housekeeping task 'nope'"):
        housekeeping.run_task("nope")


# --- The beat rows ----------------------------------------------------------------------------


def test_beat_rows_follow_the_registry_and_keep_what_an_admin_chose():
    first = sync_periodic_tasks()
    rows = cronos_rows()
    assert (
        sorted(first["created"])
        == sorted(rows)
        == sorted(f"cronos: {t.name}" for t in housekeeping.beat_tasks())
    )
    reap = rows["cronos: reap"]
    assert (reap.task, json.loads(reap.args), reap.interval.every) == (
        HOUSEKEEPING_TASK,
        ["reap"],
        1,
    )
    assert reap.expire_seconds == 5 and reap.enabled
    assert rows["cronos: followups"].interval.every == 10

    # An admin slows the reaper down and disables the sweep; someone rewires a row.
    ten = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="cronos: reap").update(interval=ten)
    PeriodicTask.objects.filter(name="cronos: followups").update(enabled=False)
    PeriodicTask.objects.filter(name="cronos: redeliver").update(args='["reap"]')
    # A task that left the registry, and a row that is not Cronos's.
    PeriodicTask.objects.create(
        name="cronos: retired", task=HOUSEKEEPING_TASK, args='["retired"]', interval=ten
    )
    PeriodicTask.objects.create(name="shell", task="os.system", args='["id"]', interval=ten)

    again = sync_periodic_tasks()
    assert again == {"created": [], "removed": ["cronos: retired"]}
    rows = cronos_rows()
    assert rows["cronos: reap"].interval.every == 10
    assert rows["cronos: followups"].enabled is False
    assert json.loads(rows["cronos: redeliver"].args) == ["redeliver"]
    assert sync_periodic_tasks() == {"created": [], "removed": []}

    # Beat sends only Cronos's rows: the stray one is in the table, never sent.
    scheduler = HousekeepingScheduler.__new__(HousekeepingScheduler)
    assert set(scheduler.enabled_models_qs().values_list("name", flat=True)) == {
        "cronos: reap",
        "cronos: release",
        "cronos: redeliver",
        "cronos: approvals",
        "cronos: reviews",
        "cronos: deferrals",
        "cronos: deliveries",
        "cronos: retention",
    }


# --- The admin --------------------------------------------------------------------------------


def test_only_admins_see_and_change_the_housekeeping_rows_and_each_change_is_audited(
    client, admin_user, editor, operator
):
    sync_periodic_tasks()
    stray = PeriodicTask.objects.create(
        name="shell", task="os.system", args='["id"]', interval=IntervalSchedule.objects.first()
    )
    reap = PeriodicTask.objects.get(name="cronos: reap")
    listing = reverse("admin:django_celery_beat_periodictask_changelist")
    change = reverse("admin:django_celery_beat_periodictask_change", args=[reap.pk])

    for person in (editor, operator):
        client.force_login(person)
        assert client.get(listing).status_code == 403
        assert client.post(change, {"enabled": ""}).status_code == 403
    reap.refresh_from_db()
    assert reap.enabled

    client.force_login(admin_user)
    page = client.get(listing)
    assert page.status_code == 200
    assert {row.name for row in page.context["cl"].result_list} == set(cronos_rows())
    assert client.get(reverse("admin:django_celery_beat_periodictask_add")).status_code == 403
    stray_url = reverse("admin:django_celery_beat_periodictask_change", args=[stray.pk])
    assert client.get(stray_url).status_code in (302, 404)  # not Cronos's: not there
    for model in ("intervalschedule", "crontabschedule", "solarschedule", "clockedschedule"):
        with pytest.raises(NoReverseMatch):
            reverse(f"admin:django_celery_beat_{model}_changelist")

    answer = client.post(
        change,
        {
            "enabled": "",
            "interval": reap.interval_id,
            "expire_seconds": "30",
            "task": "os.system",  # read-only: ignored
            "args": '["id"]',
        },
    )
    assert answer.status_code == 302
    reap.refresh_from_db()
    assert (reap.enabled, reap.expire_seconds, reap.task) == (False, 30, HOUSEKEEPING_TASK)
    entry = AuditEntry.objects.get(action="housekeeping.change")
    assert entry.actor_username == admin_user.username and entry.source == "admin"
    assert entry.object_name == "cronos: reap"
    assert entry.changes == {"enabled": [True, False], "expire_seconds": [5, 30]}


def test_the_scheduler_says_when_no_beat_sends_the_housekeeping(settings, caplog, monkeypatch):
    settings.CRONOS_ENGINE = "celery"
    sync_periodic_tasks()
    scheduler = Scheduler(dry_run=False)
    watch = scheduler._watch_beat

    def due():  # the scheduler's own pace: the next look is now
        scheduler.beat_watch_at = 0

    with caplog.at_level(logging.WARNING, logger="runs.scheduling.scheduler"):
        due()
        watch()
        assert (
            "no Celery beat is sending Cronos's housekeeping (cronos: reap: never)" in caplog.text
        )
        caplog.clear()
        due()
        watch()
        assert caplog.text == ""  # said once
        PeriodicTask.objects.filter(name="cronos: reap").update(last_run_at=timezone.now())
        due()
        watch()
        assert "sends Cronos's housekeeping again" in caplog.text
        caplog.clear()
        stale = timezone.now() - beat_module.SILENT_AFTER - timedelta(seconds=1)
        PeriodicTask.objects.filter(name="cronos: reap").update(last_run_at=stale)
        due()
        watch()
        assert "cronos: reap: last at" in caplog.text
        caplog.clear()
        PeriodicTask.objects.filter(name="cronos: reap").update(enabled=False)  # on purpose
        due()
        watch()
        assert "again" in caplog.text
    settings.CRONOS_ENGINE = "q2"
    scheduler.beat_silent = False
    due()
    with caplog.at_level(logging.WARNING, logger="runs.scheduling.scheduler"):
        PeriodicTask.objects.all().delete()
        watch()
    assert "no Celery beat" not in caplog.text  # django-q2 needs none
