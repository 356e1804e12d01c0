"""The demo agents `make run` creates, and the git repository they work on.

They run without any external CLI: cron-git commits pending changes with plain git, so a
newcomer sees real runs at once. The claude-runner example is created disabled.
"""

from __future__ import annotations

import shutil
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


# Where earlier versions made the demo repository: inside the data folder, which agents no
# longer see (DESIGN.md §4 "Isolation from Cronos").
OLD_DEMO_REPOSITORY = "demo-repo"


def demo_repository() -> Path:
    """A small git repository with one uncommitted note, made once under CRONOS_WORK_DIR (the
    agents' own folder, outside Cronos's data)."""
    repo = settings.CRONOS_WORK_DIR / "demo-repository"
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


def move_old_demo_repository(actor: Actor) -> list[str]:
    """Move a demo repository that an earlier version made under the data folder to the work
    directory, and point the agents that work in it (or below it) there: each gets a new
    version, audited as `actor`'s. Returns their names; nothing is deleted (an existing new
    repository is kept, and the old one then stays where it is)."""
    old = settings.DATA_DIR / OLD_DEMO_REPOSITORY
    if not old.is_dir():
        return []
    new = settings.CRONOS_WORK_DIR / "demo-repository"
    if not new.exists():
        new.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(old, new)
    moved = []
    for agent in Agent.objects.filter(working_dir__startswith=str(old)).order_by("name"):
        rest = agent.working_dir[len(str(old)) :]
        if rest and not rest.startswith("/"):
            continue  # demo-repo-other: another folder
        agent.working_dir = f"{new}{rest}"
        save_agent(agent, actor, reason="The demo repository moved out of Cronos's data folder")
        moved.append(agent.name)
    return moved


def create_demo_agents(actor: Actor) -> list[str]:
    """Create the demo agents that do not exist yet; returns the names created."""
    created = []
    for agent in demo_agents(demo_repository()):
        if not Agent.objects.filter(name=agent.name).exists():
            save_agent(agent, actor, reason="Demo agent")
            created.append(agent.name)
    return created
