"""Built-in agent templates: one YAML file each in this folder.

A template is an agent.yaml (the format of agents.agentfile) with two more keys that only the
catalogue reads:

    title:   a short name for the template, shown in lists
    prompt:  the agent's CLAUDE.md, inline, since a template is a single file

It has no `name:`: the person creating an agent from it chooses one. Its `description` is both
the template's and the new agent's.

Agents made from a template are always created DISABLED, whatever the template says, so that
nothing fires before a person has looked at the prompt, the working directory and the schedule
and enabled it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents import agentfile as config
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor

CATALOGUE_DIR = Path(__file__).resolve().parent


class TemplateNotFound(LookupError):
    """No template of that name in the catalogue."""


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    path: Path


def list_templates() -> list[Template]:
    """Every template in the catalogue, by name."""
    templates = []
    for path in sorted(CATALOGUE_DIR.glob("*.yaml")):
        mapping = _load(path)
        templates.append(
            Template(
                name=path.stem,
                title=str(mapping.get("title") or path.stem),
                description=str(mapping.get("description") or ""),
                path=path,
            )
        )
    return templates


def get_template(name: str) -> Template:
    for template in list_templates():
        if template.name == name:
            return template
    known = ", ".join(t.name for t in list_templates())
    raise TemplateNotFound(f"There is no template named {name!r}; the catalogue has: {known}.")


def template_fields(template_name: str, agent_name: str) -> config.Parsed:
    """The agent fields a template describes, named `agent_name` (not validated yet)."""
    template = get_template(template_name)
    mapping = dict(_load(template.path))
    mapping.pop("title", None)  # the catalogue's own key, not the agent's
    prompt = mapping.pop("prompt", None)
    if prompt is not None and not isinstance(prompt, str):
        raise config.ConfigError([f"{template.path}: prompt: expected text"])
    try:
        # A template's spelling of defaults is documentation, not something to write back.
        parsed = config.parse(
            mapping, prompt=prompt or "", default_name=agent_name, remember_spelling=False
        )
    except config.ConfigError as exc:
        raise config.ConfigError([f"{template.path}: {p}" for p in exc.problems]) from exc
    if parsed.webhooks:
        # Not made from a template: each webhook's secret is shown once, on the agent's page.
        raise config.ConfigError(
            [
                f"{template.path}: {config.WEBHOOKS_PATH}: a template makes no triggers; "
                "add webhooks on the agent's page (a template may show one in a comment)"
            ]
        )
    parsed.fields["name"] = agent_name
    return parsed


def create_from_template(
    template_name: str, agent_name: str, actor: Actor, *, working_dir: str | None = None
) -> Agent:
    """Create an agent from a template, disabled; validated, versioned and audited."""
    parsed = template_fields(template_name, agent_name)
    agent = config.apply(Agent(), parsed.fields)
    agent.enabled = False  # created disabled: nothing fires before a person has looked
    if working_dir is not None:
        agent.working_dir = working_dir
    save_agent(agent, actor, reason=f"Created from template {template_name}", action="agent.create")
    return agent


def _load(path: Path) -> dict[str, Any]:
    try:
        mapping = config.load_yaml(path.read_text(encoding="utf-8"))
    except config.ConfigError as exc:
        raise config.ConfigError([f"{path}: {p}" for p in exc.problems]) from exc
    if not isinstance(mapping, dict):
        raise config.ConfigError([f"{path}: expected a mapping of keys to values"])
    return mapping
