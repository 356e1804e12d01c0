"""Webhook triggers (DESIGN.md §7.7): authentication by token, GitHub's and Standard Webhooks'
signatures, every answer of `POST /hooks/<uuid>`, replays, rate, filter, size, and what a run
started this way is given."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from agents.models import WebhookTrigger
from agents.triggers import (
    create_trigger,
    delete_trigger,
    rotate_secret,
    update_trigger,
)
from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import Delivery, Run
from runs.triggers.webhooks import github_problem, github_signature, standard_problem
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system()


@pytest.fixture(autouse=True)
def recording_engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def hook_url(trigger: WebhookTrigger) -> str:
    return reverse("hook", args=[str(trigger.uuid)])


def post(client, trigger, body: bytes = b"{}", **headers):
    return client.post(
        hook_url(trigger), data=body, content_type="application/json", headers=headers
    )


# --- Signatures against known vectors, and one byte off ----------------------------------------


def test_github_signature_matches_githubs_documented_vector():
    # docs.github.com "Validating webhook deliveries": this secret and body give this value.
    assert github_signature("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_github_signature_of_a_body_one_byte_off_is_refused():
    secret = "It's a Secret to Everybody"
    header = github_signature(secret, b"Hello, World!")
    assert github_problem(header, b"Hello, World!", [secret]) == ""
    assert github_problem(header, b"Hello, World?", [secret]) == "signature does not match the body"
    assert github_problem(header, b"Hello, World! ", [secret]) != ""
    assert github_problem("", b"Hello, World!", [secret]) == "no X-Hub-Signature-256 header"
    assert github_problem("sha1=abc", b"Hello, World!", [secret]) != ""


STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
STANDARD_BODY = b'{"test": 2432232314}'
STANDARD_SENT = datetime.fromtimestamp(1614265330, UTC)


def test_standard_webhooks_vector_is_accepted_at_its_time_and_refused_one_byte_off():
    with time_machine.travel(STANDARD_SENT, tick=False):
        assert standard_problem(STANDARD_HEADERS, STANDARD_BODY, [STANDARD_SECRET]) == ""
        assert standard_problem(STANDARD_HEADERS, STANDARD_BODY[:-1] + b"5", [STANDARD_SECRET]) == (
            "signature does not match the body"
        )
        # A second secret (a rotation's overlap) is tried too.
        other = "whsec_" + base64.b64encode(b"x" * 32).decode()
        assert standard_problem(STANDARD_HEADERS, STANDARD_BODY, [other, STANDARD_SECRET]) == ""


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_standard_webhooks_stale_and_future_timestamps_are_refused(offset):
    with time_machine.travel(STANDARD_SENT + offset, tick=False):
        problem = standard_problem(STANDARD_HEADERS, STANDARD_BODY, [STANDARD_SECRET])
    assert problem.startswith("timestamp refused")


@pytest.mark.parametrize("offset", [timedelta(minutes=-4, seconds=-59), timedelta(minutes=4)])
def test_standard_webhooks_timestamps_within_five_minutes_pass(offset):
    with time_machine.travel(STANDARD_SENT + offset, tick=False):
        assert standard_problem(STANDARD_HEADERS, STANDARD_BODY, [STANDARD_SECRET]) == ""


@pytest.mark.parametrize(
    "signature",
    ["v1", "v1,%%%", "nonsense", "v1,", "v2,abc v1a,def", "v1,a,b"],
)
def test_malformed_standard_signatures_are_refused_not_crashed(signature):
    headers = STANDARD_HEADERS | {"webhook-signature": signature}
    with time_machine.travel(STANDARD_SENT, tick=False):
        assert standard_problem(headers, STANDARD_BODY, [STANDARD_SECRET]) != ""


# --- The endpoint ----------------------------------------------------------------------------


@pytest.fixture
def agent():
    return make_agent("hooked")


@pytest.fixture
def bearer(agent):
    return create_trigger(agent, SYSTEM, name="deploy")


def test_a_good_token_starts_a_webhook_run_with_its_detail_audited(client, bearer):
    response = post(client, bearer.trigger, b'{"x": 1}', authorization=f"Bearer {bearer.secret}")
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run_id"])
    assert run.trigger == Run.Trigger.WEBHOOK
    assert run.trigger_detail["webhook"] == "deploy"
    assert run.triggered_by_name == "webhook deploy"
    delivery = Delivery.objects.get(run=run)
    assert delivery.outcome == Delivery.Outcome.STARTED and bytes(delivery.body) == b'{"x": 1}'
    assert run.trigger_detail["delivery"] == delivery.pk
    entry = AuditEntry.objects.get(action="run.trigger", object_id=str(run.pk))
    assert entry.actor_username == "webhook deploy" and "webhook deploy" in entry.message
    # X-Cronos-Token works too.
    assert post(client, bearer.trigger, x_cronos_token=bearer.secret).status_code == 202


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic abc"},
        {"x_cronos_token": "cronos_wh_nope"},
    ],
)
def test_a_missing_or_wrong_token_is_a_generic_401_recorded_with_its_reason(
    client, bearer, headers
):
    response = post(client, bearer.trigger, **headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert not Run.objects.exists()
    delivery = Delivery.objects.get()
    assert delivery.outcome == Delivery.Outcome.UNAUTHORIZED
    assert delivery.reason in (
        "wrong token",
        "no token (Authorization: Bearer ... or X-Cronos-Token)",
    )


def test_the_stored_token_is_a_hash_never_the_token(bearer):
    stored = WebhookTrigger.objects.get(pk=bearer.trigger.pk)
    assert bearer.secret not in stored.secret
    assert stored.secret == hashlib.sha256(bearer.secret.encode()).hexdigest()
    assert not AuditEntry.objects.filter(changes__icontains=bearer.secret).exists()
    assert not AuditEntry.objects.filter(message__icontains=bearer.secret).exists()


def test_unknown_disabled_and_deleted_triggers(client, bearer):
    unknown = client.post(
        reverse("hook", args=[str(uuid.uuid4())]), data=b"{}", content_type="application/json"
    )
    assert unknown.status_code == 404
    assert (
        client.post("/hooks/not-a-uuid", data=b"{}", content_type="application/json").status_code
        == 404
    )

    update_trigger(bearer.trigger, SYSTEM, enabled=False)
    disabled = post(client, bearer.trigger, authorization=f"Bearer {bearer.secret}")
    assert disabled.status_code == 403

    delete_trigger(bearer.trigger, SYSTEM)
    gone = post(client, bearer.trigger, authorization=f"Bearer {bearer.secret}")
    assert gone.status_code == 410
    assert not Run.objects.exists()
    assert list(Delivery.objects.order_by("id").values_list("outcome", flat=True)) == [
        Delivery.Outcome.DISABLED,
        Delivery.Outcome.DELETED,
    ]
    assert WebhookTrigger.objects.get(pk=bearer.trigger.pk).secret == ""


def test_a_paused_agent_is_not_run(client, bearer, agent):
    agent.enabled = False
    agent.save()
    response = post(client, bearer.trigger, authorization=f"Bearer {bearer.secret}")
    assert response.status_code == 403
    assert "paused" in response.json()["error"]
    assert not Run.objects.exists()


def test_only_post_is_taken(client, bearer):
    response = client.get(hook_url(bearer.trigger))
    assert response.status_code == 405 and response["Allow"] == "POST"


def test_idempotency_key_replay_gets_the_first_answer_and_starts_nothing(client, bearer):
    auth = {"authorization": f"Bearer {bearer.secret}", "idempotency_key": "build-41"}
    first = post(client, bearer.trigger, **auth)
    again = post(client, bearer.trigger, **auth)
    assert first.status_code == again.status_code == 202
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again["X-Cronos-Duplicate"] == "true"
    assert Run.objects.count() == 1
    assert Delivery.objects.filter(outcome=Delivery.Outcome.DUPLICATE).count() == 1
    # Another key is another delivery.
    assert (
        post(client, bearer.trigger, **(auth | {"idempotency_key": "build-42"})).json()["run_id"]
        != first.json()["run_id"]
    )


def test_an_unauthenticated_request_cannot_claim_a_delivery_id_first(client, bearer):
    """A stranger who guesses the next delivery id must not make the real one a 'duplicate'."""
    stolen = post(client, bearer.trigger, authorization="Bearer wrong", idempotency_key="abc")
    assert stolen.status_code == 401
    real = post(
        client, bearer.trigger, authorization=f"Bearer {bearer.secret}", idempotency_key="abc"
    )
    assert real.status_code == 202 and Run.objects.count() == 1


def github_trigger(agent, **fields):
    return create_trigger(agent, SYSTEM, name="gh", auth=WebhookTrigger.Auth.GITHUB, **fields)


def github_headers(secret: str, body: bytes, delivery: str, event: str = "push") -> dict:
    return {
        "x_hub_signature_256": github_signature(secret, body),
        "x_github_delivery": delivery,
        "x_github_event": event,
    }


def test_github_delivery_ping_and_redelivery(client, agent):
    made = github_trigger(agent)
    body = b'{"ref": "refs/heads/main"}'
    ping = post(
        client,
        made.trigger,
        b'{"zen": "hi"}',
        **github_headers(made.secret, b'{"zen": "hi"}', "p-1", "ping"),
    )
    assert ping.status_code == 200 and not Run.objects.exists()
    first = post(client, made.trigger, body, **github_headers(made.secret, body, "d-1"))
    assert first.status_code == 202
    redelivered = post(client, made.trigger, body, **github_headers(made.secret, body, "d-1"))
    assert redelivered.json()["run_id"] == first.json()["run_id"]
    assert Run.objects.count() == 1
    run = Run.objects.get()
    assert run.trigger_detail["delivery_id"] == "d-1" and run.trigger_detail["event"] == "push"
    tampered = post(client, made.trigger, body + b" ", **github_headers(made.secret, body, "d-2"))
    assert tampered.status_code == 401 and tampered.json() == {"error": "unauthorized"}


def test_the_same_delivery_id_on_two_triggers_is_two_deliveries(client, agent):
    """GitHub's delivery id is per event: two hooks of one repository receive the same one."""
    one = github_trigger(agent)
    two = create_trigger(agent, SYSTEM, name="gh2", auth=WebhookTrigger.Auth.GITHUB)
    body = b"{}"
    assert (
        post(client, one.trigger, body, **github_headers(one.secret, body, "same")).status_code
        == 202
    )
    assert (
        post(client, two.trigger, body, **github_headers(two.secret, body, "same")).status_code
        == 202
    )
    assert Run.objects.count() == 2


