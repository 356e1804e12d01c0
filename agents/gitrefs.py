"""Git ref names as `git check-ref-format` allows them, for the settings that name one: a
review's target branch (agents.validation) and a condition's `since` (agents.conditions)."""

from __future__ import annotations

import re

# git check-ref-format(1): what a ref name may not contain, start or end with. Revision
# expressions (`HEAD~2`, `main@{1}`, `a..b`) are refused with them: a setting names a ref.
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[-/.]|[/.]$|\.lock$|/\.")


def is_ref_name(name: str) -> bool:
    """Whether `name` is a ref name git would accept (`main`, `origin/main`, `v1.2`)."""
    return bool(name) and name != "@" and not _BAD_REF.search(name)
