"""The Django admin for agents: the raw records (list, search, change form, bulk actions), the
full list of versions with rollback, and a new agent from a template.

Comparing two versions and the clone wizard are the pages' (agents:diff, agents:new): the admin
links to them rather than keeping copies. Every change goes through agents.services, so the
admin is versioned, permission-checked and audited exactly like the command line and the pages.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from agents import cron
from agents.approvers import lonely_approval_warning
from agents.forms import FIELDSETS, AgentForm, TemplateChoiceForm, conflict_context
from agents.models import Agent
from agents.services import (
    DeleteRefused,
    EditConflict,
    clone_agent,
    enabled_kept,
    free_name,
    full_delete,
    may_enable,
    rollback_agent,
    save_agent,
    set_enabled,
)
from agents.versions import latest_version_id, version_number
from audit.actor import Actor
from audit.models import AuditEntry


def admin_actor(request: HttpRequest) -> Actor:
    return Actor.from_request(request, source=AuditEntry.Source.ADMIN)


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = ["name", "enabled", "runner", "schedule_in_words", "next_run", "updated_at"]
    list_display_links = ["name"]
    list_filter = ["enabled", "runner", "catch_up_policy", "overlap_policy", "approval_required"]
    search_fields = ["name", "description"]
    actions = ["enable_selected", "disable_selected", "clone_selected", "delete_selected"]
    readonly_fields = ["kept_unknown_keys", "created_at", "updated_at"]
    change_list_template = "admin/agents/agent/change_list.html"
    change_form_template = "admin/agents/agent/change_form.html"
    # Built in two steps so that mypy checks each group against the stubs' fieldset type (it
    # infers a list concatenation without it). `tuple(fields)`: the stubs want a list of names
    # or rows, which a list[str] is not (lists are invariant); a tuple of names is.
    fieldsets = [
        (None if title == "Agent" else title, {"fields": tuple(fields)})
        for title, fields in FIELDSETS
    ]
    fieldsets.append(
        (
            "Record",
            {"fields": ["kept_unknown_keys", "created_at", "updated_at"], "classes": ["collapse"]},
        )
    )

    def view_on_site(self, agent: Agent) -> str:
        # "View on site" on the change form: the agent's page, with its runs and versions.
        return reverse("agents:detail", args=[agent.name])

    # --- columns -------------------------------------------------------------------------

    @admin.display(description="Schedule")
    def schedule_in_words(self, agent: Agent) -> str:
        if not agent.schedule:
            return "Manual only"
        try:
            return f"{cron.parse(agent.schedule).description()} ({agent.timezone})"
        except cron.CronError as exc:
            return f"Invalid: {exc}"

    @admin.display(description="Next run")
    def next_run(self, agent: Agent):
        if not agent.enabled or not agent.schedule:
            return "—"
        try:
            upcoming = cron.next_runs(agent.schedule, agent.timezone, timezone.now(), 1)
        except cron.CronError:
            return "—"
        return upcoming[0].at if upcoming else "never"

    @admin.display(description="Unknown keys kept from import")
    def kept_unknown_keys(self, agent: Agent) -> str:
        return ", ".join(sorted(agent.extra_config)) or "—"

    # --- permissions -------------------------------------------------------------------------

    def has_toggle_permission(self, request: HttpRequest) -> bool:
        return may_enable(admin_actor(request))

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        if self.has_toggle_permission(request):
            return form
        # `enabled` shown but not taken (AgentForm.may_enable). The admin builds its form
        # without our arguments, so the flag goes on the class it builds.
        return type(form.__name__, (form,), {"may_enable": False})

    # --- saving through the services -----------------------------------------------------------

    # A secret typed into the form never reaches an error report either.
    @method_decorator(sensitive_post_parameters("secret_variables"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except EditConflict:
            # Someone saved between the form's check of the version it was opened at and the
            # save, which refused it (its transaction rolled back): drawn again, the form now
            # finds the conflict itself and shows it with the person's input.
            return super().changeform_view(request, object_id, form_url, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # A save refused because someone saved since the form was opened: what changed, and
        # the choices (templates/admin/agents/agent/change_form.html).
        form = context["adminform"].form
        if obj is not None and getattr(form, "conflict", None) is not None:
            context.update(conflict_context(obj, form.conflict, form.instance))
        response = super().render_change_form(request, context, add, change, form_url, obj)
        if obj is not None and getattr(form, "conflict", None) is not None:
            response.status_code = 409
        return response

    def save_model(self, request, obj, form, change):
        asked = form.cleaned_data.get("enabled", obj.enabled)
        # Refused (EditConflict) if someone saved since the form was opened; see changeform_view.
        save_agent(obj, admin_actor(request), based_on=form.based_on())
        # The form does not take `enabled` from someone who may not change it; the service
        # keeps it too (another way in, or an operator's change since the form was drawn).
        kept = enabled_kept(obj, asked)
        if kept:
            self.message_user(request, kept, messages.WARNING)
        lonely = lonely_approval_warning(obj, request.user.pk)
        if lonely:
            self.message_user(request, lonely, messages.WARNING)

    # --- deleting: the same path as the pages ---------------------------------------------
    # Deleting an agent takes its runs with it, so its active runs are cancelled and waited
    # for and their logs removed first: the runs app's delete (agents.services.full_delete;
    # this app cannot import runs). Waiting for workers means seeing their commits, so a
    # confirmed delete runs outside the transaction Django wraps its delete view in. The
    # confirmation says what goes in counts (an agent may have a million runs), under the
    # agent's own delete permission rather than Django's per-model list of every related row.

    def get_deleted_objects(self, objs, request):
        agents = list(objs)
        return full_delete().describe(agents), {"agents": len(agents)}, set(), []

    def delete_view(self, request, object_id, extra_context=None):
        if request.method != "POST":
            return super().delete_view(request, object_id, extra_context)
        agent = self._agent(request, object_id)
        if not self.has_delete_permission(request, agent):
            raise PermissionDenied
        if self._delete(request, [agent]):
            return HttpResponseRedirect(reverse("admin:agents_agent_changelist"))
        return HttpResponseRedirect(reverse("admin:agents_agent_change", args=[agent.pk]))

    @admin.action(description="Delete selected agents", permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Agent]):
        if not request.POST.get("post"):
            return django_delete_selected(self, request, queryset)  # the confirmation page
        self._delete(request, list(queryset))
        return None

    def _delete(self, request: HttpRequest, agents: list[Agent]) -> bool:
        """Delete through the runs app and say what happened; False if any was refused."""
        deleted = full_delete().delete(agents, admin_actor(request))
        if deleted.names:
            self.message_user(
                request,
                f"Deleted {', '.join(deleted.names)}, with {deleted.runs} run(s) and "
                f"{deleted.logs} log file(s).",
                messages.SUCCESS,
            )
        for name, reason in deleted.refused.items():
            self.message_user(request, f"{name} was not deleted: {reason}", messages.ERROR)
        return not deleted.refused

    def delete_model(self, request, obj):
        # Django's own delete paths end here; the views above do not, but any other caller
        # takes the same way as them.
        deleted = full_delete().delete([obj], admin_actor(request))
        if deleted.refused:
            raise DeleteRefused(deleted.refused[obj.name])

    def delete_queryset(self, request, queryset):
        deleted = full_delete().delete(list(queryset), admin_actor(request))
        if deleted.refused:
            raise DeleteRefused("; ".join(f"{k}: {v}" for k, v in deleted.refused.items()))

    # --- actions -----------------------------------------------------------------------------

    @admin.action(description="Enable selected agents", permissions=["toggle"])
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        actor = admin_actor(request)
        count = sum(set_enabled(agent, True, actor) for agent in queryset)
        self.message_user(request, f"Enabled {count} agent(s).", messages.SUCCESS)

    @admin.action(description="Disable selected agents", permissions=["toggle"])
    def disable_selected(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        actor = admin_actor(request)
        count = sum(set_enabled(agent, False, actor) for agent in queryset)
        self.message_user(request, f"Disabled {count} agent(s).", messages.SUCCESS)

    @admin.action(
        description="Clone selected agents (the copies start disabled)", permissions=["add"]
    )
    def clone_selected(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        actor = admin_actor(request)
        names = []
        for agent in queryset:
            copy = clone_agent(agent, free_name(f"{agent.name}-copy"), actor)
            names.append(copy.name)
        self.message_user(request, f"Created {', '.join(names)} (disabled).", messages.SUCCESS)

    # --- extra pages ---------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "from-template/", view(self.from_template_view), name="agents_agent_from_template"
            ),
            path(
                "<int:object_id>/versions/", view(self.versions_view), name="agents_agent_versions"
            ),
            path(
                "<int:object_id>/versions/<int:history_id>/rollback/",
                view(require_POST(self.rollback_view)),
                name="agents_agent_rollback",
            ),
            *super().get_urls(),
        ]

    def history_view(self, request, object_id, extra_context=None):
        # The agent's history is its versions (django-simple-history), not admin LogEntries.
        return HttpResponseRedirect(reverse("admin:agents_agent_versions", args=[object_id]))

    def _agent(self, request: HttpRequest, object_id: int) -> Agent:
        agent = get_object_or_404(Agent, pk=object_id)
        if not self.has_view_or_change_permission(request, agent):
            raise PermissionDenied
        return agent

    def versions_view(self, request: HttpRequest, object_id: int):
        agent = self._agent(request, object_id)
        versions = list(agent.history.select_related("history_user").order_by("-history_id"))
        for number, version in zip(range(len(versions), 0, -1), versions, strict=True):
            version.number = number
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "agent": agent,
            "original": agent,
            "title": f"Versions of {agent.name}",
            "versions": versions,
            "can_rollback": self.has_change_permission(request, agent),
            "may_enable": self.has_toggle_permission(request),
            # A rollback is refused if someone saves another version after this page is drawn.
            "based_on": latest_version_id(agent),
        }
        return render(request, "admin/agents/agent/versions.html", context)

    def rollback_view(self, request: HttpRequest, object_id: int, history_id: int):
        agent = self._agent(request, object_id)
        if not self.has_change_permission(request, agent):
            raise PermissionDenied
        version = get_object_or_404(agent.history, history_id=history_id)
        based_on = request.POST.get("based_on_version", "")
        try:
            changes = rollback_agent(
                agent,
                history_id,
                admin_actor(request),
                based_on=int(based_on) if based_on.isdigit() and len(based_on) < 19 else None,
            )
        except EditConflict as conflict:
            agent.refresh_from_db()
            compare = reverse("agents:diff", args=[agent.name])
            messages.error(
                request,
                format_html(
                    "Nothing was rolled back: {} was saved again (version {}) after the versions "
                    'were listed. <a href="{}?from={}&amp;to={}">See what changed</a>, then roll '
                    "back again if you still want version {}.",
                    agent.name,
                    version_number(agent.history.get(history_id=conflict.current)),
                    compare,
                    conflict.base or "",
                    conflict.current or "",
                    version_number(version),
                ),
            )
        except ValidationError as exc:
            messages.error(request, f"Cannot roll back: {'; '.join(exc.messages)}")
        else:
            kept = enabled_kept(agent, version.enabled)
            if changes:
                messages.success(
                    request,
                    f"Rolled {agent.name} back to version "
                    f"{version_number(version)}: a new version was made.",
                )
            elif not kept:
                messages.info(request, "That version is the same as the current one.")
            if kept:
                messages.warning(request, f"Enabled was not rolled back. {kept}")
        return HttpResponseRedirect(reverse("admin:agents_agent_versions", args=[agent.pk]))

    def from_template_view(self, request: HttpRequest):
        if not self.has_add_permission(request):
            raise PermissionDenied
        from agents import catalogue  # the catalogue reads its YAML files: only when asked

        templates = catalogue.list_templates()
        form = TemplateChoiceForm(request.POST or None, templates=templates)
        if request.method == "POST" and form.is_valid():
            try:
                agent = catalogue.create_from_template(
                    form.cleaned_data["template"],
                    form.cleaned_data["name"],
                    admin_actor(request),
                    working_dir=form.cleaned_data["working_dir"] or None,
                )
            except ValidationError as exc:
                for message in exc.messages:
                    form.add_error(None, message)
            else:
                messages.success(
                    request,
                    format_html(
                        "Created {} from a template, disabled: review it, then enable it.",
                        agent.name,
                    ),
                )
                return HttpResponseRedirect(reverse("admin:agents_agent_change", args=[agent.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "New agent from a template",
            "form": form,
            "templates": templates,
        }
        return render(request, "admin/agents/agent/from_template.html", context)
