"""The agents pages in real Chromium: what only a browser can show (HTMX swaps, the URL kept
in step with a search, the cron builder's grids, a run's state arriving on the agent page)."""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import AgentRunState, Run
from tests.browser.conftest import with_real_password
from tests.factories import make_agent
from tests.processes import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ROOT / "docs" / "screenshots"


def test_a_person_logs_in_and_lands_on_the_agents_page(web, browser_page, viewer, settings):
    with_real_password(viewer, settings)
    page = browser_page(None)
    page.goto(f"{web}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    page.fill("#id_username", "vera")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("do not match")
    page.fill("#id_username", "vera")
    page.fill("#id_password", "correct horse battery")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{web}/")
    assert AuditEntry.objects.filter(action="login", actor_username="vera", source="web").exists()
    expect(page.locator("h1")).to_have_text("Agents")
    expect(page.locator(".who .user")).to_have_text("vera")
    expect(page.locator(".who .roles")).to_have_text("viewer")
    page.click("text=Log out")
    expect(page).to_have_url(f"{web}/login/")


def test_create_an_agent_from_a_template_build_its_schedule_by_clicking_and_run_it(
    web, browser_page, editor, operator, cluster, tmp_path
):
    work, backups = tmp_path / "work", tmp_path / "backups"
    work.mkdir()
    (work / "notes.txt").write_text("remember the milk\n")
    page = browser_page(editor)
    page.click("text=New agent")
    page.click("text=Nightly backup archive")
    expect(page.locator("h1")).to_contain_text("step 2 of 2")
    page.fill("#id_name", "photos-backup")
    page.fill("#id_working_dir", str(work))
    expect(page.locator("#id_plain_variables")).to_have_value("BACKUP_DIR=/var/backups/cronos")
    page.fill("#id_plain_variables", f"BACKUP_DIR={backups}")
    schedule = page.locator("#id_schedule")
    expect(schedule).to_have_value("30 2 * * *")
    preview = page.locator("#cron-preview")
    expect(preview).to_contain_text("At 02:30")

    page.click("#cron-grid summary")
    grid = page.locator("#cron-grid")
    grid.locator(".grid-minute .cell", has_text=re.compile(r"^30$")).click()  # untick 30
    grid.locator(".grid-minute .cell", has_text=re.compile(r"^15$")).click()
    grid.locator(".grid-hour .cell", has_text=re.compile(r"^02$")).click()  # untick 2
    grid.locator(".grid-hour .cell", has_text=re.compile(r"^06$")).click()
    grid.locator(".grid-hour .cell", has_text=re.compile(r"^18$")).click()
    grid.locator(".grid-weekday .cell", has_text="Mon").click()
    grid.locator(".grid-weekday .cell", has_text="Fri").click()
    expect(schedule).to_have_value("15 6,18 * * 1,5")
    expect(preview.locator(".cron-expression")).to_have_text("15 6,18 * * 1,5")
    expect(preview.locator(".cron-words")).to_contain_text("At 06:15 and 18:15")
    expect(preview.locator(".cron-words")).to_contain_text("Monday and Friday")
    expect(preview.locator(".cron-runs li")).to_have_count(5)
    expect(preview.locator(".cron-runs li").first).to_contain_text(re.compile(r"(Mon|Fri) .* UTC"))

    # Typing works too, and the grid follows what was typed.
    schedule.fill("0 */4 * * *")
    expect(preview.locator(".cron-words")).to_contain_text("Every 4 hours")
    expect(grid.locator("select[name=b_hour_step]")).to_have_value("4")
    schedule.fill("0 61 * * *")
    expect(preview.locator(".cron-error")).to_contain_text("out of range")
    schedule.fill("15 6,18 * * 1,5")
    expect(preview.locator(".cron-words")).to_contain_text("Monday and Friday")

    page.click("text=Create agent (disabled)")
    expect(page).to_have_url(f"{web}/agents/photos-backup/")
    expect(page.locator(".messages")).to_contain_text("It is disabled")
    expect(page.locator("h1 .badge")).to_have_text("paused")
    agent = Agent.objects.get(name="photos-backup")
    assert agent.schedule == "15 6,18 * * 1,5" and agent.enabled is False
    assert agent.working_dir == str(work) and agent.history.count() == 1

    # An operator runs it now; the run appears with its state, which moves on by itself.
    page = browser_page(operator)
    page.goto(f"{web}/agents/photos-backup/")
    expect(page.locator("#agent-runs")).to_contain_text("No runs yet.")
    page.click("button:has-text('Run now')")
    expect(page.locator(".messages")).to_contain_text("Started run #")
    run = Run.objects.get(agent=agent)
    row = page.locator(f"#agent-runs tr[data-run='{run.pk}']")
    expect(row).to_be_visible()
    expect(row.locator("a")).to_have_attribute("href", f"/runs/{run.pk}/")
    expect(row.locator("td", has_text="otto")).to_be_visible()
    # The status part polls while the run is active: the final state arrives on its own.
    expect(row.locator(".state")).to_have_text("Succeeded", timeout=30_000)
    expect(row.locator(".state")).to_have_class(re.compile("state-succeeded"))
    expect(page.locator(".lock-line")).to_contain_text("No run is active.")
    assert len(list(backups.glob("backup-*.tar.gz"))) == 1


def test_run_now_while_a_run_is_active_is_skipped_with_the_reason(web, browser_page, operator):
    agent = make_agent("busy")
    lock = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL, state=Run.State.RUNNING)
    page = browser_page(operator)
    page.goto(f"{web}/agents/busy/")
    expect(page.locator(".lock-line")).to_contain_text(f"run #{lock.pk} running")
    page.click("button:has-text('Run now')")
    expect(page.locator(".messages")).to_contain_text(
        f"was skipped: overlap: run #{lock.pk} is still running"
    )
    page.check("input[name=force]")
    page.click("button:has-text('Run now')")
    expect(page.locator(".messages")).to_contain_text("past the overlap gate")
    page.click(f"button:has-text('Cancel run #{lock.pk}')")
    expect(page.locator(".messages")).to_contain_text(f"Asked run #{lock.pk} to stop")


