"""User-facing errors.

A `GenlabError` carries a message written for the person running the command: what went wrong
and what to do about it. The entry points print it without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable


class GenlabError(Exception):
    """An error caused by input or configuration that the user can fix."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for genlab's command-line tools: a usage mistake (an unknown option, a value
    of the wrong type, a missing argument) is one paragraph and exit status 1, as every other
    mistake a user can fix, instead of argparse's usage block and status 2."""

    def error(self, message: str):
        print(f"\ngenlab: {self.prog}: {message}. See {self.prog} --help.", file=sys.stderr)
        sys.exit(1)


def exit_status(work: Callable[[], object]) -> int:
    """A command-line tool's exit status for doing `work`: 0, or 1 after printing the message of
    the GenlabError it raised to stderr (one paragraph, no traceback)."""
    try:
        work()
    except GenlabError as err:
        print(f"\ngenlab: {err}", file=sys.stderr)
        return 1
    return 0


def yaml_repr(value) -> str:
    """A value as it is written on the command line / in YAML (false, null, 'text')."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def check_choice(option: str, value, valid: Iterable):
    """`value` if it is one of `valid`, else a GenlabError naming the valid ones."""
    valid = tuple(valid)
    if not any(type(v) is type(value) and v == value for v in valid):  # so 0 is not false
        raise GenlabError(f"{option}={yaml_repr(value)} is not valid; choose one of "
                          f"{', '.join(v if isinstance(v, str) else yaml_repr(v) for v in valid)}.")
    return value


def check_choices(option: str, values: Iterable, valid: Iterable) -> list:
    """`values` if every one is in `valid`, else a GenlabError naming the wrong and valid ones."""
    values, valid = list(values), tuple(valid)
    if unknown := [v for v in values if v not in valid]:
        raise GenlabError(f"{option}={values}: {', '.join(map(str, unknown))} "
                          f"{'is' if len(unknown) == 1 else 'are'} not valid; choose from "
                          f"{', '.join(map(str, valid))}.")
    return values
