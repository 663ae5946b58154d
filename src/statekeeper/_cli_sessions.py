"""``statekeeper sessions``: list, show, delete and purge stored sessions."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import click
import sqlalchemy as sa
from rich.highlighter import JSONHighlighter
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import migrations
from ._cli_common import err_console, out_console, reports_errors, schema_option, url_option
from ._schema import sessions as sessions_table
from .service import SessionService
from .sql import SqlSession

if TYPE_CHECKING:
    from ._records import SessionInfo, SessionRecord

__all__ = ["sessions"]

#: Sessions fetched per ``list_sessions`` page.
PAGE_SIZE = 100

F = TypeVar("F", bound=Callable[..., Any])

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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


def _progress(*, needed: bool) -> Progress:
    """A progress bar on standard error, shown only when ``needed`` and on a terminal."""
    console = err_console()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not (needed and console.is_terminal),
    )


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _sizes(
    engine: sa.Engine, app_name: str, items: Iterable[SessionInfo]
) -> dict[Any, tuple[int, int]]:
    """Bytes of each listed session's stored state (UTF-8 JSON text) and its event count."""
    wanted = {(i.user_id, i.session_id) for i in items}
    if not wanted:
        return {}
    t = sessions_table
    if engine.dialect.name == "postgresql":
        size: Any = sa.func.octet_length(sa.cast(t.c.state, sa.Text))
    else:  # SQLite: length() of a BLOB counts bytes, of TEXT characters
        size = sa.func.length(sa.cast(t.c.state, sa.LargeBinary))
    query = sa.select(t.c.user_id, t.c.session_id, size, t.c.event_count).where(
        t.c.app_name == app_name, t.c.session_id.in_(sorted({s for _, s in wanted}))
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {(u, s): (int(n), int(e)) for u, s, n, e in rows if (u, s) in wanted}


@click.group()
def sessions() -> None:
    """List, show, delete and purge stored sessions (for operators)."""


@sessions.command("ls")
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
@reports_errors
def ls(url: str, schema: str | None, app_name: str, user_id: str | None, limit: int) -> None:
    """List sessions, newest update first: ids, version, event count, times (UTC), state size."""
    found: list[SessionInfo] = []
    sizes: dict[Any, tuple[int, int]] = {}
    more = False
    with (
        SqlSession(url, app_name=app_name, schema=schema) as store,
        _progress(needed=limit > PAGE_SIZE) as progress,
    ):
        task = progress.add_task("listing sessions", total=limit)
        cursor: str | None = None
        while len(found) < limit:
            page = store.list_sessions(
                user_id, limit=min(PAGE_SIZE, limit - len(found)), cursor=cursor
            )
            found.extend(page.items)
            sizes.update(_sizes(store.engine, app_name, page.items))
            progress.update(task, completed=len(found))
            cursor = page.next_cursor
            if cursor is None:
                break
        more = cursor is not None

    whose = "every user" if user_id is None else f"user {user_id!r}"
    table = Table(
        title=f"{len(found)} session(s) of {whose} in app {app_name!r}", title_justify="left"
    )
    table.add_column("user", overflow="fold", min_width=4)
    table.add_column("session", overflow="fold", min_width=7)
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("updated (UTC)", no_wrap=True)
    table.add_column("expires (UTC)", no_wrap=True)
    table.add_column("bytes", justify="right", no_wrap=True)
    for info in found:
        size = sizes.get((info.user_id, info.session_id))
        table.add_row(
            Text(info.user_id),
            Text(info.session_id),
            str(info.version),
            "-" if size is None else str(size[1]),
            _when(info.updated_at),
            _when(info.expires_at),
            "-" if size is None else str(size[0]),
        )
    out_console().print(table)
    if more:
        err_console().print(f"More sessions exist: raise --limit (now {limit}) to see them.")


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


def _json_text(state: Any, *, compact: bool = False) -> str:
    """JSON that any terminal can print: lone surrogates stay ``\\udXXX`` escapes."""
    if compact:
        text = json.dumps(state, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(state, indent=2, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _event_time(seconds: float) -> str:
    try:
        stamp = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return repr(seconds)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.%f")


def _as_json(record: SessionRecord) -> dict[str, Any]:
    """The whole session as one JSON document (``--json``)."""
    return {
        "app_name": record.app_name,
        "user_id": record.user_id,
        "session_id": record.session_id,
        "version": record.version,
        "update_time": record.update_time,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "expires_at": None if record.expires_at is None else record.expires_at.isoformat(),
        "state": record.state,
        "events": [{"seq": e.seq, "timestamp": e.timestamp, "data": e.data} for e in record.events],
    }


@sessions.command()
@_one_session
@click.option(
    "--last",
    "last",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    metavar="N",
    help="Show the session's last N events (0: none).",
)
@click.option("--all-events", is_flag=True, help="Show every event (overrides --last).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the session (ids, version, times, state, events) as one JSON document.",
)
def show(
    session_id: str,
    url: str,
    schema: str | None,
    app_name: str,
    user_id: str,
    last: int,
    all_events: bool,
    as_json: bool,
) -> None:
    """Print a session's state as JSON, then its last events (without refreshing its expiry).

    The state is merged with the app's and the user's (keys ``app:k`` and
    ``user:k``) for sessions of the event-log service.
    """
    with SessionService(url, app_name=app_name, schema=schema) as service:
        record = service.get_session(session_id, user_id, recent=None if all_events else last)
    if record is None:
        raise click.ClickException(
            f"no session {session_id!r} of user {user_id!r} in app {app_name!r} "
            "(it does not exist or has expired); list them with `statekeeper sessions ls`"
        )
    console = out_console()
    if as_json:
        console.print(JSONHighlighter()(Text(_json_text(_as_json(record)))), soft_wrap=True)
        return
    console.print(JSONHighlighter()(Text(_json_text(record.state))), soft_wrap=True)
    if not record.events:
        return
    total = record.events[-1].seq
    table = Table(
        title=f"last {len(record.events)} of {total} event(s)", title_justify="left", expand=False
    )
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("event", overflow="fold")
    for event in record.events:
        text = _json_text(event.data, compact=True)
        table.add_row(str(event.seq), _event_time(event.timestamp), Text(text))
    console.print(table)


@sessions.command()
@_one_session
def rm(session_id: str, url: str, schema: str | None, app_name: str, user_id: str) -> None:
    """Delete a session."""
    with SqlSession(url, app_name=app_name, schema=schema) as store:
        deleted = store.delete_session(session_id, user_id)
    if not deleted:
        raise click.ClickException(
            f"no session {session_id!r} of user {user_id!r} in app {app_name!r} to delete "
            "(it does not exist or has expired)"
        )
    click.echo(f"Deleted session {session_id!r} of user {user_id!r} in app {app_name!r}.")


def _apps_with_expired(engine: sa.Engine) -> list[str]:
    t = sessions_table
    now = dt.datetime.now(dt.timezone.utc)
    query = sa.select(t.c.app_name).where(t.c.expires_at <= now).distinct().order_by(t.c.app_name)
    with engine.connect() as conn:
        return [str(name) for name in conn.execute(query).scalars()]


@sessions.command()
@url_option()
@schema_option
@_app_option(default=None)
@reports_errors
def purge(url: str, schema: str | None, app_name: str | None) -> None:
    """Delete expired sessions and print how many (of every app, or of --app APP)."""
    if app_name is not None:
        with SqlSession(url, app_name=app_name, schema=schema) as store:
            count = store.purge_expired()
        click.echo(f"Purged {count} expired session(s) of app {app_name!r}.")
        return
    with SqlSession(url, schema=schema) as store:
        migrations.check(store.engine, schema)
        apps = _apps_with_expired(store.engine)
        counts: dict[str, int] = {}
        with _progress(needed=len(apps) > 1) as progress:
            task = progress.add_task("purging apps", total=len(apps))
            for name in apps:
                with SqlSession(store.engine, app_name=name, schema=schema) as app_store:
                    counts[name] = app_store.purge_expired()
                progress.advance(task)
    for name, count in counts.items():
        click.echo(f"app {name!r}: {count}")
    click.echo(f"Purged {sum(counts.values())} expired session(s) in {len(counts)} app(s).")
