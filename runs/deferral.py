"""Usage limits (DESIGN.md §7.4): a run stopped by its Claude account's usage limit is deferred
(its row kept, holding the lock) and executed again as a fresh session after the reset, and
meanwhile every claude agent on the same account is paused.

- The reset: the stream's `rate_limit_event.resetsAt`, else the time written in the CLI's text
  (runs.execution.resets), else (a 429 without words) a 15-minute back-off that lets the next
  run probe (research/wave2.md §1.4 "Recommendation"). `resume_at` adds a margin (60 s) and a
  stable per-agent spread (0–120 s) so that a crowd of agents does not wake in one second.
- The account: a hash of where the CLI keeps its login (`CLAUDE_CONFIG_DIR`, else `HOME`) and
  of its key source (a fingerprint of `ANTHROPIC_API_KEY` when the agent's environment has one,
  else the login): never a credential (research §1.4 "Deferral scope").
- A weekly per-model limit (`seven_day_opus`, `seven_day_sonnet`) pauses that model family only.
- During a pause the scheduler makes no run for the paused agents' slots (they are accounted by
  each agent's catch-up policy when it ends, reason `usage-limit pause`), and a run handed over
  meanwhile (manual, webhook, API, approved) is skipped with that reason (runs.dispatch).
- `wake`, a housekeeping task, queues each deferred run again at its `resume_at`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents import secrets
from agents.models import Agent
from audit import roles
from audit.actor import Actor
from audit.log import record
from runs import costs
from runs.models import AccountPause, Notification, Run

log = logging.getLogger(__name__)

MARGIN = timedelta(seconds=60)
SPREAD_SECONDS = 120
# No reset time known (a 429 on a subscription without words): the next run probes after this.
UNKNOWN_RESET_BACKOFF = timedelta(minutes=15)
# The longest any limit lasts (the weekly ones), with a margin.
LONGEST_LIMIT = timedelta(days=7, hours=1)
# A run limited this many times ends failed (usage_limit) instead of waiting once more.
MAX_EXECUTIONS = 10
PAUSE_REASON = "usage-limit pause"
# Weekly per-model limits (research §1.1 `rateLimitType`): the model family they pause.
LIMIT_FAMILIES = {"seven_day_opus": "opus", "seven_day_sonnet": "sonnet"}
FAMILIES = ("opus", "sonnet", "haiku")


def family(model: str) -> str:
    """The model family of a model name ("claude-opus-4-1[1m]" -> "opus"); "" if unknown."""
    lowered = (model or "").lower()
    return next((name for name in FAMILIES if name in lowered), "")


def account_key_from_env(env: dict[str, str]) -> str:
    """The account an agent's CLI uses, from the environment it runs with: a SHA-256 (hex, 32
    characters) of its config location and key source. The API key itself is never stored,
    only a fingerprint inside this hash."""
    location = env.get("CLAUDE_CONFIG_DIR") or f"{env.get('HOME', '')}/.claude"
    key = env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN") or ""
    source = "key:" + hashlib.sha256(key.encode()).hexdigest() if key else "login"
    return hashlib.sha256(f"{location}\0{source}".encode()).hexdigest()[:32]


ACCOUNT_VARIABLES = ("CLAUDE_CONFIG_DIR", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


def account_key(agent: Any) -> str:
    """The account of an agent (or one of its versions): its own CLAUDE_CONFIG_DIR and API key
    variables, else the login in the home of the account agents run as (the agent user's, or
    Cronos's own from the password database: never a process's HOME variable, so that the web
    process, the scheduler and every worker name the same account)."""
    from runs.execution import isolation  # the executor's own module: the agent user

    try:
        variables = secrets.environment(agent.variables or [])
    except secrets.SecretKeyError:
        variables = {}
    user = isolation.current().agent_user
    home = user.home if user is not None else pwd.getpwuid(os.getuid()).pw_dir
    env = {"HOME": home, **{k: variables[k] for k in ACCOUNT_VARIABLES if variables.get(k)}}
    return account_key_from_env(env)


def spread(agent_name: str) -> timedelta:
    """A stable per-agent offset in [0, SPREAD_SECONDS) s, so paused agents do not all wake in
    the same second."""
    digest = hashlib.sha256(f"usage-limit:{agent_name}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:4], "big") % SPREAD_SECONDS)


class AlreadyEnded(Exception):
    """The pause to lift is no longer in force (lifted, or past its end)."""


@dataclass(frozen=True)
class Deferral:
    """When a limited run resumes and why, as the executor records it."""

    resets_at: datetime | None  # the account's reset (None: not known)
    resume_at: datetime  # reset + margin + the agent's spread
    approximate: bool
    reason: str


def plan(
    agent_name: str, resets_at: datetime | None, approximate: bool, now: datetime, describe
) -> Deferral:
    """The deferral of a run of `agent_name` limited at `now`; `describe` writes an instant for
    a person (the agent's zone)."""
    if resets_at is not None and resets_at > now + LONGEST_LIMIT:
        # No limit lasts longer than a week (research §1.1's limit types): a reset later than
        # that is a skewed clock or a misread, and holding the lock for months is worse than
        # probing again after a week.
        resets_at, approximate = now + LONGEST_LIMIT, True
    if resets_at is None:
        resume = now + UNKNOWN_RESET_BACKOFF + spread(agent_name)
        reason = (
            f"usage limit reached; no reset time was given: deferred until "
            f"{describe(resume)}, when it tries again"
        )
        return Deferral(None, resume, True, reason)
    resume = max(resets_at, now) + MARGIN + spread(agent_name)
    about = "about " if approximate else ""
    reason = (
        f"usage limit reached; it resets at {about}{describe(resets_at)}: deferred until "
        f"{describe(resume)}"
    )
    if approximate:
        reason += " (the CLI named no time zone: read in the agent's)"
    return Deferral(resets_at, resume, approximate, reason)


def pause_account(
    run: Run, account: str, limit_type: str, model: str, deferral: Deferral
) -> AccountPause:
    """Pause the run's account (or its model family, for a weekly per-model limit) until the
    reset plus the margin."""
    fam = LIMIT_FAMILIES.get(limit_type, "")
    until = (deferral.resets_at or deferral.resume_at - spread(run.agent.name)) + MARGIN
    if deferral.resets_at is None:
        until = deferral.resume_at - spread(run.agent.name)
    # A reset already past (a skewed clock, a "just passed" text, the same event read again on
    # a resumed run): the pause still holds the account for the margin, never ends at birth.
    until = max(until, timezone.now() + MARGIN)
    if not AccountPause.objects.filter(
        account=account, family=fam, until__gte=until, lifted_at__isnull=True
    ).exists():
        # Said once per pause (another run of the account limited meanwhile adds nothing).
        what = f"its {fam} models" if fam else "its claude agents"
        Notification.objects.create(
            kind=Notification.Kind.ATTENTION,
            agent=run.agent,
            run=run,
            title=(
                f"Usage limit: run #{run.pk} of {run.agent.name} deferred; {what} on its "
                f"account are paused until {until:%Y-%m-%d %H:%M} UTC"
            )[:300],
            body=deferral.reason[:1000],
        )
    return AccountPause.objects.create(
        account=account,
        family=fam,
        limit_type=limit_type[:32],
        until=until,
        approximate=deferral.approximate,
        reason=deferral.reason[:500],
        run=run,
        agent_name=run.agent.name,
    )


def active_pauses(now: datetime) -> list[AccountPause]:
    """The pauses in force at `now` (not ended, not lifted): usually none."""
    return list(AccountPause.objects.filter(until__gt=now, lifted_at__isnull=True))


def pause_for(
    agent: Any, pauses: list[AccountPause], keys: dict[int, str] | None = None
) -> AccountPause | None:
    """The pause (latest-ending) that holds `agent` among `pauses`, or None. Only claude agents
    are paused; a family pause holds agents whose model is of that family (an agent without a
    model, on the CLI's default, is held when the limited run's agent had none either)."""
    if not pauses or agent.runner != Agent.Runner.CLAUDE:
        return None
    key = keys.get(agent.pk) if keys is not None and agent.pk in keys else None
    if key is None:
        key = account_key(agent)
        if keys is not None:
            keys[agent.pk] = key
    holding = []
    for pause in pauses:
        if pause.account != key:
            continue
        if pause.family:
            mine = family(agent.model)
            if mine and mine != pause.family:
                continue
            if not mine and pause.run_id and _limited_model(pause):
                continue
        holding.append(pause)
    return max(holding, key=lambda p: p.until, default=None)


def _limited_model(pause: AccountPause) -> bool:
    """Whether the run that made a family pause had a model of its own configured."""
    if pause.run_id is None:
        return False
    agent_model = (
        Run.objects.filter(pk=pause.run_id).values_list("agent__model", flat=True).first() or ""
    )
    return bool(agent_model)


def pause_reason(pause: AccountPause) -> str:
    """`usage-limit pause: ...` for a run skipped during a pause."""
    what = f"its {pause.family} models" if pause.family else "its account"
    about = "about " if pause.approximate else ""
    which = f"run #{pause.run_id} of {pause.agent_name}" if pause.run_id else pause.agent_name
    return (
        f"{PAUSE_REASON}: {what} hit {pause.limit_text} ({which}); "
        f"paused until {about}{pause.until:%Y-%m-%d %H:%M} UTC"
    )


def pause_covering(agent: Agent, instant: datetime) -> AccountPause | None:
    """A pause (ended or not, lifted or not) of the agent's account that covered `instant`:
    how the scheduler knows why slots were missed."""
    pauses = list(
        AccountPause.objects.filter(started_at__lte=instant, until__gt=instant).filter(
            Q(lifted_at__isnull=True) | Q(lifted_at__gt=instant)
        )
    )
    return pause_for(agent, pauses)


def wake(now: datetime, engine: Any) -> list[int]:
    """Queue again the deferred runs whose `resume_at` has come (housekeeping task `deferrals`)
    and give them to `engine` (a runs.engines.Engine: passed in, as the executor, which uses
    this module, never reaches the engines): each its next execution. A run whose account was
    limited again meanwhile (a pause ending later) waits for that pause. Returns the run ids
    queued."""
    due = list(
        Run.objects.filter(state=Run.State.DEFERRED, resume_at__lte=now)
        .select_related("agent")
        .order_by("resume_at")[:500]
    )
    if not due:
        return []
    pauses = active_pauses(now)
    keys: dict[int, str] = {}
    woken = []
    spent: dict = {}
    for run in due:
        if not run.agent.enabled:
            # Paused by a person while it waited: it does not start again on its own.
            run.cancel(by="Cronos (the agent was disabled while its run was deferred)")
            continue
        over = costs.budget_refusal(run.agent, now, spent)
        if over is not None:
            # Another execution would spend past a rolling 24-hour cap (DESIGN.md §7.5).
            run.skip(f"{over}; it was deferred by a usage limit", waiting=[Run.State.DEFERRED])
            continue
        pause = pause_for(run.agent, pauses, keys)
        if pause is not None and pause.run_id != run.pk:
            later = pause.until + spread(run.agent.name)
            Run.objects.filter(pk=run.pk, state=Run.State.DEFERRED).update(resume_at=later)
            continue
        if run.wake(f"resumed after the usage limit: execution {run.executions + 1}"):
            woken.append(run.pk)
    if woken:
        engine.enqueue(woken)
        log.info("deferred runs resumed", extra={"run_ids": woken})
    return woken


def require_admin(actor: Actor) -> None:
    """Only admins (and the shell account) lift a pause: PermissionDenied for anyone else."""
    user = actor.user
    if user is not None and not (
        user.is_active and (user.is_superuser or user.groups.filter(name=roles.ADMIN).exists())
    ):
        raise PermissionDenied(f"{actor.username} is not an admin: only admins lift a pause.")


def lift(pause: AccountPause, actor: Actor) -> int:
    """An admin ends a pause early (and every pause in force of the same account and family):
    its agents run again, and the runs it deferred are queued at the next wake-up (within a
    second on the scheduler). Audited. Returns how many deferred runs were brought forward.
    Raises PermissionDenied for anyone but an admin (the shell account may), AlreadyEnded for
    a pause no longer in force (nothing is recorded then)."""
    require_admin(actor)
    now = timezone.now()
    with transaction.atomic():
        pauses = AccountPause.objects.filter(
            account=pause.account, family=pause.family, until__gt=now, lifted_at__isnull=True
        )
        run_ids = list(pauses.exclude(run=None).values_list("run_id", flat=True))
        lifted = pauses.update(lifted_at=now, lifted_by_name=actor.username[:150])
        if not lifted:
            # Ended or lifted already (a second click, a stale page): nothing done, nothing
            # recorded.
            raise AlreadyEnded(
                f"The usage-limit pause of {pause.agent_name}'s account has already "
                + ("been lifted." if pause.lifted_at else "ended.")
            )
        moved = Run.objects.filter(pk__in=run_ids, state=Run.State.DEFERRED).update(resume_at=now)
        record(
            actor,
            "usage_limit.lift",
            pause,
            object_name=f"usage-limit pause of {pause.agent_name}'s account"
            + (f" ({pause.family})" if pause.family else ""),
            changes={"pauses": lifted, "deferred_runs": moved},
            message=f"lifted before {pause.until:%Y-%m-%d %H:%M} UTC",
        )
    log.info("usage-limit pause lifted", extra={"pause": pause.pk, "runs": moved})
    return moved
