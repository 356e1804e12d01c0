"""The bare django-q2 task that the throughput benchmark (runs/bench.py) measures Cronos against."""

from __future__ import annotations


def noop() -> None:
    """Does nothing: what is left is django-q2's own cost of carrying and recording a task."""
    return None
