"""What the ``statekeeper`` subcommands share: options, exit codes, error reporting, consoles."""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._sql.engine import safe_url
from ..errors import DatabaseUnavailableError, SchemaNotReadyError, StatekeeperError

__all__ = [
    "progress_bar",
    "DOCS_HINT",
    "EXIT_ERROR",
    "EXIT_NOT_MIGRATED",
    "EXIT_STATUS_HELP",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CommandFailed",
    "NotMigrated",
    "Unreachable",
    "err_console",
    "out_console",
    "reports_errors",
    "require_existing",
    "require_migrated",
    "schema_option",
    "url_option",
    "where",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status of an error the message explains (no such session, a refused statement, ...).
EXIT_ERROR = 1
#: Exit status of bad arguments: click's usage errors.
EXIT_USAGE = 2
#: Exit status when the database is not migrated to the revision this statekeeper needs.
EXIT_NOT_MIGRATED = 3
#: Exit status when the database cannot be reached (down, wrong host or port, refused).
EXIT_UNREACHABLE = 4

#: The exit statuses, for ``--help`` (``\b`` keeps click from rewrapping the list).
EXIT_STATUS_HELP = f"""\b
Exit status:
  0  success
  {EXIT_ERROR}  error, explained on one line of stderr (e.g. no such session)
  {EXIT_USAGE}  bad arguments (usage error)
  {EXIT_NOT_MIGRATED}  database not migrated: run `statekeeper db upgrade --url URL`
  {EXIT_UNREACHABLE}  database unreachable (down, wrong host or port, refused,
     or no such SQLite file)"""

#: Where the documentation is, for the end of ``statekeeper demo``.
DOCS_HINT = (
    "Documentation: README.md and docs/ of the source, or the site they build "
    "(pip install 'statekeeper[docs]' && mkdocs serve); `statekeeper --help` for the command."
)


class CommandFailed(click.ClickException):
    """A one-line error on stderr, exit status 1."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        """Keep ``message`` on one line."""
        super().__init__(" ".join(message.split()))


class NotMigrated(CommandFailed):
    """The database is not at the revision this statekeeper needs: exit status 3."""

    exit_code = EXIT_NOT_MIGRATED


class Unreachable(CommandFailed):
    """The database could not be reached: exit status 4."""

    exit_code = EXIT_UNREACHABLE


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


def where(url: str, schema: str | None) -> str:
    """The database as the user named it, for messages."""
    return safe_url(url) + (f" (schema {schema})" if schema else "")


def _sqlite_file(url: str) -> str | None:
    """The file a SQLite ``url`` names, or ``None`` (another database, or one in memory)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return None  # not a URL: the command's own connect reports it
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):  # a URI filename (uri=true): file:PATH or file:///PATH
        if parsed.query.get("mode") == "memory" or database.startswith("file::memory:"):
            return None
        database = database[len("file:") :]
        if database.startswith("//"):
            database = database[2:]
    return database


def require_existing(url: str) -> None:
    """Raise :class:`Unreachable` if ``url`` names a SQLite file that does not exist.

    The commands that read (and those that change sessions) call it before
    connecting: SQLite would create the missing file, an empty database.
    """
    path = _sqlite_file(url)
    if path is not None and not os.path.exists(path):
        raise Unreachable(
            f"could not reach the database {safe_url(url)}: the SQLite file "
            f"{os.path.abspath(path)} does not exist (check the path; only "
            "`statekeeper db upgrade` creates a database)"
        )


def require_migrated(url: str, schema: str | None) -> None:
    """Raise :class:`SchemaNotReadyError` naming ``url`` as typed unless the database is at head.

    A SQLite file that does not exist is reported as such (see :func:`require_existing`),
    never created.
    """
    from .. import migrations
    from .._sql.migrate import not_ready_message

    require_existing(url)
    message = not_ready_message(
        migrations.current(url, schema),
        where(url, schema),
        migrations.upgrade_command(url, schema),
        store_hint=False,
    )
    if message is not None:
        raise SchemaNotReadyError(message)


def out_console() -> Console:
    """A console on standard output (created per command, so test runners can capture it)."""
    return Console(soft_wrap=False, highlight=False)


def err_console() -> Console:
    """A console on standard error, for progress bars and notes."""
    return Console(stderr=True, highlight=False)


_DRIVER_MODULES = frozenset({"psycopg", "psycopg2", "sqlite3", "asyncpg", "aiosqlite", "pg8000"})
_CONNECTION_ERRORS = frozenset({"OperationalError", "InterfaceError"})


def _is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (rather than refused a statement)."""
    if isinstance(exc, DatabaseUnavailableError):
        return True
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        # No statement: raised while connecting; invalidated: the connection broke.
        return exc.statement is None or exc.connection_invalidated
    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection in time
        return True
    # A driver's own connect error, raised before SQLAlchemy wraps it.
    return type(exc).__module__.split(".")[0] in _DRIVER_MODULES and any(
        cls.__name__ in _CONNECTION_ERRORS for cls in type(exc).__mro__
    )


def _detail(exc: BaseException) -> str:
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        return str(exc.orig).strip()
    return str(exc).strip()


def _failure(exc: BaseException, url: str | None) -> CommandFailed | None:
    from alembic.util import CommandError

    if isinstance(exc, SchemaNotReadyError):
        return NotMigrated(str(exc))
    if _is_unreachable(exc):
        cause = exc.__cause__ if isinstance(exc, DatabaseUnavailableError) else None
        detail = _detail(cause if cause is not None else exc)
        named = f" {safe_url(url)}" if url else ""
        if url is not None and url.startswith("sqlite"):
            hint = "check that the file's folder exists and can be written"
        else:
            hint = "check that the server is running and the URL's host, port and user are right"
        return Unreachable(f"could not reach the database{named}: {detail} ({hint})")
    if isinstance(exc, (StatekeeperError, CommandError, ValueError, ImportError)):
        return CommandFailed(str(exc))
    if isinstance(exc, sa.exc.DBAPIError):
        return CommandFailed(f"the database refused the statement: {_detail(exc)}")
    return None


def reports_errors(fn: F) -> F:
    """Turn the errors a user can act on into one line on stderr and their exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            # The database a command works on: --url, or the target of an import.
            failure = _failure(exc, kwargs.get("url") or kwargs.get("to_url"))
            if failure is None:
                raise
            raise failure from exc

    return wrapper  # type: ignore[return-value]


def progress_bar(*, needed: bool = True) -> Progress:
    """A progress bar on standard error: drawn when ``needed`` and on a terminal, gone when done."""
    console = err_console()
    shown = needed and console.is_terminal
    if not shown:  # some rich releases (12) print a newline even for a disabled bar
        console = Console(file=io.StringIO())
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not shown,
    )
