"""The append-only audit log: who did what, when and from where."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntryQuerySet(models.QuerySet):
    """Entries can be added and read; never changed or removed in bulk."""

    def update(self, **kwargs):
        raise PermissionError("The audit log is append-only: entries cannot be changed.")

    def delete(self):
        raise PermissionError("The audit log is append-only: entries cannot be deleted.")

    def for_object(self, obj: models.Model) -> AuditEntryQuerySet:
        return self.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk))


class AuditEntry(models.Model):
    class Source(models.TextChoices):
        WEB = "web", "Web"
        ADMIN = "admin", "Admin"
        CLI = "cli", "Command line"
        API = "api", "API"
        SYSTEM = "system", "System"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The user may be deleted later; the snapshot keeps the entry readable.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_username = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_name = models.CharField(max_length=200, blank=True)
    # For configuration edits: {field: [old, new]}, with secrets already masked.
    changes = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            # The audit trail of one object (agent page, run page).
            models.Index(fields=["object_type", "object_id", "-at"], name="audit_object_idx"),
            # "What did this person do" filters in the admin.
            models.Index(fields=["actor_username", "-at"], name="audit_actor_idx"),
        ]

    def __str__(self) -> str:
        who = self.actor_username or "system"
        return f"{self.at:%Y-%m-%d %H:%M:%S} {who} {self.action} {self.object_name}".strip()

    def save(self, *args, **kwargs):
        """Insert only: an existing entry is never rewritten."""
        if self.pk is not None:
            raise PermissionError("The audit log is append-only: entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit log is append-only: entries cannot be deleted.")
