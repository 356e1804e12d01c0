"""What a webhook's delivery gives the run it started (DESIGN.md §7.7).

The payload is data from outside, possibly hostile: it reaches the agent as a file
(`$CRONOS_RUN_DIR/webhook.json`, the raw bytes received) or in one variable
(`CRONOS_WEBHOOK_PAYLOAD`, its first 64 KiB as text), as the trigger says — never through a
shell (the launcher passes an environment, not a command line) and never substituted into a
prompt. A claude agent is told where the file is in a delimited, labelled note (runners:
`with_untrusted_note`), so that the model reads it as data.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from runs.models import Delivery, Run

FILE_NAME = "webhook.json"
ENV_NAME = "CRONOS_WEBHOOK_PAYLOAD"
ENV_MAX_BYTES = 64 * 1024


def deliver(run: Run, run_dir: Path, environment: dict[str, str], agent_user=None) -> str:
    """Put the payload of the delivery that started `run` where its trigger says: written to
    the run's folder (0600, the agent user's), or added to `environment`. Returns the note for
    a claude agent ("" when there is nothing to tell). Raises OSError when the file cannot be
    written."""
    detail = run.trigger_detail or {}
    delivery_pk = detail.get("delivery")
    mode = detail.get("payload", "none")
    if not delivery_pk or mode not in ("file", "env"):
        return ""
    body = Delivery.objects.filter(pk=delivery_pk).values_list("body", flat=True).first()
    if body is None:
        return ""
    body = bytes(body)
    if mode == "env":
        text = body[:ENV_MAX_BYTES].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        environment[ENV_NAME] = text
        return (
            f"The variable {ENV_NAME} holds the payload of the webhook delivery that started "
            "this run."
        )
    path = run_dir / FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(body)
    if agent_user is not None:
        os.chown(path, agent_user.uid, agent_user.gid)
    return f"The file {path} holds the payload of the webhook delivery that started this run."


def git_facts(run: Run) -> dict[str, str]:
    """CRONOS_GIT_REF and CRONOS_GIT_SHA for a run started by a git hook."""
    if run.trigger != Run.Trigger.GIT and not (run.trigger_detail or {}).get("sha"):
        return {}
    detail = run.trigger_detail or {}
    facts = {}
    if isinstance(detail.get("ref"), str):
        facts["CRONOS_GIT_REF"] = detail["ref"]
    if isinstance(detail.get("sha"), str):
        facts["CRONOS_GIT_SHA"] = detail["sha"]
    return facts


def remove(run_dir: Path) -> None:
    """The payload file goes with the run (the delivery log keeps the body)."""
    with contextlib.suppress(OSError):
        (run_dir / FILE_NAME).unlink()
