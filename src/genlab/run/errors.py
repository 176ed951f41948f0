"""User errors at the command line: one paragraph on stderr, exit status 1, no traceback."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator

from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from genlab.errors import GenlabError

_RESOLVER_PREFIX = "GenlabError raised while resolving interpolation: "


def user_message(err: BaseException) -> str | None:
    """The one-paragraph message of an error the user can fix, or None for any other error: a
    GenlabError, a required config value left unset, a GenlabError raised in a config resolver
    (OmegaConf wraps those)."""
    if isinstance(err, GenlabError):
        return str(err)
    if isinstance(err, MissingMandatoryValue):
        return (f"{err.full_key} must be set: it is ??? in the config. Pass it on the command "
                f"line, e.g. {err.full_key}=...")
    if isinstance(err, InterpolationResolutionError) and str(err).startswith(_RESOLVER_PREFIX):
        return str(err)[len(_RESOLVER_PREFIX):].split("\n    full_key:")[0]
    return None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print an error the user can fix as one paragraph and exit with status 1; let any other
    error through."""
    try:
        yield
    except Exception as err:
        message = user_message(err)
        if message is None:
            raise
        print(f"\ngenlab: {message}", file=sys.stderr)
        sys.exit(1)


def report_user_errors(task: Callable) -> Callable:
    """Decorate an entry point's task function with `user_errors`."""
    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        with user_errors():
            return task(*args, **kwargs)
    return wrapper
