"""The API's endpoints (`/api/v1/...`): each checks the permission it needs first (403 before
404, so nobody probes names or ids), then calls the service the pages call, as the token's
owner (auth.api_actor); every error is JSON, `{"detail": "what went wrong"}`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, URLResolver, re_path, reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Query, Status, Swagger
from ninja.errors import AuthenticationError
from ninja.errors import ValidationError as SchemaError

from agents.models import Agent
from audit.commands import validation_text
from cronos_site.api.auth import PersonalToken, api_actor
from cronos_site.api.schemas import (
    AgentOut,
    DecisionIn,
    ErrorOut,
    MeOut,
    RunOut,
    TriggerIn,
)
from cronos_site.web.access import CANCEL, DOING, RUN, VIEW_AGENT, VIEW_RUN
from cronos_site.web.agentlist import next_run, schedule_in_words
from runs import approvals
from runs.models import Run, RunState
from runs.services import approve_run, cancel_run, reject_run, rerun, trigger_run
from runs.summary import run_summary

log = logging.getLogger(__name__)

APPROVE = approvals.PERMISSION
RUNS_LIMIT = 200  # runs in one answer at most; page on with `before_id`
AGENTS_LIMIT = 1000  # agents in one answer at most; page on with `after`

api = NinjaAPI(
    title="Cronos API",
    version="1",
    description=(
        "Agents and their runs, for scripts. Authenticate with a personal access token: "
        "`Authorization: Bearer cronos_…` (make one on the site's *API tokens* page). The API "
        "acts as the token's owner, with that person's roles. A run is the object "
        '`manage.py cronos_run --json` prints. Errors are `{"detail": "…"}`.'
    ),
    auth=PersonalToken(),
    urls_namespace="api",
    # Swagger UI from ninja's own static files (no CDN: "ninja" is an installed app), and no
    # validator badge, which would load an image from swagger.io.
    docs=Swagger(settings={"validatorUrl": None}),
)

# The errors every authenticated endpoint may answer, for the OpenAPI document.
ERRORS: dict[int, Any] = {401: ErrorOut, 403: ErrorOut}
FOUND_ERRORS: dict[int, Any] = {**ERRORS, 404: ErrorOut}


# --- Errors: JSON with a message, whatever raised them ---------------------------------------


def _error(request: HttpRequest, detail: str, status: int, **headers: str) -> HttpResponse:
    response = api.create_response(request, {"detail": detail}, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    # The same answer for a missing, unknown or revoked token and a deactivated account.
    return _error(
        request,
        "A valid personal access token is needed: Authorization: Bearer <token>.",
        401,
        **{"WWW-Authenticate": 'Bearer realm="cronos"'},
    )


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    # The services' refusals name who and which permission (audit.actor), or why (four eyes).
    return _error(request, str(exc) or "Permission denied.", 403)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, str(exc) or "Not found.", 404)


@api.exception_handler(DjangoValidationError)
def _refused(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    # What a service refused (a variable named PATH), in its own words: each problem a clause.
    if hasattr(exc, "error_dict"):
        return _error(request, validation_text(exc), 400)
    return _error(request, "; ".join(exc.messages), 400)


@api.exception_handler(SchemaError)
def _malformed(request: HttpRequest, exc: SchemaError) -> HttpResponse:
    # What the schema refused (a value of the wrong type, a limit out of range), one line:
    # `variables.X: Input should be a valid string; limit: ...`. ninja's location starts with
    # where the value was (body, query, path) and, for a body, the view's argument name:
    # neither is what the client sent.
    problems = []
    for error in exc.errors:
        loc = [str(part) for part in error.get("loc", ())]
        where = ".".join(loc[2:] if loc[:1] == ["body"] else loc[1:])
        said = str(error.get("msg", "invalid"))
        problems.append(f"{where}: {said}" if where else said)
    return _error(request, "; ".join(problems) or "The request is invalid.", 422)


@api.exception_handler(approvals.ApprovalError)
def _conflict(request: HttpRequest, exc: approvals.ApprovalError) -> HttpResponse:
    # Decided already, asked again since, or a merge that could not be made.
    return _error(request, str(exc), 409)


@api.exception_handler(Exception)
def _server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("api request failed", extra={"path": request.path})
    return _error(request, "Cronos failed to answer; its log says why.", 500)


# --- Who the token acts as --------------------------------------------------------------------


@api.get("/me", response={200: MeOut, **ERRORS}, tags=["me"], summary="Who the token acts as")
def me(request: HttpRequest) -> dict:
    user = api_actor(request).user
    assert user is not None  # PersonalToken authenticated a person
    return {
        "username": user.get_username(),
        "roles": sorted(user.groups.values_list("name", flat=True)),
        "permissions": sorted(perm for perm in DOING if user.has_perm(perm)),
    }


# --- Agents -------------------------------------------------------------------------------


def _agent(name: str) -> Agent:
    agent = Agent.objects.select_related("run_state").filter(name=name).first()
    if agent is None:
        raise Http404(f"There is no agent named {name!r}.")
    return agent


def _agent_json(agent: Agent, now) -> dict:
    state = getattr(agent, "run_state", None)
    words, problem = schedule_in_words(agent)
    last = None
    if state is not None and state.last_state:
        last = {
            "id": state.last_run_id,
            "state": state.last_state,
            "finished_at": state.last_finished_at.isoformat() if state.last_finished_at else None,
        }
    upcoming = next_run(agent, state, now) if not problem else None
    return {
        "name": agent.name,
        "description": agent.description,
        "enabled": agent.enabled,
        "runner": agent.runner,
        "schedule": agent.schedule,
        "schedule_words": words or f"unusable schedule: {problem}",
        "timezone": agent.timezone,
        "approval_required": agent.approval_required,
        "next_run": upcoming.isoformat() if upcoming else None,
        "last_run": last,
    }


@api.get(
    "/agents", response={200: list[AgentOut], **ERRORS}, tags=["agents"], summary="List agents"
)
def list_agents(
    request: HttpRequest,
    limit: Annotated[int, Query(ge=1, le=AGENTS_LIMIT)] = AGENTS_LIMIT,
    after: Annotated[str, Query(description="Only agents whose name sorts after this.")] = "",
) -> list[dict]:
    """Agents by name, each with its schedule, next run and last run."""
    api_actor(request).require(VIEW_AGENT)
    agents = Agent.objects.select_related("run_state").order_by("name")
    if after:
        agents = agents.filter(name__gt=after)
    now = timezone.now()
    return [_agent_json(agent, now) for agent in agents[:limit]]


@api.get(
    "/agents/{name}",
    response={200: AgentOut, **FOUND_ERRORS},
    tags=["agents"],
    summary="Get an agent",
)
def get_agent(request: HttpRequest, name: str) -> dict:
    api_actor(request).require(VIEW_AGENT)
    return _agent_json(_agent(name), timezone.now())


@api.post(
    "/agents/{name}/runs",
    response={202: RunOut, 400: ErrorOut, 422: ErrorOut, **FOUND_ERRORS},
    tags=["runs"],
    summary="Start a run",
)
def trigger(request: HttpRequest, name: str, payload: TriggerIn | None = None) -> Status:
    """Start a run of the agent now (trigger `api`, caused by the token's owner), with
    variables for this run only. It meets the same gates as a scheduled run: it may wait for
    approval or be skipped by the overlap policy (unless `force`); its state says which."""
    actor = api_actor(request)
    actor.require(RUN)
    agent = _agent(name)
    given = payload or TriggerIn()
    run = trigger_run(
        agent, actor, trigger=Run.Trigger.API, force=given.force, variables=given.variables
    )
    return Status(202, run_summary(run))


# --- Runs ---------------------------------------------------------------------------------


def _run(request: HttpRequest, run_id: int, perm: str) -> Run:
    """The run `run_id`, if the token's owner may `perm` (403 before 404)."""
    api_actor(request).require(perm)
    run = Run.objects.select_related("agent", "approval", "review").filter(pk=run_id).first()
    if run is None:
        raise Http404(f"There is no run #{run_id}.")
    return run


def _fresh(run: Run) -> dict:
    """The run as it is now, after a service changed it."""
    return run_summary(Run.objects.select_related("agent", "approval", "review").get(pk=run.pk))


@api.get(
    "/runs",
    response={200: list[RunOut], 422: ErrorOut, **FOUND_ERRORS},
    tags=["runs"],
    summary="List runs",
)
def list_runs(
    request: HttpRequest,
    agent: Annotated[str, Query(description="Only this agent's runs.")] = "",
    state: Annotated[RunState | None, Query(description="Only runs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=RUNS_LIMIT)] = 50,
    before_id: Annotated[int | None, Query(ge=1, description="Only runs older than this.")] = None,
) -> list[dict]:
    """Runs, newest first; the next page is `before_id=<the last id>`."""
    api_actor(request).require(VIEW_RUN)
    runs = Run.objects.select_related("agent", "approval", "review")
    if agent:
        runs = runs.filter(agent=_agent(agent))
    if state:
        runs = runs.filter(state=state)
    if before_id:
        runs = runs.filter(pk__lt=before_id)
    return [run_summary(run) for run in runs.order_by("-id")[:limit]]


@api.get(
    "/runs/{int:run_id}",
    response={200: RunOut, **FOUND_ERRORS},
    tags=["runs"],
    summary="Get a run",
)
def get_run(request: HttpRequest, run_id: int) -> dict:
    """The run: its state and reason, times, metrics (tokens, cost), approval and review."""
    return run_summary(_run(request, run_id, VIEW_RUN))


@api.post(
    "/runs/{int:run_id}/cancel",
    response={200: RunOut, 409: ErrorOut, **FOUND_ERRORS},
    tags=["runs"],
    summary="Cancel a run",
)
def cancel(request: HttpRequest, run_id: int) -> dict | Status:
    """A waiting run ends at once; a running one is asked to stop and ends in a moment."""
    run = _run(request, run_id, CANCEL)
    if not cancel_run(run, api_actor(request)):
        run.refresh_from_db()
        state = run.get_state_display().lower()
        return Status(409, {"detail": f"Run #{run.pk} is {state}: nothing to cancel."})
    return _fresh(run)


@api.post(
    "/runs/{int:run_id}/approve",
    response={200: RunOut, 409: ErrorOut, 422: ErrorOut, **FOUND_ERRORS},
    tags=["runs"],
    summary="Approve a run",
)
def approve(request: HttpRequest, run_id: int, payload: DecisionIn | None = None) -> dict:
    """Approve a run waiting for approval (it then starts, or waits its turn), or merge the
    changes of a run awaiting review. Never the run's own cause (four eyes)."""
    run = _run(request, run_id, APPROVE)
    approve_run(run, api_actor(request), (payload or DecisionIn()).note)
    return _fresh(run)


@api.post(
    "/runs/{int:run_id}/reject",
    response={200: RunOut, 409: ErrorOut, 422: ErrorOut, **FOUND_ERRORS},
    tags=["runs"],
    summary="Reject a run",
)
def reject(request: HttpRequest, run_id: int, payload: DecisionIn | None = None) -> dict:
    """Reject a run waiting for approval (skipped), or the changes of a run awaiting review."""
    run = _run(request, run_id, APPROVE)
    reject_run(run, api_actor(request), (payload or DecisionIn()).note)
    return _fresh(run)


@api.post(
    "/runs/{int:run_id}/rerun",
    response={202: RunOut, 400: ErrorOut, **FOUND_ERRORS},
    tags=["runs"],
    summary="Run again, exactly",
)
def run_again(request: HttpRequest, run_id: int) -> Status:
    """A new run of the same agent version with the same variables (`rerun_of` links it).
    400 when the version that run ran is no longer kept: start a new run instead."""
    original = _run(request, run_id, RUN)
    return Status(202, run_summary(rerun(original, api_actor(request))))


# --- URLs ---------------------------------------------------------------------------------


@csrf_exempt
@login_not_required
def _index(request: HttpRequest, **kwargs: Any) -> JsonResponse:
    """`/api/v1/`: where the document and its page are."""
    return JsonResponse(
        {
            "title": api.title,
            "openapi": reverse("api:openapi-json"),
            "docs": reverse("api:openapi-view"),
        }
    )


@csrf_exempt
@login_not_required
def _no_endpoint(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": f"There is no API endpoint {request.path}."}, status=404)


def _json_refusals(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """ninja answers a method an endpoint does not take with a bare text 405: JSON here too."""

    @wraps(view)
    def answer(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if response.status_code == 405 and "json" not in response.get("Content-Type", ""):
            allowed = response.get("Allow", "")
            return JsonResponse(
                {"detail": f"{request.method} is not allowed here; this endpoint takes {allowed}."},
                status=405,
                headers={"Allow": allowed},
            )
        return response

    return answer


def api_urls() -> tuple[list[URLPattern | URLResolver], str, str]:
    """The API's URLs, for `path("api/v1/", api_urls())`. Every view is exempt from the site's
    login (LoginRequiredMiddleware would send a script to the login page): the token is the
    endpoints' login, and the document and its page are public. Every answer is JSON, an
    unknown path and a wrong method included."""
    patterns, app_name, namespace = api.urls
    routes: list[URLPattern | URLResolver] = []
    for pattern in patterns:
        if isinstance(pattern, URLPattern) and pattern.name == "api-root":
            # ninja's own answers 404 with an HTML page; the name stays (ninja reverses it).
            pattern = URLPattern(pattern.pattern, _index, name=pattern.name)
        elif isinstance(pattern, URLPattern) and pattern.name not in (
            "openapi-json",
            "openapi-view",
        ):
            pattern = URLPattern(
                pattern.pattern,
                _json_refusals(pattern.callback),
                pattern.default_args,
                pattern.name,
            )
        if isinstance(pattern, URLPattern):
            login_not_required(pattern.callback)
        routes.append(pattern)
    return [*routes, re_path(r"", _no_endpoint, name="no-endpoint")], app_name, namespace
