"""Reading an agent's repository runs none of the programs the repository names.

Cronos reads the agent's working directory with git before and after each run, as itself (its
database and keys in reach). The directory and its .git/ are the agent's, and git runs programs
that a repository's config names: filters, diff drivers, an external diff, a file-system
monitor, a pager, hooks, gpg, a promisor remote's upload-pack. Each hostile repository here
names one; the program leaves a mark when it runs. First the control: plain git, in that
repository, does run it. Then Cronos reads the repository before and after an agent's work, and
no mark may appear, while the commits and files are still told right.
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from runs.execution import gitinfo
from tests.runs.test_gitinfo import IDENTITY, commit, git, new_repo, subjects

# Stat times far from now and from each other: git then has to hash a file to know whether it
# changed, through the clean filter when one is configured (a changed size would tell it alone).
_STAMPS = itertools.count(1_000_000_000, 1000)


class Programs:
    """Programs a hostile repository names. Each leaves a mark when it runs, except for the
    agent's own git (AGENT set), for which it does what git needs from it."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.marks = root / "marks"
        self.bin.mkdir()
        self.marks.mkdir()

    def named(self, name: str, then: str = "cat") -> str:
        script = self.bin / name
        mark = shlex.quote(str(self.marks / name))
        script.write_text(f'#!/bin/sh\n[ -n "$AGENT" ] || touch {mark}\n{then}\n')
        script.chmod(0o755)
        return str(script)

    def ran(self) -> list[str]:
        return sorted(mark.name for mark in self.marks.iterdir())

    def forget(self) -> None:
        for mark in self.marks.iterdir():
            mark.unlink()


@pytest.fixture
def programs(tmp_path):
    return Programs(tmp_path)


def as_agent(repo: Path, *args: str) -> None:
    """The agent's own git: the repository's programs may run for it (it is the agent's)."""
    git(repo, *args, env={"AGENT": "1"})


def hostile_history(repo: Path) -> Path:
    """A repository whose committed .gitattributes names drivers that its config (set by each
    test) defines: a.txt changed in its second commit."""
    new_repo(repo)
    (repo / ".gitattributes").write_text("*.txt filter=evil diff=evil\n*.md filter=proc diff=cmd\n")
    (repo / "b.md").write_text("bee\n")
    git(repo, "add", ".gitattributes", "b.md")
    commit(repo, "a.txt", "one\n", "one")
    commit(repo, "a.txt", "two\n", "two")
    return repo


def stat_dirty(repo: Path) -> None:
    """Tracked files whose content is unchanged but whose stat is not what the index has."""
    for name in ("a.txt", "b.md"):
        stamp = next(_STAMPS)
        os.utime(repo / name, (stamp, stamp))


def config(repo: Path, key: str, value: str, *where: str) -> None:
    git(repo, "config", *where, key, value)


def on_a_terminal(repo: Path, *args: str) -> None:
    """git with its output on a terminal (where it starts a pager)."""
    main, terminal = os.openpty()
    try:
        subprocess.run(
            ["git", *args],
            cwd=repo,
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
            env={**os.environ, "TERM": "dumb"},
            timeout=30,
        )
    finally:
        os.close(terminal)
        os.close(main)


# --- the hostile repositories ----------------------------------------------------------------


def clean_filter(repo: Path, programs: Programs) -> None:
    config(repo, "filter.evil.clean", programs.named("clean"))


def clean_filter_of_info_attributes(repo: Path, programs: Programs) -> None:
    (repo / ".git" / "info" / "attributes").write_text("*.txt filter=other\n")
    config(repo, "filter.other.clean", programs.named("clean-info"))


def process_filter(repo: Path, programs: Programs) -> None:
    config(repo, "filter.proc.process", programs.named("process", then="exit 1"))


def smudge_filter(repo: Path, programs: Programs) -> None:
    config(repo, "filter.evil.smudge", programs.named("smudge"))


def textconv(repo: Path, programs: Programs) -> None:
    config(repo, "diff.evil.textconv", programs.named("textconv", then='cat "$1"'))


