"""A person's own API tokens (`/account/tokens/`): the list, making one (shown once, on the
answer to the form that made it) and revoking one, through audit.tokens, which audits both.

Anyone logged in may have tokens: a token acts with its owner's roles at each request, so it
can do no more than the person can on the pages (a person with no role: nothing but `/me`).
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from audit import tokens
from audit.commands import validation_text
from audit.models import ApiToken
from cronos_site.web.access import actor


@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The person's tokens; a POST makes one, and this answer is the only time it is shown
    (the page is never stored: cronos_site.web.middleware's Cache-Control: no-store)."""
    context: dict = {"section": "account", "name": "", "error": "", "made": None, "secret": ""}
    status = 200
    if request.method == "POST":
        name = request.POST.get("name", "")
        try:
            made, secret = tokens.create_token(request.user, name, actor(request))  # type: ignore[arg-type]
        except ValidationError as exc:
            context.update(name=name, error=validation_text(exc).removeprefix("name: "))
            status = 400
        else:
            context.update(made=made, secret=secret)
            status = 201
    context["tokens"] = tokens.tokens_of(request.user)  # type: ignore[arg-type]
    return render(request, "account/tokens.html", context, status=status)


@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of the person's own tokens (another's is not found here: admins revoke
    those with `cronos_token revoke`)."""
    token = get_object_or_404(
        ApiToken.objects.select_related("user"), pk=token_id, user=request.user
    )
    if tokens.revoke_token(token, actor(request)):
        messages.success(request, f"Revoked the token {token.name} ({token.prefix}…).")
    else:
        messages.info(request, f"The token {token.name} was revoked already.")
    return HttpResponseRedirect(reverse("account:tokens"))