def test_bulk_disable_agents_from_the_agents_page(web, browser_page, operator):
    for name in ("alpha", "bravo", "charlie"):
        make_agent(name)
    page = browser_page(operator)
    page.check("input[aria-label='Select alpha']")
    page.check("input[aria-label='Select charlie']")
    expect(page.locator("[data-selected-count]")).to_have_text("2 selected")
    page.click("#bulk-form button[value=disable]")
    expect(page.locator(".messages")).to_contain_text("Paused 2 agents: alpha, charlie.")
    expect(page.locator("tr[data-agent=alpha] .badge")).to_have_text("paused")
    expect(page.locator("tr[data-agent=bravo] .badge")).to_have_text("enabled")
    expect(page.locator("tr[data-agent=charlie] .badge")).to_have_text("paused")
    assert list(Agent.objects.filter(enabled=False).values_list("name", flat=True)) == [
        "alpha",
        "charlie",
    ]
    # Select all, then enable them all again.
    page.check("[data-select-all]")
    expect(page.locator("[data-selected-count]")).to_have_text("3 selected")
    page.click("#bulk-form button[value=enable]")
    expect(page.locator(".messages")).to_contain_text("Enabled 2 agents")
    assert Agent.objects.filter(enabled=True).count() == 3


def test_roll_back_a_version_from_the_agent_page(web, browser_page, editor):
    agent = make_agent("writer", description="the first words", prompt="one\ntwo\n")
    agent.description = "the second words"
    agent.prompt = "one\n2\n"
    save_agent(agent, Actor.system())
    page = browser_page(editor)
    page.goto(f"{web}/agents/writer/")
    expect(page.locator(".lead")).to_have_text("the second words")
    # Compare the two versions in place first.
    page.click("button:has-text('Compare versions')")
    diff = page.locator("#version-diff")
    expect(diff.locator("tr[data-field=prompt] li.removed")).to_have_text("two")
    expect(diff.locator("tr[data-field=prompt] li.added")).to_have_text("2")
    page.click("#versions a:has-text('Roll back to version 1')")
    expect(page.locator("h1")).to_have_text("Roll writer back to version 1?")
    page.click("button:has-text('Roll back to version 1')")
    expect(page).to_have_url(f"{web}/agents/writer/")
    expect(page.locator(".messages")).to_contain_text(
        "Rolled writer back to version 1: now version 3."
    )
    expect(page.locator(".lead")).to_have_text("the first words")
    expect(page.locator("#versions tr.version")).to_have_count(3)
    agent.refresh_from_db()
    assert agent.description == "the first words" and agent.prompt == "one\ntwo\n"


