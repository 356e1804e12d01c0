"""Fixtures shared by the runs tests."""

from __future__ import annotations

from tests.db_clock import db_clock  # noqa: F401  (the database clock a test moves)
