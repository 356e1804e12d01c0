"""Runs in the admin: the raw records, read-only; cancel is the one action (audited)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html

from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import Run
from runs.services import cancel_run


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "agent",
        "state",
        "trigger",
        "slot",
        "started_at",
        "finished_at",
        "exit_code",
        "short_reason",
    ]
    list_filter = ["state", "trigger", "agent"]
    search_fields = ["agent__name", "reason", "result_text", "chunks__text"]
    list_select_related = ["agent"]
    date_hierarchy = "created_at"
    actions = ["cancel_selected"]
    readonly_fields = [f.name for f in Run._meta.fields] + ["output_tail"]
    show_full_result_count = False  # counting a million runs on every page is not free

    @admin.display(description="Reason")
    def short_reason(self, run: Run) -> str:
        return run.reason[:80]

    @admin.display(description="Output (last 64 KiB)")
    def output_tail(self, run: Run) -> str:
        texts = list(run.chunks.order_by("-seq").values_list("text", flat=True)[:16])
        tail = "".join(reversed(texts))[-65536:]
        return format_html('<pre class="output-tail">{}</pre>', tail)

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        return results, True if search_term else may_have_duplicates

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("agents.cancel_run")

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_selected(self, request, queryset) -> None:
        actor = Actor.from_request(request, source=AuditEntry.Source.ADMIN)
        count = sum(cancel_run(run, actor) for run in queryset.select_related("agent"))
        self.message_user(request, f"Cancelled or asked to stop {count} run(s).", messages.SUCCESS)