def test_search_as_you_type_updates_the_list_and_the_url(web, browser_page, viewer):
    make_agent("photo-backup", description="copies photos")
    make_agent("reports", description="writes the weekly report")
    make_agent("cleaner", description="removes old photos")
    page = browser_page(viewer)
    expect(page.locator("tr.agent-row")).to_have_count(3)
    document = page.evaluate("() => (window.__marker = 'same document')")
    page.locator("input[type=search]").press_sequentially("photo", delay=30)
    expect(page.locator("tr.agent-row")).to_have_count(2)
    expect(page).to_have_url(f"{web}/?q=photo")
    assert page.evaluate("() => window.__marker") == document  # swapped, not reloaded
    page.select_option("select[name=state]", "enabled")
    expect(page).to_have_url(f"{web}/?q=photo&state=enabled")
    page.locator("input[type=search]").fill("report")
    expect(page.locator("tr.agent-row")).to_have_count(1)
    expect(page.locator("tr.agent-row")).to_have_attribute("data-agent", "reports")
    expect(page).to_have_url(f"{web}/?q=report&state=enabled")
    # The URL is a bookmark: opened afresh it shows the same list.
    page.goto(f"{web}/?q=photo")
    expect(page.locator("input[type=search]")).to_have_value("photo")
    expect(page.locator("tr.agent-row")).to_have_count(2)


