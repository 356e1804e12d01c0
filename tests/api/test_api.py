"""The JSON API through the real HTTP stack: a live server (every middleware of the site, the
login requirement and CSRF included) and a real HTTP client, with a personal token of each
role. Nothing runs: the engine records what it was handed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from agents import secrets
from audit import roles, tokens
from audit.actor import Actor
from audit.models import AuditEntry
from runs import approvals
from runs.models import AgentRunState, Run
from runs.summary import run_summary
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def recorded(settings):
    """Runs are handed to an engine that only records them."""
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything.clear()
    return RecordingEngine.everything


# The variables "nightly" declares: the only names its runs may be given.
DECLARED = ("COUNT", "DAY", "GREETING")


@pytest.fixture
def agent():
    return make_agent(
        "nightly",
        description="Nightly notes",
        schedule="0 3 * * *",
        variables=[secrets.plain(name, "") for name in DECLARED],
    )


def token_for(user, name: str = "script") -> str:
    _, secret = tokens.create_token(user, name, Actor(user=user, source=AuditEntry.Source.WEB))
    return secret


class Api:
    """A real HTTP client for the live server's API."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, object, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, content, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, content, got = error.code, error.read(), error.headers
        assert got.get_content_type() == "application/json", (status, content[:300])
        return status, json.loads(content), dict(got)

    def get(self, path: str, token: str | None = None, **kwargs):
        return self.call("GET", path, token, **kwargs)

    def post(self, path: str, token: str | None = None, body: object = None, **kwargs):
        return self.call("POST", path, token, body, **kwargs)


@pytest.fixture
def api(live_server) -> Api:
    return Api(f"{live_server.url}/api/v1")


# --- Who may do what ------------------------------------------------------------------------


def test_a_viewer_lists_and_reads_agents_but_cannot_start_a_run(api, viewer, agent):
    token = token_for(viewer)
    status, body, _ = api.get("/agents", token)
    assert status == 200
    [listed] = body
    assert listed["name"] == "nightly"
    assert (listed["description"], listed["enabled"], listed["schedule"]) == (
        "Nightly notes",
        True,
        "0 3 * * *",
    )
    assert listed["runner"] == "command" and listed["next_run"] is not None
    assert listed["last_run"] is None
    status, one, _ = api.get("/agents/nightly", token)
    assert (status, one) == (200, listed)

    status, body, _ = api.post("/agents/nightly/runs", token, {"variables": {"WHO": "vera"}})
    assert status == 403
    assert body == {"detail": "vera lacks the permission agents.run_agent."}
    assert not Run.objects.exists()


def test_an_operator_starts_a_run_with_variables_and_is_its_cause(api, operator, agent, recorded):
    token = token_for(operator)
    given = {"GREETING": "hello; rm -rf / $(whoami)", "COUNT": "3"}
    status, body, _ = api.post("/agents/nightly/runs", token, {"variables": given})
    assert status == 202
    run = Run.objects.get()
    assert body["id"] == run.pk and body["state"] == Run.State.QUEUED
    assert (run.trigger, run.variables) == (Run.Trigger.API, given)
    assert (run.triggered_by, run.triggered_by_name) == (operator, "otto")
    assert approvals.cause_of(run).user_id == operator.pk
    assert recorded == [run.pk]
    entry = AuditEntry.objects.get(action="run.trigger")
    assert (entry.actor, entry.source, entry.ip_address) == (operator, "api", "127.0.0.1")
    assert "COUNT, GREETING" in entry.message


def test_a_run_can_be_started_with_no_body_at_all(api, operator, agent):
    status, body, _ = api.post("/agents/nightly/runs", token_for(operator))
    assert status == 202
    assert (body["trigger"], body["variables"]) == ("api", {})


def test_an_operator_cancels_a_run_and_a_second_cancel_is_a_conflict(api, operator, agent):
    token = token_for(operator)
    _, started, _ = api.post("/agents/nightly/runs", token, {})
    status, body, _ = api.post(f"/runs/{started['id']}/cancel", token)
    assert status == 200
    assert body["state"] == Run.State.CANCELLED
    assert Run.objects.get().state == Run.State.CANCELLED
    status, body, _ = api.post(f"/runs/{started['id']}/cancel", token)
    assert (status, body) == (
        409,
        {"detail": f"Run #{started['id']} is cancelled: nothing to cancel."},
    )


