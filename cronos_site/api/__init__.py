"""The JSON API under `/api/v1/` (DESIGN.md §7.7), made with django-ninja: agents, runs and
their actions for scripts and other tools, with an OpenAPI document (`/api/v1/openapi.json`)
and a browsable page of it (`/api/v1/docs`).

It authenticates with a personal access token only (`Authorization: Bearer cronos_…`,
audit.tokens), never a session cookie, so it needs no CSRF token; and it acts as the token's
owner, with that person's roles at the time of each request, through the same services as the
pages (`auth`, `views`). A run is the object `cronos_run --json` prints (runs.summary).
"""
