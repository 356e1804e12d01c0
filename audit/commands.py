"""What every Cronos management command shares (DESIGN.md §4: bad input gets a clear error).

A person's mistake — a permission they lack, a user, agent or run that is not there, a value a
service or a model refuses — ends the command with one line naming the problem and exit status 2,
never a traceback (`--traceback` still shows it). Status 2 is what argparse gives a bad option, so
every refusal of what was asked exits alike; status 1 is kept for a command that did what was
asked and whose outcome failed (`cronos_run --wait` of a run that failed): raise CommandFailed.
Ctrl-C leaves quietly with status 130. The log lines a
command's services write at INFO stay out of the terminal unless asked for with `-v 2`; the
long-running processes (the scheduler's loop, the cluster, the web server) keep theirs.

This module sits in the bottom app so that every app's commands can use it (cronos_site ->
runs -> agents -> audit).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError

# `-v 2` (Django's --verbosity) shows the INFO log lines; below it a command prints only its own.
LOG_VERBOSITY = 2
USER_ERROR = 2  # what was asked was refused or wrong (argparse's status for a bad option)
FAILED = 1  # what was asked was done, and its outcome is a failure
INTERRUPTED = 130  # the shell's status for a command ended by SIGINT


class CommandFailed(CommandError):
    """The command did what was asked and the outcome is a failure (a run that failed): one
    line, exit status 1, where every other CommandError of a Cronos command exits with 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("returncode", FAILED)
        super().__init__(*args, **kwargs)


def validation_text(exc: ValidationError) -> str:
    """A ValidationError as one line: `field: message; other: message`."""
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" if field != "__all__" else " ".join(messages)
            for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)


def _database_text(exc: OperationalError) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    if "no such table" in text or "does not exist" in text:
        return f"The database is not ready ({text}): run `python manage.py migrate` first."
    return f"The database could not be used: {text}"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a person causes into a CommandError naming the problem, exit status 2
    (a CommandFailed keeps its 1)."""
    try:
        yield
    except CommandFailed:
        raise
    except CommandError as exc:
        # The commands' own refusals ("There is no agent named 'x'.") and audit.actor's
        # (no such --user), raised with Django's default status 1.
        exc.returncode = USER_ERROR
        raise
    except PermissionDenied as exc:
        raise _refused(str(exc) or "Permission denied.") from exc
    except ValidationError as exc:
        raise _refused(validation_text(exc)) from exc
    except ObjectDoesNotExist as exc:
        raise _refused(str(exc) or "It does not exist.") from exc
    except OperationalError as exc:
        raise _refused(_database_text(exc)) from exc
    except OSError as exc:
        # A path given on the command line: the message names the file and the reason.
        raise _refused(str(exc) or exc.__class__.__name__) from exc
    except ValueError as exc:
        # What a service refuses (a bad schedule, a value out of range) says why.
        raise _refused(str(exc) or exc.__class__.__name__) from exc


def _refused(message: str) -> CommandError:
    return CommandError(message, returncode=USER_ERROR)


@contextmanager
def quiet_logs(verbosity: int) -> Iterator[None]:
    """Below `-v 2`, hide log records at INFO and below (every logger: django-q's has a level
    of its own) for the duration; the previous setting is restored after."""
    if verbosity >= LOG_VERBOSITY:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        yield
    finally:
        logging.disable(previous)


class CronosCommand(BaseCommand):
    """The base of Cronos's commands: user errors as one line, Ctrl-C as status 130, INFO logs
    only with `-v 2`."""

    def quiet_logs(self, options: dict[str, Any]) -> bool:
        """Whether this invocation hides INFO log lines below `-v 2`; a long-running process
        (the scheduler's loop) answers False and keeps the log configuration as it is."""
        return True

    def interrupted(self, options: dict[str, Any]) -> str:
        """The line printed when Ctrl-C ends the command."""
        return "Interrupted."

    def execute(self, *args: Any, **options: Any) -> str | None:
        verbosity = options.get("verbosity", 1) if self.quiet_logs(options) else LOG_VERBOSITY
        try:
            with quiet_logs(verbosity), user_errors():
                return super().execute(*args, **options)
        except KeyboardInterrupt:
            self.stderr.write(self.interrupted(options))
            sys.exit(INTERRUPTED)