def test_a_viewer_cannot_cancel(api, viewer, operator, agent):
    _, started, _ = api.post("/agents/nightly/runs", token_for(operator), {})
    status, body, _ = api.post(f"/runs/{started['id']}/cancel", token_for(viewer))
    assert status == 403 and "agents.cancel_run" in body["detail"]
    assert Run.objects.get().state == Run.State.QUEUED


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "PYTHONPATH"])
def test_refused_variable_names_are_a_400_saying_why(api, operator, agent, name):
    status, body, _ = api.post(
        "/agents/nightly/runs", token_for(operator), {"variables": {name: "/tmp/x"}}
    )
    assert status == 400
    assert body["detail"].startswith(f"{name} cannot be set for one run")
    assert not Run.objects.exists()


def test_a_variable_the_agent_does_not_declare_is_a_400_naming_those_it_does(api, operator, agent):
    status, body, _ = api.post(
        "/agents/nightly/runs",
        token_for(operator),
        {"variables": {"DAY": "monday", "TICKET": "OPS-1"}},
    )
    assert (status, body) == (
        400,
        {
            "detail": "TICKET is not one of the agent's variables (it declares: COUNT, DAY, "
            "GREETING); a run may set only those — an editor adds a variable to the agent to "
            "let runs set it"
        },
    )
    assert not Run.objects.exists()


def test_a_secret_variables_name_cannot_be_set_for_a_run(api, operator):
    make_agent(
        "deployer",
        variables=[secrets.plain("TARGET", "staging"), secrets.secret("API_TOKEN", "real-token")],
    )
    status, body, _ = api.post(
        "/agents/deployer/runs", token_for(operator), {"variables": {"API_TOKEN": "mine"}}
    )
    assert status == 400
    assert body["detail"].startswith(
        "API_TOKEN is not one of the agent's variables (it declares: TARGET)"
    )
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "name",
    ["MAKEFLAGS", "LD_PRELOAD", "GCONV_PATH", "XDG_CONFIG_HOME", "CLAUDE_CODE_USE_BEDROCK",
     "ANTHROPIC_BEDROCK_BASE_URL", "NPM_CONFIG_PREFIX", "PIP_INDEX_URL", "CC"],
)  # fmt: skip
def test_a_declared_name_that_changes_what_runs_is_still_a_400(api, operator, name):
    make_agent("builder", variables=[secrets.plain(name, "x")])
    status, body, _ = api.post(
        "/agents/builder/runs", token_for(operator), {"variables": {name: "/tmp/evil"}}
    )
    assert status == 400
    assert body["detail"].startswith(f"{name} cannot be set for one run")
    assert not Run.objects.exists()


@pytest.mark.parametrize("name", ["PATH\n", "DAY\n"])
def test_a_name_ending_in_a_newline_is_a_400(api, operator, agent, name):
    status, body, _ = api.post(
        "/agents/nightly/runs", token_for(operator), {"variables": {name: "x"}}
    )
    assert status == 400
    assert body["detail"] == (
        f"{name!r} is not a valid variable name (letters, digits and _, not starting with a digit)"
    )
    assert not Run.objects.exists()


def test_an_unknown_key_is_a_422_naming_it_and_starts_nothing(api, operator, approver):
    make_agent("guarded", approval_required=True, variables=[secrets.plain("DAY", "")])
    # A misspelt "variables" is not a run without them.
    status, body, _ = api.post(
        "/agents/guarded/runs", token_for(operator), {"variabels": {"DAY": "monday"}}
    )
    assert (status, body) == (422, {"detail": "variabels: Extra inputs are not permitted"})
    assert not Run.objects.exists()

    # Nor is a misspelt "note" a decision without one.
    _, started, _ = api.post("/agents/guarded/runs", token_for(operator, "b"), {})
    status, body, _ = api.post(
        f"/runs/{started['id']}/approve", token_for(approver), {"notes": "looks fine"}
    )
    assert (status, body) == (422, {"detail": "notes: Extra inputs are not permitted"})
    assert Run.objects.get().state == Run.State.AWAITING_APPROVAL