def test_screenshots_of_the_agents_page_the_agent_page_and_the_cron_builder(
    web, browser_page, admin_user, tmp_path
):
    """Pages render in a real browser; with CRONOS_SCREENSHOTS=1 the README's images are
    written to docs/screenshots/."""
    now = timezone.now()
    demo = [
        ("cron-git", "Commit pending changes in the notes repository", "0 */4 * * *", 0.9),
        ("disk-report", "Print disk use every morning", "30 7 * * *", 1.0),
        ("cron-git-claude", "The same job done by Claude Code", "0 0 */4 * * *", 0.6),
        ("nightly-tests", "Run the test suite of the project", "0 1 * * 1-5", 0.75),
        ("weekly-report", "Summarise the week's commits", "30 8 * * 1", 1.0),
    ]
    for index, (name, description, schedule, rate) in enumerate(demo):
        agent = make_agent(
            name,
            description=description,
            schedule=schedule,
            timezone="Europe/Paris",
            working_dir=str(tmp_path),
            enabled=index != 2,
        )
        for n in range(20):
            ok = (n * 7 + index) % 20 < rate * 20
            started = now - timedelta(hours=4 * (20 - n))
            run = Run.objects.create(
                agent=agent,
                trigger=Run.Trigger.SCHEDULE,
                state=Run.State.SUCCEEDED if ok else Run.State.FAILED,
                created_at=started,
                started_at=started,
                finished_at=started + timedelta(seconds=12 + n),
                reason="" if ok else "exit code 1",
            )
            AgentRunState.note_finished(run)
        if index == 0:
            Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL, state=Run.State.RUNNING)
    agent = Agent.objects.get(name="cron-git")
    agent.prompt = "Commit whatever changed.\nNever push."
    save_agent(agent, Actor.system())

    page = browser_page(admin_user)
    shots = tmp_path / "shots"
    shots.mkdir()
    expect(page.locator("tr.agent-row")).to_have_count(5)
    page.screenshot(path=str(shots / "agents.png"), full_page=True)
    page.goto(f"{web}/agents/cron-git/")
    expect(page.locator("#agent-runs tr.run")).to_have_count(20)
    page.screenshot(path=str(shots / "agent.png"), full_page=False)
    page.goto(
        f"{web}/cron/?schedule=30+2+*+*+*&timezone=Europe/Paris&after=2026-03-27T12:00:00%2B01:00"
    )
    page.click("#cron-grid summary")
    expect(page.locator(".dst-note")).to_contain_text("does not exist on 2026-03-29")
    page.screenshot(path=str(shots / "cron-builder.png"), full_page=True)
    for shot in shots.iterdir():
        assert shot.stat().st_size > 10_000, shot
    if os.environ.get("CRONOS_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copyfile(shot, SCREENSHOTS / shot.name)


def test_the_browser_fixtures_serve_static_files(web):
    import urllib.request

    with urllib.request.urlopen(f"{web}/static/vendor/htmx.min.js") as response:
        assert response.status == 200 and b"htmx" in response.read(200)
    assert Path(ROOT / "static" / "vendor" / "htmx.min.js").exists()


def test_a_long_prompt_keeps_the_agent_page_a_sane_height(web, browser_page, viewer):
    # Agents saved before the limits: a 1 MB prompt of one line, and one of 50,000 lines. Each
    # made the page tens of thousands of pixels tall; collapsed, it adds a few lines.
    make_agent("short-prompt", prompt="one line\n")
    for name, prompt in (
        ("one-line", "one line without an end " * 40_000),
        ("many-lines", "a line of the prompt\n" * 50_000),
    ):
        agent = make_agent(name)
        Agent.objects.filter(pk=agent.pk).update(prompt=prompt)
    page = browser_page(viewer)

    def height(name: str) -> int:
        page.goto(f"{web}/agents/{name}/")
        return page.evaluate("document.documentElement.scrollHeight")

    short = height("short-prompt")
    for name in ("one-line", "many-lines"):
        assert height(name) < short + 600, name
        # "Show all" opens the whole prompt in a box that scrolls, not down the page.
        page.click("details.long-text summary:has-text('Show all')")
        full = page.locator("details.long-text pre.full")
        expect(full).to_be_visible()
        expect(page.locator("details.long-text pre.preview")).to_be_hidden()
        scroll, client = full.evaluate("e => [e.scrollHeight, e.clientHeight]")
        assert client <= 0.7 * 900 + 1 and scroll > client, name
        assert page.evaluate("document.documentElement.scrollHeight") < short + 1_300, name
        page.click("details.long-text summary:has-text('Show less')")
        expect(full).to_be_hidden()


def test_enter_in_a_refused_form_saves_nothing_over_the_other_version(web, browser_page, editor):
    # After a conflict the form has two buttons; Enter presses the first, Save, which is
    # refused again: only the button that says so saves over the other version.
    make_agent("shared", description="first words")
    page = browser_page(editor)
    page.goto(f"{web}/agents/shared/edit/")
    page.fill("#id_model", "claude-a")
    agent = Agent.objects.get(name="shared")
    agent.description = "their words"
    save_agent(agent, Actor.system())
    page.click("button.primary:has-text('Save')")
    expect(page.locator("#edit-conflict")).to_contain_text("shared was changed after you opened")
    expect(page.locator("#edit-conflict tr[data-field=description]")).to_contain_text("their words")
    expect(page.locator("#id_model")).to_have_value("claude-a")  # the input is kept
    page.press("#id_model", "Enter")
    expect(page.locator("#edit-conflict")).to_be_visible()
    assert Agent.objects.get(name="shared").model == ""
    page.click("button:has-text('Save over version 2')")
    expect(page).to_have_url(f"{web}/agents/shared/")
    agent.refresh_from_db()
    # Mine applied onto theirs: my model lands, their description (which I left) stays.
    assert (agent.model, agent.description) == ("claude-a", "their words")