def test_standard_webhooks_end_to_end_with_a_fresh_secret(client, agent):
    from standardwebhooks.webhooks import Webhook

    made = create_trigger(agent, SYSTEM, name="std", auth=WebhookTrigger.Auth.STANDARD)
    assert made.secret.startswith("whsec_") and len(base64.b64decode(made.secret[6:])) == 32
    body = b'{"type": "invoice.paid"}'
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    with time_machine.travel(now, tick=False):
        signature = Webhook(made.secret).sign("msg_1", now, body.decode())
        headers = {
            "webhook_id": "msg_1",
            "webhook_timestamp": str(int(now.timestamp())),
            "webhook_signature": signature,
        }
        assert post(client, made.trigger, body, **headers).status_code == 202
        assert post(client, made.trigger, body, **headers).status_code == 202
        assert Run.objects.count() == 1  # webhook-id replayed
    with time_machine.travel(now + timedelta(minutes=10), tick=False):
        headers["webhook_id"] = "msg_2"
        stale = post(client, made.trigger, body, **headers)
    assert stale.status_code == 401
    assert (
        Delivery.objects.filter(outcome=Delivery.Outcome.UNAUTHORIZED)
        .get()
        .reason.startswith("timestamp refused")
    )


def test_rotation_keeps_the_old_secret_for_its_overlap_only(client, bearer):
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        new = rotate_secret(bearer.trigger, SYSTEM, overlap_seconds=3600)
        assert (
            post(client, bearer.trigger, authorization=f"Bearer {bearer.secret}").status_code == 202
        )
        assert post(client, bearer.trigger, authorization=f"Bearer {new}").status_code == 202
    with time_machine.travel(start + timedelta(seconds=3601), tick=False):
        assert (
            post(client, bearer.trigger, authorization=f"Bearer {bearer.secret}").status_code == 401
        )
        assert post(client, bearer.trigger, authorization=f"Bearer {new}").status_code == 202
    assert AuditEntry.objects.filter(action="webhook.rotate").count() == 1


