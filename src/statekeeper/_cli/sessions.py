"""``statekeeper sessions``: list, show, delete and purge stored sessions.

On a terminal ``ls`` draws a table; piped or redirected it prints plain
tab-separated lines; with ``--json`` it prints one JSON document whose keys
do not change between releases (new keys may be added). ``ls`` and ``show``
read through ``_sql.database.Database``, whose reads never refresh an expiry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.highlighter import JSONHighlighter
from rich.progress import (
    Progress,
    TaskID,
)
from rich.table import Table
from rich.text import Text

from .._rules import validate_id
from .._sql.database import Database
from .._sql.statements.store import PURGE_BATCH
from .common import (
    EXIT_STATUS_HELP,
    CommandFailed,
    err_console,
    out_console,
    progress_bar,
    reports_errors,
    require_migrated,
    schema_option,
    url_option,
)

if TYPE_CHECKING:
    from .._records import EventRecord, SessionInfo
    from .._sql.ops.inspect import ListedSession, SessionView

__all__ = ["session_record", "sessions"]

#: Sessions fetched per ``list_sessions`` page.
PAGE_SIZE = 100
#: Events ``show`` prints unless told otherwise: the last ones.
DEFAULT_EVENTS = 20

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def _app_option(default: str | None = "") -> Callable[[F], F]:
    return click.option(
        "--app",
        "app_name",
        default=default,
        metavar="APP",
        help="The store's app_name." + (' Default: "" (the default app).' if default == "" else ""),
    )


def _user_option(help_text: str, default: str | None) -> Callable[[F], F]:
    return click.option("--user", "user_id", default=default, metavar="USER", help=help_text)


def _json_option(help_text: str) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.timezone.utc).isoformat()


def session_record(info: SessionInfo, size: int, event_count: int) -> dict[str, Any]:
    """One session of ``sessions ls --json`` (and the head of ``sessions show --json``).

    The keys are part of the command's interface: new ones may be added, none
    is renamed or removed. Times are ISO 8601 in UTC.
    """
    return {
        "app_name": info.app_name,
        "user_id": info.user_id,
        "session_id": info.session_id,
        "version": info.version,
        "created_at": _iso(info.created_at),
        "updated_at": _iso(info.updated_at),
        "expires_at": _iso(info.expires_at),
        "size_bytes": size,
        "event_count": event_count,
    }


def _print_json(document: Any) -> None:
    # ASCII: lone surrogates stay \udXXX escapes, any terminal or pipe takes it.
    click.echo(json.dumps(document, indent=2, ensure_ascii=True))


def _plain(value: str) -> str:
    """A cell of plain output: tabs, newlines and backslashes escaped, one line per row."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), value)


@contextlib.contextmanager
def _open(url: str, schema: str | None, app_name: str) -> Iterator[Database]:
    """The database the user named, refusing an unmigrated one with the command."""
    require_migrated(url, schema)
    database = Database(url, schema=schema, kind="SqlSession")
    try:
        database.store(app_name)  # an invalid --app is refused before anything is read
        yield database
    finally:
        database.close()


@click.group(short_help="List, show, delete and purge stored sessions.")
def sessions() -> None:
    """List, show, delete and purge stored sessions (for operators)."""


