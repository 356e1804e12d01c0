"""Writing audit entries: called by the service that performs the action, in its transaction."""

from __future__ import annotations

from typing import Any

from django.db import models

from audit.actor import Actor
from audit.models import AuditEntry


def record(
    actor: Actor,
    action: str,
    obj: models.Model | None = None,
    *,
    object_name: str = "",
    changes: dict[str, Any] | None = None,
    message: str = "",
) -> AuditEntry:
    """Append one entry naming who did `action` to `obj`, when and from where."""
    return AuditEntry.objects.create(
        actor=actor.user if actor.user is not None and actor.user.pk else None,
        actor_username=actor.username,
        source=actor.source,
        ip_address=actor.ip_address,
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_name=object_name or (str(obj) if obj is not None else ""),
        changes=changes or {},
        message=message,
    )