def test_rate_limit_answers_429_with_retry_after_on_a_fake_clock(client, agent):
    made = create_trigger(agent, SYSTEM, name="slow", rate_per_minute=2)
    auth = {"authorization": f"Bearer {made.secret}"}
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        assert post(client, made.trigger, **auth).status_code == 202
    with time_machine.travel(start + timedelta(seconds=20), tick=False):
        assert post(client, made.trigger, **auth).status_code == 202
        limited = post(client, made.trigger, **auth)
    assert limited.status_code == 429
    assert limited["Retry-After"] == "40"  # the first of the two leaves the window at +60 s
    with time_machine.travel(start + timedelta(seconds=60, microseconds=1), tick=False):
        assert post(client, made.trigger, **auth).status_code == 202
    assert Run.objects.count() == 3
    assert Delivery.objects.filter(outcome=Delivery.Outcome.RATE_LIMITED).count() == 1


def test_a_filter_that_does_not_match_answers_skipped_and_makes_no_run(client, agent):
    made = create_trigger(
        agent, SYSTEM, name="main-only", filter_path="$.ref", filter_pattern="^refs/heads/main$"
    )
    auth = {"authorization": f"Bearer {made.secret}"}
    skipped = post(client, made.trigger, b'{"ref": "refs/heads/dev"}', **auth)
    assert skipped.status_code == 202 and skipped.json() == {"skipped": "filter"}
    assert not Run.objects.exists()
    delivery = Delivery.objects.get()
    assert delivery.outcome == Delivery.Outcome.FILTERED
    assert "refs/heads/dev" in delivery.reason
    assert post(client, made.trigger, b'{"ref": "refs/heads/main"}', **auth).json()["run_id"]
    not_json = post(client, made.trigger, b"\xff\xfe", **auth)
    assert not_json.json() == {"skipped": "filter"}
    assert Delivery.objects.order_by("-id").first().reason == "filter: the body is not JSON"


