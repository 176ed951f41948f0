"""User-facing errors.

A `GenlabError` carries a message written for the person running the command: what went wrong
and what to do about it. The entry points print it without a traceback.
"""


class GenlabError(Exception):
    """An error caused by input or configuration that the user can fix."""
