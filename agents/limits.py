"""How large an agent's texts and lists may be.

Each limit is far above what a person writes, and low enough that the agent's page, a version
diff, the edit form and a run's environment stay usable: a 1 MB prompt made the agent's page
182,000 px tall, and a 3 MB one could not be posted at all. The model's field validators apply
them, so every way in (the pages' form, the wizard, the admin, an import, a clone) refuses the
same things with the same words, and a form keeps what the person typed next to the error.

The largest form a person can legitimately post follows from these (`largest_form_chars`):
DATA_UPLOAD_MAX_MEMORY_SIZE must stay above it percent-encoded, 12 bytes a character at worst
(about 5.0 MB), or a form over a limit is cut off with the 413 page instead of being drawn
again with its error and everything the person typed.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from agents import secrets

# A line or two on the agents list and the page head; longer text belongs in the prompt.
DESCRIPTION_CHARS = 2_000
# The agent's CLAUDE.md. 200,000 characters are about 50,000 tokens, a quarter of a model's
# context, read again on every turn; reference material belongs in files the agent reads.
# The import reads a CLAUDE.md of up to agents.importfiles.MAX_PROMPT_BYTES (1 MiB), more than
# any prompt this allows (4 bytes a character at most), so an import over the limit gets
# this message rather than a file-size one.
PROMPT_CHARS = 200_000
# Run through the shell as one argument (at most 128 KiB on Linux, MAX_ARG_STRLEN); a command
# longer than this belongs in a script in the working directory.
COMMAND_CHARS = 10_000
# The one-per-line lists (tools, extra arguments, dependencies, email addresses): each item is
# short, and the whole list goes on the command line or into a page.
LIST_ITEMS = 200
LIST_CHARS = 20_000
# Variables become the run's environment, which shares ARG_MAX (2 MiB on Linux) with the
# command line; a value longer than a private key's PEM is a file's content, not a variable.
VARIABLES = 100
VARIABLE_NAME_CHARS = 100
VARIABLE_VALUE_CHARS = 10_000
VARIABLES_CHARS = 100_000

# What each list holds, in the messages.
LIST_NOUNS = {
    "allowed_tools": "tools",
    "disallowed_tools": "tools",
    "extra_args": "arguments",
    "depends_on": "agents",
    "notify_emails": "addresses",
}


def _n(count: int) -> str:
    return f"{count:,}"


def _text(value: Any, limit: int, what: str, advice: str) -> None:
    if isinstance(value, str) and len(value) > limit:
        raise ValidationError(
            f"{what} is {_n(len(value))} characters long; the limit is {_n(limit)}. {advice}",
            code="too_long",
        )


def validate_description(value: Any) -> None:
    _text(value, DESCRIPTION_CHARS, "The description", "Put longer text in the prompt.")


def validate_prompt(value: Any) -> None:
    _text(
        value,
        PROMPT_CHARS,
        "The prompt",
        "Move reference material into files in the working directory, which the agent reads "
        "when it needs them.",
    )


def validate_command(value: Any) -> None:
    _text(
        value,
        COMMAND_CHARS,
        "The command",
        "Put a longer one in a script in the working directory and run that.",
    )


def _list(value: Any, many: str) -> None:
    if not isinstance(value, list):
        return  # not a list: agents.validation says so
    if len(value) > LIST_ITEMS:
        raise ValidationError(
            f"{_n(len(value))} {many}; at most {_n(LIST_ITEMS)}.", code="too_many"
        )
    size = sum(len(item) for item in value if isinstance(item, str))
    if size > LIST_CHARS:
        raise ValidationError(
            f"The {many} are {_n(size)} characters long in all; the limit is {_n(LIST_CHARS)}.",
            code="too_long",
        )


# One function a field, each named, so that migrations refer to them by name and a change of
# a limit or its words needs no migration.
def validate_allowed_tools(value: Any) -> None:
    _list(value, LIST_NOUNS["allowed_tools"])


def validate_disallowed_tools(value: Any) -> None:
    _list(value, LIST_NOUNS["disallowed_tools"])


def validate_extra_args(value: Any) -> None:
    _list(value, LIST_NOUNS["extra_args"])


def validate_depends_on(value: Any) -> None:
    _list(value, LIST_NOUNS["depends_on"])


def validate_notify_emails(value: Any) -> None:
    _list(value, LIST_NOUNS["notify_emails"])


def validate_variables(value: Any) -> None:
    """Count and size of the agent's variables; a secret's value is measured decrypted, and
    only its name is ever named."""
    if not isinstance(value, list):
        return  # agents.validation says what is wrong with it
    problems: list[str] = []
    if len(value) > VARIABLES:
        problems.append(f"{_n(len(value))} variables; at most {_n(VARIABLES)}.")
    total = 0
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue  # agents.validation says what is wrong with it
        name = item["name"]
        if len(name) > VARIABLE_NAME_CHARS:
            problems.append(
                f"a variable name is {_n(len(name))} characters long; the limit is "
                f"{_n(VARIABLE_NAME_CHARS)}."
            )
            continue
        size = _value_size(item)
        total += len(name) + size
        if size > VARIABLE_VALUE_CHARS:
            kind = "secret " if item.get("secret") else ""
            problems.append(
                f"{kind}{name} is {_n(size)} characters long; a value is at most "
                f"{_n(VARIABLE_VALUE_CHARS)}. Put longer content in a file in the working "
                "directory and give its path."
            )
    if total > VARIABLES_CHARS:
        problems.append(
            f"The variables are {_n(total)} characters long in all; the limit is "
            f"{_n(VARIABLES_CHARS)}."
        )
    if problems:
        raise ValidationError(problems, code="too_long")


def _value_size(item: dict) -> int:
    if not item.get("secret"):
        value = item.get("value", "")
        return len(value) if isinstance(value, str) else 0
    ciphertext = item.get("ciphertext")
    if not isinstance(ciphertext, str):
        return 0
    try:
        return len(secrets.decrypt(ciphertext))
    except secrets.SecretKeyError:
        return 0  # not for this rule to say: the run says it cannot decrypt it


def largest_form_chars() -> int:
    """How many characters the largest legitimate agent form holds (every text and list at its
    limit): what DATA_UPLOAD_MAX_MEMORY_SIZE must make room for, once encoded."""
    # Each list is posted one item per line: a newline between items.
    lists = len(LIST_NOUNS) * (LIST_CHARS + LIST_ITEMS)
    variables = VARIABLES_CHARS + 2 * VARIABLES  # NAME=value and a newline each
    # The short fields (name, schedule, time zone, working directory, numbers, choices, the
    # csrf token): their model max_length and names, generously.
    short = 5_000
    return DESCRIPTION_CHARS + PROMPT_CHARS + COMMAND_CHARS + lists + variables + short
