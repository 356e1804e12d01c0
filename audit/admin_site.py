"""The admin site: Django's, with a person's own password change audited.

It is the default site (audit.apps.CronosAdminConfig in INSTALLED_APPS, Django's documented way
to replace it), so `admin.site` and every registration use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import router, transaction
from django.http import HttpRequest
from django.template.response import TemplateResponse

from audit.actor import Actor
from audit.log import record
from audit.models import AuditEntry

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class CronosAdminSite(admin.AdminSite):
    def password_change(self, request: HttpRequest, extra_context=None) -> TemplateResponse:
        """Django's own password change page; a password that changed is audited, in the
        same transaction."""
        if request.method != "POST":
            return super().password_change(request, extra_context)
        # A staff member: the site's admin_view lets no one else reach this page.
        user = cast("User", request.user)
        with transaction.atomic(using=router.db_for_write(get_user_model())):
            before = stored_password(user)
            response = super().password_change(request, extra_context)
            if stored_password(user) != before:
                record(
                    Actor.from_request(request, AuditEntry.Source.ADMIN),
                    "user.password",
                    user,
                    message="changed their own password",
                )
        return response


def stored_password(user) -> str | None:
    """The password hash in the database: whether a form changed it, whatever it said."""
    manager = user._meta.model._default_manager  # request.user is a lazy object
    return manager.filter(pk=user.pk).values_list("password", flat=True).first()
