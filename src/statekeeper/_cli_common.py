"""What the ``statekeeper`` subcommands share: options, error reporting, consoles."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
import sqlalchemy as sa
from rich.console import Console

from .errors import StatekeeperError

__all__ = [
    "display_url",
    "err_console",
    "out_console",
    "reports_errors",
    "schema_option",
    "url_option",
]

F = TypeVar("F", bound=Callable[..., Any])


def url_option(*, required: bool = True) -> Callable[[F], F]:
    """The ``--url`` option, falling back to ``STATEKEEPER_URL``."""
    return click.option(
        "--url",
        envvar="STATEKEEPER_URL",
        show_envvar=True,
        required=required,
        metavar="URL",
        help="Database URL, e.g. sqlite:///app.db or postgresql://user@host/db.",
    )


def schema_option(fn: F) -> F:
    """The ``--schema`` option (PostgreSQL), falling back to ``STATEKEEPER_SCHEMA``."""
    return click.option(
        "--schema",
        envvar="STATEKEEPER_SCHEMA",
        show_envvar=True,
        default=None,
        metavar="NAME",
        help="PostgreSQL schema holding statekeeper's tables (created when missing).",
    )(fn)


def display_url(url: str | sa.URL) -> str:
    """Render ``url`` for messages, password hidden."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return str(url)


def out_console() -> Console:
    """A console on standard output (created per command, so test runners can capture it)."""
    return Console(soft_wrap=False, highlight=False)


def err_console() -> Console:
    """A console on standard error, for progress bars and notes."""
    return Console(stderr=True, highlight=False)


def _message(exc: BaseException) -> str | None:
    from alembic.util import CommandError

    if isinstance(exc, (StatekeeperError, CommandError, ValueError, ImportError)):
        return str(exc)
    if isinstance(exc, sa.exc.DBAPIError):
        detail = str(exc.orig).strip() if exc.orig is not None else str(exc)
        return f"the database refused or could not be reached: {detail}"
    return None


def reports_errors(fn: F) -> F:
    """Turn the errors a user can act on into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            message = _message(exc)
            if message is None:
                raise
            raise click.ClickException(message) from exc

    return wrapper  # type: ignore[return-value]
