"""The pages' URLs. Four namespaces, named after what a page shows: `agents:` (the agents
page is the home page, an agent, the wizard, the cron builder), `runs:` (runs, one run,
approvals, health, upcoming runs, the dependency graph, notifications), `audit:` (the audit
log and its export) and `account:` (a person's API tokens)."""

from __future__ import annotations

from django.urls import path

from cronos_site.web.views import (
    account,
    agents,
    approvals,
    audit,
    backfill,
    costs,
    graph,
    runs,
    site,
    triggers,
)

agent_urls = (
    [
        path("", agents.agent_list, name="list"),
        path("bulk/", agents.bulk, name="bulk"),
        path("agents/new/", agents.agent_new, name="new"),
        path("agents/<slug:name>/", agents.agent_detail, name="detail"),
        path("agents/<slug:name>/edit/", agents.agent_edit, name="edit"),
        path("agents/<slug:name>/run/", agents.run_now, name="run"),
        path("agents/<slug:name>/run/variables/", agents.run_with_variables, name="run_variables"),
        path("agents/<slug:name>/enabled/", agents.toggle, name="toggle"),
        path("usage-limits/<int:pause_id>/lift/", agents.lift_pause, name="lift_pause"),
        # Past slots without a run: GET previews a range (nothing made), POST runs it.
        path("agents/<slug:name>/backfill/", backfill.backfill_page, name="backfill"),
        # The lock line's form names the run in its body; one view cancels for both pages.
        path("agents/<slug:name>/cancel/", runs.run_cancel, name="cancel"),
        path("agents/<slug:name>/versions/diff/", agents.version_diff, name="diff"),
        # The Triggers section: webhooks added, rotated, enabled or disabled, deleted.
        path("agents/<slug:name>/triggers/", triggers.trigger_add, name="trigger_add"),
        path(
            "agents/<slug:name>/triggers/<int:trigger_id>/rotate/",
            triggers.trigger_rotate,
            name="trigger_rotate",
        ),
        path(
            "agents/<slug:name>/triggers/<int:trigger_id>/enabled/",
            triggers.trigger_enabled,
            name="trigger_enabled",
        ),
        path(
            "agents/<slug:name>/triggers/<int:trigger_id>/delete/",
            triggers.trigger_delete,
            name="trigger_delete",
        ),
        path(
            "agents/<slug:name>/versions/<int:history_id>/rollback/",
            agents.rollback,
            name="rollback",
        ),
        path("cron/", agents.cron_page, name="cron"),
        path("cron/preview/", agents.cron_preview, name="cron_preview"),
        path("favicon.ico", site.favicon),
    ],
    "agents",
)

run_urls = (
    [
        path("runs/", runs.run_list, name="list"),
        path("runs/<int:run_id>/", runs.run_detail, name="detail"),
        path("runs/<int:run_id>/output/", runs.run_output, name="output"),
        # The raw log as a file (runs.rawlog): the whole output, masked as stored.
        path("runs/<int:run_id>/log/", runs.run_log, name="log"),
        path("runs/<int:run_id>/cancel/", runs.run_cancel, name="cancel"),
        path("runs/<int:run_id>/again/", runs.run_again, name="again"),
        path("runs/<int:run_id>/approve/", approvals.approve, name="approve"),
        path("runs/<int:run_id>/reject/", approvals.reject, name="reject"),
        path("approvals/", approvals.approval_list, name="approvals"),
        path("health/", runs.health_page, name="health"),
        path("health/<slug:name>/", runs.agent_health, name="agent_health"),
        # Spend from the roll-up table, and the same figures as a CSV download.
        path("costs/", costs.costs_page, name="costs"),
        path("costs/export.csv", costs.costs_csv, name="costs_csv"),
        path("upcoming/", runs.upcoming, name="upcoming"),
        # The dependency graph: agents as boxes, depends_on as arrows (`?all=1`: every agent).
        path("graph/", graph.graph_page, name="graph"),
        path("notifications/", runs.notification_list, name="notifications"),
        path("notifications/read/", runs.notifications_read, name="notifications_read"),
    ],
    "runs",
)

# A person's own settings: their personal access tokens for the JSON API.
account_urls = (
    [
        path("account/tokens/", account.token_list, name="tokens"),
        path("account/tokens/<int:token_id>/revoke/", account.token_revoke, name="token_revoke"),
    ],
    "account",
)

# The audit log (admins): the page, and its downloads as JSON Lines or CSV.
audit_urls = (
    [
        path("audit/", audit.audit_list, name="list"),
        path("audit/export.<str:fmt>", audit.audit_export, name="export"),
    ],
    "audit",
)