def diff_driver_command(repo: Path, programs: Programs) -> None:
    config(repo, "diff.cmd.command", programs.named("diff-command", then="exit 0"))


def external_diff(repo: Path, programs: Programs) -> None:
    config(repo, "diff.external", programs.named("external-diff", then="exit 0"))


def fsmonitor(repo: Path, programs: Programs) -> None:
    config(repo, "core.fsmonitor", programs.named("fsmonitor", then="exit 1"))


def pager(repo: Path, programs: Programs) -> None:
    config(repo, "core.pager", programs.named("pager"))
    config(repo, "pager.log", programs.named("pager"))
    config(repo, "pager.status", programs.named("pager"))


def hooks(repo: Path, programs: Programs) -> None:
    hooks = repo.parent / "hooks"
    hooks.mkdir()
    for hook in ("post-index-change", "reference-transaction", "post-checkout"):
        Path(programs.named(f"hook-{hook}", then="exit 0")).rename(hooks / hook)
    config(repo, "core.hooksPath", str(hooks))


def signature(repo: Path, programs: Programs) -> None:
    """A signed commit (its signature made up), and gpg run to show signatures in logs."""
    signed = git(repo, "cat-file", "commit", "HEAD").replace(
        "\n\n",
        "\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n made up\n -----END PGP SIGNATURE-----\n\n",
        1,
    )
    sha = subprocess.run(
        ["git", "hash-object", "-t", "commit", "-w", "--stdin"],
        cwd=repo,
        input=signed,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    git(repo, "update-ref", "HEAD", sha)
    config(repo, "log.showSignature", "true")
    config(repo, "gpg.program", programs.named("gpg", then="exit 1"))


def included_config(repo: Path, programs: Programs) -> None:
    included = repo.parent / "included.cfg"
    included.write_text(f'[filter "evil"]\n\tclean = {programs.named("included")}\n')
    config(repo, "include.path", str(included))


def conditionally_included_config(repo: Path, programs: Programs) -> None:
    included = repo.parent / "included-if.cfg"
    included.write_text(f'[filter "evil"]\n\tclean = {programs.named("included-if")}\n')
    config(repo, f"includeIf.gitdir:{repo}/.path", str(included))


def worktree_config(repo: Path, programs: Programs) -> None:
    config(repo, "core.repositoryFormatVersion", "1")
    config(repo, "extensions.worktreeConfig", "true")
    config(repo, "filter.evil.clean", programs.named("worktree-config"), "--worktree")


def lazy_fetch(repo: Path, programs: Programs) -> None:
    """A partial clone missing a blob: git fetches it from the promisor remote, starting the
    upload-pack the remote names."""
    remote = repo.parent / "promisor.git"
    git(repo.parent, "init", "-q", "--bare", str(remote))
    blob = git(repo, "rev-parse", "HEAD~1:a.txt").strip()
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    config(repo, "core.repositoryFormatVersion", "1")
    config(repo, "extensions.partialClone", "origin")
    config(repo, "remote.origin.url", str(remote))
    config(repo, "remote.origin.promisor", "true")
    config(repo, "remote.origin.uploadpack", programs.named("upload-pack", then="exit 1"))


@dataclass(frozen=True)
class Member:
    setup: Callable[[Path, Programs], None]
    mark: str
    control: tuple[str, ...]  # the plain git command that runs the program
    # The amended commit is taken for new work when its patch cannot be read (a missing blob).
    rewrite_told: bool = True


MEMBERS = [
    Member(clean_filter, "clean", ("status",)),
    Member(clean_filter_of_info_attributes, "clean-info", ("status",)),
    Member(process_filter, "process", ("status",)),
    Member(smudge_filter, "smudge", ("cat-file", "--filters", "HEAD:a.txt")),
    Member(textconv, "textconv", ("log", "-p")),
    Member(diff_driver_command, "diff-command", ("log", "-p", "--ext-diff")),
    Member(external_diff, "external-diff", ("diff", "HEAD~1", "HEAD")),
    Member(fsmonitor, "fsmonitor", ("status",)),
    Member(pager, "pager", ("log", "-1")),
    Member(hooks, "hook-post-index-change", ("status",)),
    Member(signature, "gpg", ("log", "-1")),
    Member(included_config, "included", ("status",)),
    Member(conditionally_included_config, "included-if", ("status",)),
    Member(worktree_config, "worktree-config", ("status",)),
    Member(lazy_fetch, "upload-pack", ("log", "-p"), rewrite_told=False),
]

# The agent's work: it amends the last commit (a rewrite, not new work), makes a commit on a
# branch, merges it with a change of its own, commits, and edits a tracked file.
AGENT_WORK = (
    'git commit -q --amend -m "$(git log -1 --format=%s), better said" && '
    "git checkout -qb side && echo side > side.txt && git add side.txt && git commit -qm side && "
    "git checkout -q main && git merge -q --no-ff --no-commit side && "
    "echo merged > merged.txt && git add merged.txt && git commit -qm merge && "
    "echo mine > c.txt && git add c.txt && git commit -qm mine && "
    "printf 'edit\\n' > a.txt"  # the size of "two\n": only its content tells
)


# The programs do what the agent's git needs from them, but for the process filter (which
# speaks a protocol): the agent's git does without that one.
AGENT_ENV = {
    "AGENT": "1",
    **{
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "filter.proc.process",
        "GIT_CONFIG_VALUE_0": "",
    },
}


def run_control(repo: Path, member: Member) -> None:
    if member.setup is pager:
        on_a_terminal(repo, *member.control)
    else:
        subprocess.run(["git", *member.control], cwd=repo, capture_output=True, timeout=30)


@pytest.mark.parametrize("member", MEMBERS, ids=lambda member: member.setup.__name__)
def test_no_program_the_repository_names_runs_when_cronos_reads_it(tmp_path, programs, member):
    repo = hostile_history(tmp_path / "repo")
    member.setup(repo, programs)
    stat_dirty(repo)
    run_control(repo, member)
    assert member.mark in programs.ran()  # the control: plain git runs it here
    programs.forget()
    stat_dirty(repo)
    head = git(repo, "rev-parse", "HEAD").strip()

    before = gitinfo.snapshot(str(repo))
    assert programs.ran() == []
    assert before is not None
    assert before.head == head and before.refs == {"refs/heads/main": head}
    assert before.dirty == {}  # the stat changed, the content did not

    subprocess.run(
        AGENT_WORK, shell=True, cwd=repo, check=True, capture_output=True,
        env={**os.environ, **IDENTITY, **AGENT_ENV},
    )  # fmt: skip
    stat_dirty(repo)
    commits, files = gitinfo.changes(str(repo), before)
    assert programs.ran() == []
    expected = ["merge", "mine", "side"]
    if not member.rewrite_told:
        expected.append("two, better said")
    assert sorted(subjects(commits)) == expected
    assert sorted(files) == ["a.txt", "c.txt", "merged.txt", "side.txt"]


def test_the_global_config_runs_nothing_and_traces_nowhere(tmp_path, programs, monkeypatch):
    # Without a user of its own, an agent shares Cronos's HOME: its ~/.gitconfig is the agent's.
    repo = hostile_history(tmp_path / "repo")
    home = tmp_path / "home"
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".gitconfig").write_text(
        f'[filter "evil"]\n\tclean = {programs.named("global-clean")}\n'
        f"[trace2]\n\teventTarget = {programs.marks / 'trace2'}\n"
    )
    (home / ".config" / "git" / "config").write_text(
        f"[core]\n\tfsmonitor = {programs.named('xdg-fsmonitor', then='exit 1')}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    stat_dirty(repo)
    subprocess.run(["git", "status"], cwd=repo, capture_output=True)
    assert programs.ran() == ["global-clean", "trace2", "xdg-fsmonitor"]
    programs.forget()
    stat_dirty(repo)

    before = gitinfo.snapshot(str(repo))
    assert before is not None and before.dirty == {}
    (repo / "a.txt").write_text("edit\n")
    stat_dirty(repo)
    assert gitinfo.changes(str(repo), before) == ([], ["a.txt"])
    assert programs.ran() == []


def test_a_driver_added_while_cronos_reads_the_repository_does_not_run(
    tmp_path, programs, monkeypatch
):
    # Another run in the same directory may change its config between two git commands.
    repo = hostile_history(tmp_path / "repo")
    run = gitinfo._run

    def config_changes_after_it_is_read(cwd, env, args, stdin):
        out = run(cwd, env, args, stdin)
        if args[0] == "config":
            config(repo, "filter.evil.clean", programs.named("clean-added"))
        return out

    monkeypatch.setattr(gitinfo, "_run", config_changes_after_it_is_read)
    stat_dirty(repo)
    before = gitinfo.snapshot(str(repo))
    assert before is not None and before.dirty == {}
    stat_dirty(repo)
    assert gitinfo.changes(str(repo), before) == ([], [])
    assert programs.ran() == []
    subprocess.run(["git", "status"], cwd=repo, capture_output=True)
    assert programs.ran() == ["clean-added"]  # the control: it was there for git to run


def test_a_submodules_config_runs_nothing_and_its_new_commit_is_a_change(tmp_path, programs):
    source = new_repo(tmp_path / "source")
    commit(source, "s.txt", "s\n", "sub")
    repo = hostile_history(tmp_path / "repo")
    as_agent(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(source), "sub")
    as_agent(repo, "commit", "-qm", "add sub")
    sub = repo / "sub"
    sub_git_dir = repo / ".git" / "modules" / "sub"
    (sub_git_dir / "info").mkdir(exist_ok=True)
    (sub_git_dir / "info" / "attributes").write_text("*.txt filter=evil\n")
    git(sub, "config", "filter.evil.clean", programs.named("submodule-clean"))
    os.utime(sub / "s.txt", (next(_STAMPS),) * 2)
    subprocess.run(["git", "status"], cwd=repo, capture_output=True)
    assert programs.ran() == ["submodule-clean"]  # plain git status enters the submodule
    programs.forget()
    os.utime(sub / "s.txt", (next(_STAMPS),) * 2)

    before = gitinfo.snapshot(str(repo))
    assert before is not None and before.dirty == {}
    (sub / "t.txt").write_text("t\n")
    as_agent(sub, "add", "t.txt")
    as_agent(sub, "commit", "-qm", "in the submodule")
    os.utime(sub / "s.txt", (next(_STAMPS),) * 2)
    assert gitinfo.changes(str(repo), before) == ([], ["sub"])
    assert programs.ran() == []


# --- what git still sees: the repository's own shape and its harmless settings -----------------


def test_a_linked_worktree_is_read_with_its_own_head_and_index(tmp_path):
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a\n", "first")
    git(repo, "worktree", "add", "-q", "-b", "topic", str(tmp_path / "topic"))
    topic = tmp_path / "topic"
    before = gitinfo.snapshot(str(topic))
    assert before is not None and before.toplevel == os.path.realpath(topic)
    assert set(before.refs) == {"refs/heads/main", "refs/heads/topic"}
    commit(topic, "t.txt", "t\n", "on the topic")
    (topic / "a.txt").write_text("edited\n")
    (repo / "main-only.txt").write_text("not in this worktree\n")
    commits, files = gitinfo.changes(str(topic), before)
    assert subjects(commits) == ["on the topic"]
    assert sorted(files) == ["a.txt", "t.txt"]


def test_a_sha256_repository_is_read(tmp_path):
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", "--object-format=sha256", str(repo))
    commit(repo, "a.txt", "a\n", "first")
    before = gitinfo.snapshot(str(repo))
    assert before is not None and before.head is not None and len(before.head) == 64
    commits, files = gitinfo.changes(str(repo), before)
    assert (commits, files) == ([], [])
    commit(repo, "b.txt", "b\n", "second")
    assert subjects(gitinfo.changes(str(repo), before)[0]) == ["second"]


def test_objects_borrowed_through_relative_alternates_are_found(tmp_path):
    lender = new_repo(tmp_path / "lender")
    commit(lender, "a.txt", "a\n", "lent")
    repo = new_repo(tmp_path / "repo")
    alternates = repo / ".git" / "objects" / "info" / "alternates"
    alternates.write_text("../../../lender/.git/objects\n")  # from repo/.git/objects
    git(repo, "update-ref", "refs/heads/main", git(lender, "rev-parse", "HEAD").strip())
    git(repo, "reset", "-q", "--hard")
    before = gitinfo.snapshot(str(repo))
    assert before is not None and before.dirty == {}
    commit(repo, "b.txt", "b\n", "mine")
    assert gitinfo.changes(str(repo), before) == (
        [{"sha": git(repo, "rev-parse", "HEAD").strip(), "subject": "mine",
          "author": "Ada Agent <ada@example.com>"}],
        ["b.txt"],
    )  # fmt: skip


def test_the_repositorys_own_ignore_file_and_file_mode_setting_still_apply(tmp_path):
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a\n", "first")
    (repo / ".git" / "ignored-here").write_text("*.log\n")
    config(repo, "core.excludesFile", str(repo / ".git" / "ignored-here"))
    config(repo, "core.fileMode", "false")
    before = gitinfo.snapshot(str(repo))
    assert before is not None and before.dirty == {}
    (repo / "run.log").write_text("ignored\n")
    (repo / "a.txt").chmod(0o755)  # not a change where file modes are not tracked
    (repo / "new.txt").write_text("new\n")
    assert gitinfo.changes(str(repo), before) == ([], ["new.txt"])
    config(repo, "core.fileMode", "true")
    assert gitinfo.changes(str(repo), before) == ([], ["a.txt", "new.txt"])


# --- reading nothing but the agent's directory, and never waiting on it ---------------------------


def test_a_working_tree_named_elsewhere_is_not_read(tmp_path):
    # core.worktree can name any folder, Cronos's own among them: its files are not the run's.
    elsewhere = tmp_path / "cronos-data"
    elsewhere.mkdir()
    (elsewhere / "secret_keys").write_text("not the agent's\n")
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a\n", "first")
    config(repo, "core.worktree", str(elsewhere))
    assert "secret_keys" in git(repo, "status", "--porcelain")  # the control: git reads it
    assert gitinfo.snapshot(str(repo)) is None


def test_a_fifo_in_place_of_fetch_head_is_not_waited_on(tmp_path):
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a\n", "first")
    before = gitinfo.snapshot(str(repo))
    sha = commit(repo, "b.txt", "b\n", "second")  # new commits: where they came from is read
    os.mkfifo(repo / ".git" / "FETCH_HEAD")
    result: list = []
    reading = threading.Thread(
        target=lambda: result.append(gitinfo.changes(str(repo), before)), daemon=True
    )
    reading.start()
    reading.join(timeout=30)
    if reading.is_alive():  # let it go: a writer ends the wait
        with open(repo / ".git" / "FETCH_HEAD", "w"):
            pass
    assert result == [
        ([{"sha": sha, "subject": "second", "author": "Ada Agent <ada@example.com>"}], ["b.txt"])
    ]


def test_the_config_git_reads_is_kept_where_no_agent_can_write_it(tmp_path, monkeypatch, settings):
    # An agent of Cronos's user id (another run's) could rewrite it in /tmp before git reads it.
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a\n", "first")
    common_dirs = []
    run = gitinfo._run

    def seen(cwd, env, args, stdin):
        if "GIT_COMMON_DIR" in env:
            common_dirs.append(Path(env["GIT_COMMON_DIR"]))
            assert (Path(env["GIT_COMMON_DIR"]) / "config").read_text().startswith("[core]")
        return run(cwd, env, args, stdin)

    monkeypatch.setattr(gitinfo, "_run", seen)
    assert gitinfo.snapshot(str(repo)) is not None
    assert common_dirs and all(Path(settings.DATA_DIR) in path.parents for path in common_dirs)
    assert not any(path.exists() for path in common_dirs)  # removed once read
