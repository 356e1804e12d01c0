"""The demo agents `make run` creates, and the git repository they work on.

They run without any external CLI: cron-git commits pending changes with plain git, so a
newcomer sees real runs at once. The claude-runner example is created disabled.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from django.conf import settings

from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor

CRON_GIT_COMMAND = (
    "git add -A && if git diff --cached --quiet; then echo 'no changes'; "
    'else git commit -q -m "cron-git: commit pending changes" && git log --oneline -1 '
    "&& git show --stat --format= HEAD; fi"
)

CRON_GIT_PROMPT = """\
# cron-git

You look after the git repository in the current directory.

1. Run `git status --porcelain`. If it prints nothing, answer "no changes" and stop.
2. Otherwise stage every change and make one commit whose message summarises what changed,
   in the imperative mood, at most 72 characters on the first line.
3. Never push, never amend, never rewrite history, never touch files outside this directory.
"""


def demo_repository() -> Path:
    """A small git repository with one uncommitted note, made once under the data directory."""
    repo = settings.DATA_DIR / "demo-repo"
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git = ["git", "-C", str(repo)]
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "config", "user.name", "Cronos demo"], check=True)
        subprocess.run([*git, "config", "user.email", "demo@cronos.invalid"], check=True)
        (repo / "README.md").write_text("# Demo notes\n\nCronos's cron-git agent commits here.\n")
        subprocess.run([*git, "add", "README.md"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "Start the demo notes"], check=True)
        (repo / "notes.md").write_text("- an uncommitted note for cron-git to commit\n")
    return repo


def demo_agents(repo: Path) -> list[Agent]:
    return [
        Agent(
            name="cron-git",
            description="Commit pending changes in the demo repository every 4 hours",
            runner=Agent.Runner.COMMAND,
            command=CRON_GIT_COMMAND,
            working_dir=str(repo),
            schedule="0 */4 * * *",
            timeout_seconds=300,
        ),
        Agent(
            name="disk-report",
            description="Report disk use of the demo repository every morning",
            runner=Agent.Runner.COMMAND,
            command='echo "${GREETING} from ${CRONOS_AGENT}"; du -sh . ; df -h .',
            working_dir=str(repo),
            schedule="30 7 * * *",
            variables=[{"name": "GREETING", "value": "Good morning"}],
        ),
        Agent(
            name="cron-git-claude",
            description="The same job done by Claude Code (needs the claude CLI; disabled)",
            enabled=False,
            runner=Agent.Runner.CLAUDE,
            prompt=CRON_GIT_PROMPT,
            working_dir=str(repo),
            schedule="0 0 */4 * * *",  # the prototype's seconds-first form
            model="claude-sonnet-4-5",
            max_turns=8,
            timeout_seconds=900,
            allowed_tools=["Bash(git:*)", "Read", "Glob"],
            disallowed_tools=["WebFetch", "WebSearch"],
            permission_mode=Agent.PermissionMode.ACCEPT_EDITS,
        ),
    ]


def create_demo_agents(actor: Actor) -> list[str]:
    """Create the demo agents that do not exist yet; returns the names created."""
    created = []
    for agent in demo_agents(demo_repository()):
        if not Agent.objects.filter(name=agent.name).exists():
            save_agent(agent, actor, reason="Demo agent")
            created.append(agent.name)
    return created