def test_a_catastrophic_filter_pattern_times_out_instead_of_hanging(client, agent):
    made = create_trigger(agent, SYSTEM, name="redos", filter_path="$.s", filter_pattern="^(a+)+$")
    body = json.dumps({"s": "a" * 5000 + "!"}).encode()
    response = post(client, made.trigger, body, authorization=f"Bearer {made.secret}")
    assert response.json() == {"skipped": "filter"}
    assert "took too long" in Delivery.objects.get().reason


def test_a_body_over_the_limit_is_413_from_its_length(client, bearer, settings):
    settings.CRONOS_WEBHOOK_MAX_BYTES = 1024
    response = post(client, bearer.trigger, b"x" * 1025, authorization=f"Bearer {bearer.secret}")
    assert response.status_code == 413
    assert Delivery.objects.get().outcome == Delivery.Outcome.TOO_LARGE
    assert not Run.objects.exists()


@pytest.mark.django_db(transaction=True)  # the guard looks the trigger up in a thread
def test_the_asgi_guard_refuses_an_oversized_body_before_reading_it(bearer, settings):
    """The request says it carries 10 MB and sends none of it: the answer still comes, so
    nothing waited for (or read) the body."""
    from asgiref.testing import ApplicationCommunicator

    from cronos_site.asgi import application

    settings.CRONOS_WEBHOOK_MAX_BYTES = 1024
    path = hook_url(bearer.trigger)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"content-length", b"10000000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def exchange():
        communicator = ApplicationCommunicator(application, scope)
        start = await communicator.receive_output(timeout=20)
        body = await communicator.receive_output(timeout=5)
        await communicator.wait(timeout=5)
        return start, body

    start, body = asyncio.run(exchange())
    assert start["status"] == 413
    assert b"larger than 1024 bytes" in body["body"]


def test_settings_are_validated(agent):
    with pytest.raises(ValidationError) as refused:
        create_trigger(agent, SYSTEM, name="Bad Name!", filter_path="$[", filter_pattern="(")
    assert set(refused.value.message_dict) == {"name", "filter_path", "filter_pattern"}
    create_trigger(agent, SYSTEM, name="twice")
    with pytest.raises(ValidationError, match="already has a trigger named twice"):
        create_trigger(agent, SYSTEM, name="twice")


def test_managing_triggers_needs_the_editor_permission(agent, operator, editor):
    with pytest.raises(PermissionDenied):
        create_trigger(agent, Actor(user=operator, source="web"), name="x")
    made = create_trigger(agent, Actor(user=editor, source="web"), name="x")
    with pytest.raises(PermissionDenied):
        rotate_secret(made.trigger, Actor(user=operator, source="web"))


