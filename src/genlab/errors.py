"""User-facing errors.

A `GenlabError` carries a message written for the person running the command: what went wrong
and what to do about it. The entry points print it without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class GenlabError(Exception):
    """An error caused by input or configuration that the user can fix."""


def check_choice(option: str, value: str, valid: Iterable[str]) -> str:
    """`value` if it is one of `valid`, else a GenlabError naming the valid ones."""
    valid = tuple(valid)
    if value not in valid:
        raise GenlabError(f"{option}={value!r} is not valid; choose one of {', '.join(valid)}.")
    return value
