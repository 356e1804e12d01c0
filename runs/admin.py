"""Runs in the admin: the raw records, read-only; cancel is the one action (audited)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.utils.html import format_html
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
    SolarSchedule,
)

from audit import roles
from audit.actor import Actor
from audit.log import record
from audit.models import AuditEntry
from runs import approvals
from runs.engines import HOUSEKEEPING_TASK
from runs.models import Run
from runs.services import approve_run, cancel_run, reject_run


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
    actions = ["cancel_selected", "approve_selected", "reject_selected"]
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

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm(approvals.PERMISSION)

    @admin.action(
        description="Approve selected runs (waiting for approval)", permissions=["approve"]
    )
    def approve_selected(self, request, queryset) -> None:
        self._decide(request, queryset, approve_run, "Approved")

    @admin.action(
        description="Reject selected runs (waiting for approval)", permissions=["approve"]
    )
    def reject_selected(self, request, queryset) -> None:
        self._decide(request, queryset, reject_run, "Rejected")

    def _decide(self, request, queryset, decide, done: str) -> None:
        """Each run through runs.approvals (four eyes, audited as from the admin); what was
        refused is said run by run."""
        actor = Actor.from_request(request, source=AuditEntry.Source.ADMIN)
        decided = 0
        for run in queryset.select_related("agent").order_by("pk"):
            try:
                decide(run, actor)
                decided += 1
            except (approvals.ApprovalError, PermissionDenied) as exc:
                self.message_user(request, f"Run #{run.pk}: {exc}", messages.WARNING)
        if decided:
            self.message_user(request, f"{done} {decided} run(s).", messages.SUCCESS)

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_selected(self, request, queryset) -> None:
        actor = Actor.from_request(request, source=AuditEntry.Source.ADMIN)
        count = sum(cancel_run(run, actor) for run in queryset.select_related("agent"))
        self.message_user(request, f"Cancelled or asked to stop {count} run(s).", messages.SUCCESS)


# --- Housekeeping on the Celery engine (runs/engines/beat.py) -------------------------------
#
# django-celery-beat's own admin would let anyone with its permissions make a periodic task
# that calls any Celery task with any arguments (the risk for which Cronos's admin offers no
# django-q2 schedules either). Instead: only Cronos's `cronos: <task>` rows, only admins (the
# admin role or superusers), no add or delete, the task and its arguments read-only, every
# change audited.

for _model in (PeriodicTask, IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


def _is_admin(request) -> bool:
    user = request.user
    return bool(
        user.is_active and (user.is_superuser or user.groups.filter(name=roles.ADMIN).exists())
    )


@admin.register(PeriodicTask)
class HousekeepingTaskAdmin(admin.ModelAdmin):
    """Cronos's housekeeping rows as periodic tasks: admins may change when they run."""

    list_display = [
        "name",
        "enabled",
        "interval",
        "expire_seconds",
        "last_run_at",
        "total_run_count",
    ]
    fields = ["name", "description", "enabled", "interval", "expire_seconds", "task", "args"]
    readonly_fields = ["name", "description", "task", "args"]
    actions = None

    def get_queryset(self, request):
        return super().get_queryset(request).filter(task=HOUSEKEEPING_TASK)

    def has_module_permission(self, request) -> bool:
        return _is_admin(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return _is_admin(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return _is_admin(request)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        before = {name: _plain(form.initial.get(name)) for name in form.changed_data}
        super().save_model(request, obj, form, change)
        PeriodicTasks.update_changed()  # beat re-reads its rows
        record(
            Actor.from_request(request, source=AuditEntry.Source.ADMIN),
            "housekeeping.change",
            obj,
            object_name=obj.name,
            changes={
                name: [before[name], _plain(form.cleaned_data.get(name))]
                for name in form.changed_data
            },
        )


def _plain(value):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
