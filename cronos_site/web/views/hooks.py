"""`POST /hooks/<uuid>`: a webhook delivery (runs.triggers.webhooks decides the answer)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from audit.actor import client_ip
from runs.triggers import webhooks


@csrf_exempt
@login_not_required
def receive(request: HttpRequest, hook_id: str) -> JsonResponse:
    """Answer a delivery: JSON, with the status runs.triggers.webhooks.receive decides. The
    ASGI guard (cronos_site.web.hooks) refused an oversized body before it was read; the
    length is checked again here for servers without it (runserver, the test client)."""
    if request.method != "POST":
        return JsonResponse(
            {"error": "webhooks are delivered with POST"}, status=405, headers={"Allow": "POST"}
        )
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > int(settings.CRONOS_WEBHOOK_MAX_BYTES):
        trigger = webhooks.find(hook_id)
        if trigger is None:
            return JsonResponse({"error": "no such webhook"}, status=404)
        answer = webhooks.too_large(trigger, length, client_ip(request))
    else:
        headers = {name.lower(): value for name, value in request.headers.items()}
        answer = webhooks.receive(hook_id, headers, request.body, client_ip(request))
    return JsonResponse(answer.body, status=answer.status, headers=answer.headers)