def test_hmac_helpers_compare_in_constant_time(monkeypatch):
    """Both checks go through hmac.compare_digest (never ==), for every secret tried."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    from agents.triggers import bearer_matches, token_hash

    assert bearer_matches("t", [token_hash("x"), token_hash("t")])
    assert len(calls) == 2
    assert github_problem(github_signature("s", b"b"), b"b", ["a", "s"]) == ""
    assert len(calls) == 4


def test_a_flood_of_unauthenticated_requests_logs_at_most_sixty_a_minute(client, bearer):
    from runs.triggers.webhooks import REFUSALS_KEPT_PER_MINUTE

    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        for _ in range(REFUSALS_KEPT_PER_MINUTE + 15):
            assert post(client, bearer.trigger, authorization="Bearer nope").status_code == 401
        # The real sender is not stopped by the flood.
        assert (
            post(client, bearer.trigger, authorization=f"Bearer {bearer.secret}").status_code == 202
        )
    assert Delivery.objects.filter(outcome="unauthorized").count() == REFUSALS_KEPT_PER_MINUTE
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        assert post(client, bearer.trigger, authorization="Bearer nope").status_code == 401
    assert Delivery.objects.filter(outcome="unauthorized").count() == REFUSALS_KEPT_PER_MINUTE + 1


def test_housekeeping_forgets_old_refusals_but_keeps_a_runs_delivery(client, bearer):
    from runs.housekeeping import run_task

    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        post(client, bearer.trigger, authorization="Bearer nope")
        post(client, bearer.trigger, authorization=f"Bearer {bearer.secret}")
    with time_machine.travel(start + timedelta(days=6), tick=False):
        run_task("deliveries")
        assert Delivery.objects.count() == 2
    with time_machine.travel(start + timedelta(days=8), tick=False):
        run_task("deliveries")
    assert list(Delivery.objects.values_list("outcome", flat=True)) == ["started"]


def test_a_webhook_run_meets_the_approval_gate_caused_by_the_last_editor(client, editor, approver):
    from agents.services import save_agent
    from runs.approvals import cause_of
    from runs.services import approve_run

    agent = make_agent("gated", approval_required=True)
    agent.description = "edited last by the editor"
    save_agent(agent, Actor(user=editor, source="web"), reason="an edit")
    made = create_trigger(agent, SYSTEM, name="in")
    response = post(client, made.trigger, authorization=f"Bearer {made.secret}")
    assert response.status_code == 202
    assert response.json()["state"] == Run.State.AWAITING_APPROVAL
    run = Run.objects.get(pk=response.json()["run_id"])
    assert cause_of(run).user_id == editor.pk  # the last person who changed the agent
    with pytest.raises(PermissionDenied):
        approve_run(run, Actor(user=editor, source="web"))  # four eyes
    assert approve_run(run, Actor(user=approver, source="web")).state == Run.State.QUEUED


def test_a_burst_of_deliveries_meets_the_overlap_policy(client, agent):
    """With the default `skip`, a delivery while a run holds the lock is skipped (and says
    why), as a slot would be: 50 pushes never make 50 runs."""
    made = create_trigger(agent, SYSTEM, name="burst", rate_per_minute=100)
    states = [
        post(client, made.trigger, authorization=f"Bearer {made.secret}").json()["state"]
        for _ in range(5)
    ]
    assert states == [Run.State.QUEUED] + [Run.State.SKIPPED] * 4
    assert "overlap" in Run.objects.filter(state=Run.State.SKIPPED).first().reason


def test_a_webhook_sent_from_a_run_continues_its_chain_and_a_loop_is_cut(client, bearer, agent):
    from runs.dependencies import MAX_DEPTH

    parent = Run.objects.create(agent=agent, trigger="upstream", state="running", chain_depth=3)
    auth = {"authorization": f"Bearer {bearer.secret}"}
    child = post(client, bearer.trigger, x_cronos_parent_run=str(parent.pk), **auth).json()
    assert Run.objects.get(pk=child["run_id"]).chain_depth == 4
    Run.objects.filter(pk=parent.pk).update(chain_depth=MAX_DEPTH, state="succeeded")
    looped = post(client, bearer.trigger, x_cronos_parent_run=str(parent.pk), **auth).json()
    cut = Run.objects.get(pk=looped["run_id"])
    assert cut.state == Run.State.SKIPPED and "trigger chain deeper than 20" in cut.reason


# --- From a hostile try-out -------------------------------------------------------------------


def test_a_filter_over_many_values_stays_within_its_budget(client, agent):
    """500 values a backtracking pattern chokes on: one budget for the whole delivery, and
    the database is not held meanwhile (the filter runs before the transaction)."""
    made = create_trigger(
        agent, SYSTEM, name="many", filter_path="$.x[*]", filter_pattern="^(a|aa)+$"
    )
    body = json.dumps({"x": ["a" * 25 + "!"] * 500}).encode()
    response = post(client, made.trigger, body, authorization=f"Bearer {made.secret}")
    assert response.json() == {"skipped": "filter"}
    assert "took too long" in Delivery.objects.get().reason


def test_recursive_descent_is_refused_in_a_filter():
    from agents.triggers import jsonpath_problem

    assert "recursive descent" in jsonpath_problem("$..*..*..*")
    assert jsonpath_problem("$.commits[*].message") == ""


def test_bodies_nested_too_deep_are_answered_not_crashed(client, agent):
    made = create_trigger(agent, SYSTEM, name="deep", filter_path="$.a", filter_pattern="x")
    auth = {"authorization": f"Bearer {made.secret}"}
    too_deep_for_json = b"[" * 5000 + b"]" * 5000
    assert post(client, made.trigger, too_deep_for_json, **auth).json() == {"skipped": "filter"}
    assert Delivery.objects.get().reason == "filter: the body is JSON nested too deeply to read"
    nested = json.dumps(json.loads("[" * 100 + "]" * 100)).encode()
    assert post(client, made.trigger, nested, **auth).json() == {"skipped": "filter"}
    assert "nested deeper than 32 levels" in Delivery.objects.order_by("-id").first().reason
    plain = create_trigger(agent, SYSTEM, name="plain")
    response = post(
        client, plain.trigger, too_deep_for_json, authorization=f"Bearer {plain.secret}"
    )
    assert response.status_code == 202  # no filter: the body is the agent's to read


def test_a_multipart_body_to_a_webhook_is_answered_not_a_500(client, bearer):
    response = client.post(hook_url(bearer.trigger), data={"a": "b"})  # multipart/form-data
    assert response.status_code == 401 and response.json() == {"error": "unauthorized"}
    ok = client.post(
        hook_url(bearer.trigger),
        data={"a": "b"},
        headers={"authorization": f"Bearer {bearer.secret}"},
    )
    assert ok.status_code == 202


def test_long_delivery_ids_that_differ_past_the_limit_are_two_deliveries(client, bearer):
    auth = {"authorization": f"Bearer {bearer.secret}"}
    one = post(client, bearer.trigger, idempotency_key="k" * 300 + "1", **auth).json()
    two = post(client, bearer.trigger, idempotency_key="k" * 300 + "2", **auth).json()
    again = post(client, bearer.trigger, idempotency_key="k" * 300 + "1", **auth).json()
    assert one["run_id"] != two["run_id"] and again["run_id"] == one["run_id"]
    assert all(len(d.delivery_id) <= 200 for d in Delivery.objects.all())


def test_an_absurd_content_length_is_refused_and_recorded(client, bearer):
    response = client.post(
        hook_url(bearer.trigger),
        data=b"{}",
        content_type="application/json",
        CONTENT_LENGTH="9" * 40,
    )
    assert response.status_code == 413
    assert Delivery.objects.get().body_bytes == 2**31 - 1


def test_a_flood_of_over_the_rate_deliveries_is_logged_at_most_sixty_a_minute(client, agent):
    from runs.triggers.webhooks import REFUSALS_KEPT_PER_MINUTE

    made = create_trigger(agent, SYSTEM, name="flood", rate_per_minute=1)
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        for _ in range(REFUSALS_KEPT_PER_MINUTE + 20):
            post(client, made.trigger, authorization=f"Bearer {made.secret}")
    assert Delivery.objects.filter(outcome="rate_limited").count() == REFUSALS_KEPT_PER_MINUTE
    assert Delivery.objects.filter(outcome="started").count() == 1


def test_a_name_with_a_trailing_newline_is_refused(agent):
    with pytest.raises(ValidationError, match="a name is 1 to 64"):
        create_trigger(agent, SYSTEM, name="hook\n")
