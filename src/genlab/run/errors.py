"""User errors at the command line: one paragraph on stderr, exit status 1, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from omegaconf.errors import MissingMandatoryValue

from genlab.errors import GenlabError


def report_user_errors(task: Callable) -> Callable:
    """Print a GenlabError, or a required config value left unset, as one paragraph and exit 1,
    without a traceback."""
    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except GenlabError as err:
            message = str(err)
        except MissingMandatoryValue as err:
            message = (f"{err.full_key} must be set: it is ??? in the config. Pass it on the "
                       f"command line, e.g. {err.full_key}=...")
        print(f"\ngenlab: {message}", file=sys.stderr)
        sys.exit(1)
    return wrapper
