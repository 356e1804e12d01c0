"""Placeholder: replaced by the cron helpers module."""

from __future__ import annotations


class CronError(ValueError):
    pass


def parse(expression: str):
    if not expression.strip():
        raise CronError("empty")
    return expression