@sessions.command("ls", short_help="List sessions, newest update first.", epilog=EXIT_STATUS_HELP)
@url_option()
@schema_option
@_app_option()
@_user_option("Only this user's sessions (default: every user's).", None)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many sessions, newest update first.",
)
@click.option(
    "--cursor",
    default=None,
    metavar="CURSOR",
    help="Start after the sessions already shown: the cursor printed by the previous page.",
)
@_json_option('Print one JSON document: {"app_name", "user_id", "sessions": [...], "next_cursor"}.')
@reports_errors
def ls(
    url: str,
    schema: str | None,
    app_name: str,
    user_id: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List sessions, newest update first: ids, version, times (UTC), state size, event count.

    On a terminal, a table; piped or redirected, tab-separated lines under a
    header; with --json, one JSON document. When more sessions exist than
    --limit, the cursor of the next page is printed (on stderr, or as
    "next_cursor" in JSON): pass it as --cursor.
    """
    if user_id is not None:
        validate_id(user_id, "user_id", allow_empty=True)
    found: list[ListedSession] = []
    with _open(url, schema, app_name) as db, progress_bar(needed=limit > PAGE_SIZE) as progress:
        task = progress.add_task("listing sessions", total=limit)
        while len(found) < limit:
            wanted = min(PAGE_SIZE, limit - len(found))
            page = db.list_sessions(app_name, user_id, wanted, cursor)
            found.extend(page.items)
            progress.update(task, completed=len(found))
            cursor = page.next_cursor
            if cursor is None:
                break

    records = [session_record(s.info, s.size_bytes, s.event_count) for s in found]
    if as_json:
        _print_json(
            {"app_name": app_name, "user_id": user_id, "sessions": records, "next_cursor": cursor}
        )
        return
    console = out_console()
    columns = (
        "user",
        "session",
        "version",
        "updated (UTC)",
        "expires (UTC)",
        "size (bytes)",
        "events",
    )
    rows = [
        (
            s.info.user_id,
            s.info.session_id,
            str(s.info.version),
            _when(s.info.updated_at),
            _when(s.info.expires_at),
            str(s.size_bytes),
            str(s.event_count),
        )
        for s in found
    ]
    if console.is_terminal:
        whose = "every user" if user_id is None else f"user {user_id!r}"
        table = Table(
            title=f"{len(found)} session(s) of {whose} in app {app_name!r}", title_justify="left"
        )
        for name in columns:
            numeric = name in ("version", "size (bytes)", "events")
            table.add_column(
                name,
                justify="right" if numeric else "left",
                overflow="fold",
                no_wrap=name not in ("user", "session"),
            )
        for row in rows:
            table.add_row(Text(row[0]), Text(row[1]), *row[2:])
        console.print(table)
    else:
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(_plain(cell) for cell in row))
    if cursor is not None:
        err_console().print(
            f"More sessions exist: see the next page with --cursor {cursor}", soft_wrap=True
        )


def _one_session(command: F) -> F:
    """Give a command the arguments that name one session: its id, URL, schema, app and user."""
    for decorate in reversed(
        (
            click.argument("session_id"),
            url_option(),
            schema_option,
            _app_option(),
            _user_option('The session\'s user. Default: "".', ""),
            reports_errors,
        )
    ):
        command = decorate(command)
    return command


def _json_text(value: Any, *, indent: int | None = 2) -> str:
    """JSON any terminal can print (lone surrogates stay ``\\udXXX``); ``indent=None``: one line."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _missing(session_id: str, user_id: str, app_name: str, what: str = "") -> CommandFailed:
    return CommandFailed(
        f"no session {session_id!r} of user {user_id!r} in app {app_name!r}{what} "
        "(it does not exist or has expired); list them with `statekeeper sessions ls`"
    )


def _event_count(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """``--events``: how many of the last events to print (``None``: all), or a usage error."""
    if value.strip().lower() == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number of events nor 'all'") from None
    if count < 0:
        raise click.BadParameter(f"{value!r} is negative: pass 0 for no events, or 'all'")
    return count


def _event_time(timestamp: float) -> dt.datetime | None:
    """The event's timestamp as an aware UTC datetime, or ``None`` if no datetime holds it."""
    try:
        return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _event_record(event: EventRecord) -> dict[str, Any]:
    """One event of ``sessions show --json``: its seq, exact timestamp, the time in UTC, data."""
    stamp = _event_time(event.timestamp)
    return {
        "seq": event.seq,
        "timestamp": event.timestamp,
        "time": None if stamp is None else stamp.isoformat(),
        "data": event.data,
    }


def _event_line(event: EventRecord) -> tuple[str, str, str]:
    """The cells of an event's line: seq, UTC time to the microsecond, one-line JSON."""
    stamp = _event_time(event.timestamp)
    when = (
        repr(event.timestamp)
        if stamp is None
        else stamp.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    )
    return str(event.seq), when, _json_text(event.data, indent=None)


def _events_heading(view: SessionView) -> str:
    shown, total = len(view.events), view.event_count
    if shown == total:
        return f"{total} event(s), oldest first, times in UTC:"
    return (
        f"the last {shown} of {total} event(s), oldest first, times in UTC "
        "(--events all prints every one):"
    )


def _print_view(view: SessionView, asked: int | None) -> None:
    """Print the state; for an event-log session, then its app, user state and events too."""
    console = out_console()
    terminal = console.is_terminal
    highlight = JSONHighlighter()

    def json_block(value: Any) -> None:
        if terminal:
            console.print(highlight(Text(_json_text(value))), soft_wrap=True)
        else:
            click.echo(_json_text(value))

    def heading(text: str) -> None:
        click.echo()
        if terminal:
            console.print(Text(text, style="bold"), soft_wrap=True)
        else:
            click.echo(text)

    json_block(view.state)
    if not view.event_log:  # a store's session: its state alone, as show always printed it
        return
    app, user = view.info.app_name, view.info.user_id
    if view.app_state:
        heading(f"app state (app: keys, shared by every session of app {app!r}):")
        json_block(view.app_state)
    if view.user_state:
        heading(f"user state (user: keys, shared by every session of user {user!r}):")
        json_block(view.user_state)
    if asked == 0:
        return
    if not view.events:
        if terminal:  # piped, nothing: a script sees no events as no lines
            console.print(Text("\nno events", style="dim"))
        return
    heading(_events_heading(view))
    lines = [_event_line(event) for event in view.events]
    if not terminal:
        for line in lines:
            click.echo("\t".join(line))
        return
    width = max(len(seq) for seq, _, _ in lines)
    for seq, when, text in lines:
        console.print(Text(f"{seq:>{width}}  {when}  ") + highlight(Text(text)), soft_wrap=True)


@sessions.command(
    short_help="Print a session's state and its last events.", epilog=EXIT_STATUS_HELP
)
@_one_session
@click.option(
    "--events",
    "recent",
    default=str(DEFAULT_EVENTS),
    show_default=True,
    metavar="N|all",
    callback=_event_count,
    help="Print the session's last N events (0: none), or all of them.",
)
@_json_option(
    'Print one JSON document: the session\'s ids, "version", times, "size_bytes" and '
    '"event_count" (as in ls --json), its "state", "app_state", "user_state" and "events".'
)
def show(
    session_id: str,
    url: str,
    schema: str | None,
    app_name: str,
    user_id: str,
    recent: int | None,
    as_json: bool,
) -> None:
    """Print a session's state as JSON, then its last events (by default the last 20).

    A read: it does not refresh the session's expiry. Each event is one line:
    its seq, its time in UTC and its JSON document (tab-separated when piped).
    For a session of the event-log service, the app's and the user's shared
    state (its app: and user: keys) come between the state and the events
    when not empty. --events 0 prints no events. With --json, one JSON
    document holding all of it.
    """
    validate_id(user_id, "user_id", allow_empty=True)
    validate_id(session_id, "session_id", allow_empty=False)
    with _open(url, schema, app_name) as db:
        view = db.read_session(app_name, user_id, session_id, recent)
    if view is None:
        raise _missing(session_id, user_id, app_name)
    if not as_json:
        _print_view(view, recent)
        return
    _print_json(
        {
            **session_record(view.info, view.size_bytes, view.event_count),
            "state": view.state,
            "app_state": view.app_state,
            "user_state": view.user_state,
            "events": [_event_record(event) for event in view.events],
        }
    )


@sessions.command(short_help="Delete a session.", epilog=EXIT_STATUS_HELP)
@_one_session
def rm(session_id: str, url: str, schema: str | None, app_name: str, user_id: str) -> None:
    """Delete a session."""
    with _open(url, schema, app_name) as db:
        deleted = db.delete_session(app_name, user_id, session_id)
    if not deleted:
        raise _missing(session_id, user_id, app_name, " to delete")
    click.echo(f"Deleted session {session_id!r} of user {user_id!r} in app {app_name!r}.")


def _advance(progress: Progress, task: TaskID, done: int) -> Callable[[int], None]:
    """Move the bar to ``done`` plus the running count of the app being purged."""
    return lambda count: progress.update(task, completed=done + count)


@sessions.command(short_help="Delete expired sessions and count them.", epilog=EXIT_STATUS_HELP)
@url_option()
@schema_option
@_app_option(default=None)
@reports_errors
def purge(url: str, schema: str | None, app_name: str | None) -> None:
    """Delete expired sessions (of every app, or of --app APP) and print how many.

    Deletes in batches of 1000, each its own short transaction, so a purge of
    a large backlog never holds locks for long on a busy table. A progress bar
    is shown on a terminal for more than one batch.
    """
    with _open(url, schema, app_name or "") as db:
        apps = [app_name] if app_name is not None else None
        show_bar = err_console().is_terminal
        expected: dict[str, int] = {}
        if show_bar or apps is None:
            expected = db.expired_counts(app_name)
        apps = apps if apps is not None else list(expected)
        counts: dict[str, int] = {}
        total = sum(expected.values())
        with progress_bar(needed=total > PURGE_BATCH) as progress:
            task = progress.add_task("purging expired sessions", total=total)
            for name in apps:
                done = sum(counts.values())
                counts[name] = db.purge_expired(name, _advance(progress, task, done))
    if app_name is not None:
        click.echo(f"Purged {counts[app_name]} expired session(s) of app {app_name!r}.")
        return
    for name, count in counts.items():
        click.echo(f"app {name!r}: {count}")
    click.echo(f"Purged {sum(counts.values())} expired session(s) in {len(counts)} app(s).")
