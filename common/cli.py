"""One wrapper for every command's main: a user error becomes one line on stderr and exit 2.

User errors are UserError (and its subclasses), FileNotFoundError and OmegaConf's config errors;
anything else propagates with its traceback, because it is a bug.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable

from .errors import UserError

EXIT_USER_ERROR = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import OmegaConfBaseException

    return (UserError, FileNotFoundError, OmegaConfBaseException)


def one_line(err: BaseException) -> str:
    """OmegaConf's messages add lines of internals; its first line and the full key say it all."""
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return first + (f" ({key})" if key and key not in first else "")
    return str(err)


def exit_on(prog: str, err: BaseException) -> int:
    """Print a user error as `<prog>: <message>` on stderr; the exit status to return."""
    print(f"{prog}: {one_line(err)}", file=sys.stderr)
    return EXIT_USER_ERROR


def report(prog: str, body: Callable[..., int | None], *args) -> int:
    """Run `body(*args)` as a command: its status (None is 0), or 2 after a user error's line."""
    try:
        return body(*args) or 0
    except user_error_types() as err:
        return exit_on(prog, err)


def command(prog: str) -> Callable:
    """Decorate a `main(argv) -> int` so that a user error is one line and exit 2."""

    def wrap(main: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapped(*args, **kwargs) -> int:
            return report(prog, functools.partial(main, *args, **kwargs))

        return wrapped

    return wrap
