"""The append-only audit log: who did what, when and from where.

Append-only is the database's rule, not only this module's: triggers on SQLite and PostgreSQL
(migration 0003) refuse every UPDATE and DELETE of an entry (and TRUNCATE), but the one update
that deleting a user makes, its actor link set to null. Each entry is chained to the one before
it by hash (audit/chain.py), so what the triggers cannot stop (someone who drops them) shows in
`cronos_audit verify`. The checks below only turn the same refusals into a clear error before
the database is asked.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db import connections, models, router, transaction
from django.utils import timezone

from audit import chain


class AuditEntryQuerySet(models.QuerySet):
    """Entries can be added one at a time (chained) and read; never changed or removed."""

    def update(self, **kwargs):
        raise PermissionError("The audit log is append-only: entries cannot be changed.")

    def delete(self):
        raise PermissionError("The audit log is append-only: entries cannot be deleted.")

    def bulk_create(self, *args, **kwargs):
        raise PermissionError("Audit entries are added one at a time, each chained to the last.")

    def for_object(self, obj: models.Model) -> AuditEntryQuerySet:
        return self.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk))

    def chain_rows(self, batch: int = 2000) -> Iterator[tuple]:
        """Every entry as a row of chain.VERIFY_COLUMNS, oldest first, `batch` at a time: a
        walk of a million entries holds one batch in memory, and no transaction open."""
        rows = self.order_by("id").values_list(*chain.VERIFY_COLUMNS)
        last_id = 0
        while page := list(rows.filter(id__gt=last_id)[:batch]):
            yield from page
            last_id = page[-1][0]


class AuditEntry(models.Model):
    class Source(models.TextChoices):
        WEB = "web", "Web"
        ADMIN = "admin", "Admin"
        CLI = "cli", "Command line"
        API = "api", "API"
        SYSTEM = "system", "System"

    # Set when the entry is saved (as auto_now_add did), before its hash is computed.
    at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
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
    # The hash chain (audit/chain.py): the hash of the entry before this one, and this entry's
    # own over its snapshot columns and prev_hash. Never changed after the insert.
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False)

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
        """Insert only, chained to the newest entry: an existing entry is never rewritten."""
        if self.pk is not None:
            raise PermissionError("The audit log is append-only: entries cannot be changed.")
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        self.at = timezone.now()
        # Hashed as the database will give it back to `cronos_audit verify`.
        self.changes = chain.normalized_changes(self.changes)
        # savepoint=False: inside a service's transaction this adds no statement; on its own
        # it is a transaction, so that the lock (or SQLite's write lock) covers read and insert.
        with transaction.atomic(using=using, savepoint=False):
            self.prev_hash = chain.locked_head(connections[using], self._meta.db_table)
            self.hash = chain.entry_hash(self.prev_hash, self.snapshot())
            super().save(*args, **kwargs)

    def snapshot(self) -> dict:
        """The columns the entry's hash covers (audit/chain.py SNAPSHOT_FIELDS)."""
        return {name: getattr(self, name) for name in chain.SNAPSHOT_FIELDS}

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit log is append-only: entries cannot be deleted.")


class ApiToken(models.Model):
    """A person's personal access token for the JSON API (`/api/v1/`, DESIGN.md §7.7).

    The API acts as the token's owner, with that person's roles as they are at each request
    (a deactivated account or a lost role takes effect at once). The token, `cronos_` plus
    32 random bytes in URL-safe base64, is shown once when made; only its SHA-256 is stored
    (a random token of that length needs no slow hash) and its first characters (`prefix`) to
    tell tokens apart in a list. Revoking keeps the row (when, by whom) for the audit trail.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