def test_a_variable_that_is_not_text_is_a_422_naming_it(api, operator, agent):
    status, body, _ = api.post(
        "/agents/nightly/runs", token_for(operator), {"variables": {"N": {"deep": 1}}}
    )
    assert status == 422
    assert "variables.N" in body["detail"] and "string" in body["detail"]
    status, body, _ = api.post("/agents/nightly/runs", token_for(operator, "b"), raw=b"{not json")
    assert status in (400, 422) and isinstance(body["detail"], str)
    assert not Run.objects.exists()


def test_an_approver_approves_a_run_that_its_cause_cannot(api, admin_user, approver, operator):
    make_agent("guarded", approval_required=True)
    admin_token = token_for(admin_user)
    status, started, _ = api.post("/agents/guarded/runs", admin_token, {})
    assert (status, started["state"]) == (202, Run.State.AWAITING_APPROVAL)
    approve = f"/runs/{started['id']}/approve"

    # Four eyes: the person who caused it cannot approve it, admin or not.
    status, body, _ = api.post(approve, admin_token, {"note": "mine"})
    assert status == 403 and "four eyes" in body["detail"]
    # Nor can someone without the approver role.
    status, body, _ = api.post(approve, token_for(operator), {})
    assert status == 403 and "agents.approve_run" in body["detail"]
    assert Run.objects.get().state == Run.State.AWAITING_APPROVAL

    approver_token = token_for(approver)
    status, body, _ = api.post(approve, approver_token, {"note": "looks fine"})
    assert status == 200
    assert body["state"] == Run.State.QUEUED
    assert (body["approval"]["decided_by"], body["approval"]["note"]) == ("april", "looks fine")
    entry = AuditEntry.objects.filter(action="run.approve").get()
    assert (entry.actor_username, entry.source) == ("april", "api")

    status, body, _ = api.post(approve, approver_token, {})
    assert status == 409 and "detail" in body


def test_an_approver_rejects_a_waiting_run(api, operator, approver):
    make_agent("guarded", approval_required=True)
    _, started, _ = api.post("/agents/guarded/runs", token_for(operator), {})
    status, body, _ = api.post(
        f"/runs/{started['id']}/reject", token_for(approver), {"note": "not today"}
    )
    assert status == 200
    assert body["state"] == Run.State.SKIPPED and "approval rejected" in body["reason"]


def test_a_rerun_repeats_the_variables_and_links_the_original(api, operator, agent, recorded):
    token = token_for(operator)
    _, first, _ = api.post("/agents/nightly/runs", token, {"variables": {"DAY": "monday"}})
    # It ran and ended (nothing runs here): the re-run is not held back by the overlap gate.
    Run.objects.filter(pk=first["id"]).update(state=Run.State.SUCCEEDED, finished_at=timezone.now())
    status, again, _ = api.post(f"/runs/{first['id']}/rerun", token)
    assert status == 202
    assert again["rerun_of"] == first["id"] and again["id"] != first["id"]
    assert again["variables"] == {"DAY": "monday"}
    assert again["agent_version"] == first["agent_version"]
    assert recorded == [first["id"], again["id"]]


def test_a_rerun_of_a_run_whose_version_is_no_longer_kept_is_a_400_saying_why(
    api, operator, agent, recorded
):
    token = token_for(operator)
    _, first, _ = api.post("/agents/nightly/runs", token, {"variables": {"DAY": "monday"}})
    Run.objects.filter(pk=first["id"]).update(
        state=Run.State.SUCCEEDED, finished_at=timezone.now(), agent_version=None
    )
    status, body, _ = api.post(f"/runs/{first['id']}/rerun", token)
    assert (status, body) == (
        400,
        {
            "detail": f"run #{first['id']} cannot be run again exactly: the agent version it "
            "ran is no longer kept (history cleaned, or a run imported from the prototype); "
            "start a new run instead"
        },
    )
    assert list(Run.objects.values_list("pk", flat=True)) == [first["id"]]
    assert recorded == [first["id"]]


def test_permissions_are_the_persons_at_the_time_of_the_request(api, operator, agent):
    token = token_for(operator)
    assert api.post("/agents/nightly/runs", token, {})[0] == 202
    operator.groups.set([Group.objects.get(name=roles.VIEWER)])
    status, body, _ = api.post("/agents/nightly/runs", token, {})
    assert status == 403 and "agents.run_agent" in body["detail"]
    assert api.get("/agents", token)[0] == 200


def test_me_says_who_the_token_acts_as(api, approver):
    status, body, _ = api.get("/me", token_for(approver))
    assert status == 200
    assert (body["username"], body["roles"]) == ("april", ["approver"])
    assert "agents.approve_run" in body["permissions"]
    assert "agents.run_agent" not in body["permissions"]


# --- Tokens -------------------------------------------------------------------------------


def test_without_a_token_the_answer_is_a_json_401_not_the_login_page(api, viewer, agent):
    for path in ("/agents", "/runs", "/me"):
        status, body, headers = api.get(path)
        assert status == 401
        assert body == {
            "detail": "A valid personal access token is needed: Authorization: Bearer <token>."
        }
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert api.post("/agents/nightly/runs", "cronos_not-a-real-token", {})[0] == 401
    assert api.get("/agents", headers={"Authorization": "Token whatever"})[0] == 401


def test_a_session_cookie_is_not_a_token(api, admin_user, agent, settings):
    client = Client()
    client.force_login(admin_user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    status, _, _ = api.post("/agents/nightly/runs", headers={"Cookie": cookie}, body={})
    assert status == 401
    assert not Run.objects.exists()


def test_a_revoked_token_is_refused(api, operator, agent):
    made, secret = tokens.create_token(operator, "ci", Actor(user=operator, source="web"))
    assert api.get("/me", secret)[0] == 200
    tokens.revoke_token(made, Actor(user=operator, source="web"))
    status, body, _ = api.get("/me", secret)
    assert status == 401 and "token" in body["detail"]
    assert api.post("/agents/nightly/runs", secret, {})[0] == 401
    assert not Run.objects.exists()


def test_the_token_of_a_deactivated_person_is_refused(api, operator, agent):
    token = token_for(operator)
    operator.is_active = False
    operator.save(update_fields=["is_active"])
    assert api.post("/agents/nightly/runs", token, {})[0] == 401
    assert not Run.objects.exists()


# --- Runs ---------------------------------------------------------------------------------


def test_a_run_is_the_run_summary_with_its_cost_as_a_decimal_string(api, viewer, agent):
    run = Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.WEBHOOK,
        trigger_detail={"webhook": "deploys", "delivery": "abc-1"},
        variables={"DAY": "monday"},
        state=Run.State.SUCCEEDED,
        exit_code=0,
        model="claude-sonnet-4-5",
        input_tokens=6,
        output_tokens=123,
        cost_usd=Decimal("0.021874"),
        num_turns=3,
        commits=["9c41e2a"],
    )
    run.refresh_from_db()
    status, body, _ = api.get(f"/runs/{run.pk}", token_for(viewer))
    assert status == 200
    assert body == json.loads(json.dumps(run_summary(run)))
    assert body["cost_usd"] == "0.021874"
    assert body["trigger_detail"] == {"webhook": "deploys", "delivery": "abc-1"}
    assert (body["variables"], body["rerun_of"]) == ({"DAY": "monday"}, None)
    status, listed, _ = api.get("/runs", token_for(viewer, "list"))
    assert listed == [body]


def test_runs_are_listed_newest_first_filtered_and_paged(api, viewer, agent):
    other = make_agent("other")
    ids = [
        Run.objects.create(agent=a, trigger=Run.Trigger.MANUAL, state=s).pk
        for a, s in [
            (agent, Run.State.SUCCEEDED),
            (other, Run.State.FAILED),
            (agent, Run.State.FAILED),
            (agent, Run.State.SUCCEEDED),
        ]
    ]
    token = token_for(viewer)
    assert [r["id"] for r in api.get("/runs", token)[1]] == ids[::-1]
    assert [r["id"] for r in api.get("/runs?agent=nightly", token)[1]] == [ids[3], ids[2], ids[0]]
    assert [r["id"] for r in api.get("/runs?state=failed", token)[1]] == [ids[2], ids[1]]
    page = api.get("/runs?limit=2", token)[1]
    assert [r["id"] for r in page] == [ids[3], ids[2]]
    rest = api.get(f"/runs?limit=2&before_id={page[-1]['id']}", token)[1]
    assert [r["id"] for r in rest] == [ids[1], ids[0]]

    status, body, _ = api.get("/runs?limit=201", token)
    assert status == 422 and "limit" in body["detail"]
    status, body, _ = api.get("/runs?state=bogus", token)
    assert status == 422 and "state" in body["detail"]
    status, body, _ = api.get("/runs?agent=nobody", token)
    assert (status, body) == (404, {"detail": "There is no agent named 'nobody'."})


def test_the_agent_shows_its_last_run(api, viewer, agent):
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL, state=Run.State.FAILED)
    AgentRunState.note_finished(run)
    _, body, _ = api.get("/agents/nightly", token_for(viewer))
    assert body["last_run"]["id"] == run.pk and body["last_run"]["state"] == "failed"


def test_unknown_things_are_json_404s(api, viewer, outsider):
    token = token_for(viewer)
    assert api.get("/runs/999999", token)[:2] == (404, {"detail": "There is no run #999999."})
    assert api.get("/agents/nobody", token)[:2] == (
        404,
        {"detail": "There is no agent named 'nobody'."},
    )
    status, body, _ = api.get("/no/such/thing", token)
    assert status == 404 and body["detail"].startswith("There is no API endpoint")
    status, body, headers = api.call("DELETE", "/runs/1", token)
    assert (status, headers["Allow"]) == (405, "GET")
    assert body == {"detail": "DELETE is not allowed here; this endpoint takes GET."}
    assert api.get("/")[1] == {
        "title": "Cronos API",
        "openapi": "/api/v1/openapi.json",
        "docs": "/api/v1/docs",
    }
    # 403 before 404: someone without the role learns nothing about what exists.
    status, body, _ = api.get("/runs/999999", token_for(outsider))
    assert status == 403


# --- The document -------------------------------------------------------------------------

ENDPOINTS = {
    ("get", "/api/v1/me"),
    ("get", "/api/v1/agents"),
    ("get", "/api/v1/agents/{name}"),
    ("post", "/api/v1/agents/{name}/runs"),
    ("get", "/api/v1/runs"),
    ("get", "/api/v1/runs/{run_id}"),
    ("post", "/api/v1/runs/{run_id}/cancel"),
    ("post", "/api/v1/runs/{run_id}/approve"),
    ("post", "/api/v1/runs/{run_id}/reject"),
    ("post", "/api/v1/runs/{run_id}/rerun"),
}


def test_the_openapi_document_lists_every_endpoint_behind_a_bearer_token(api):
    status, document, _ = api.get("/openapi.json")
    assert status == 200
    found = {(method, path) for path, item in document["paths"].items() for method in item}
    assert found == ENDPOINTS
    [scheme] = document["components"]["securitySchemes"].values()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, item in document["paths"].items():
        for operation in item.values():
            assert operation["security"], path
            assert "401" in operation["responses"], path
    run = document["components"]["schemas"]["RunOut"]["properties"]
    assert {"cost_usd", "trigger_detail", "variables", "rerun_of"} <= set(run)
    # A refused re-run (its version no longer kept) and a body with an unknown key are listed.
    paths = document["paths"]
    assert "400" in paths["/api/v1/runs/{run_id}/rerun"]["post"]["responses"]
    for path in ("/api/v1/agents/{name}/runs", "/api/v1/runs/{run_id}/approve"):
        assert "422" in paths[path]["post"]["responses"], path
    assert document["components"]["schemas"]["TriggerIn"]["additionalProperties"] is False
