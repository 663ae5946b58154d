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
from .sql import SqlSession

if TYPE_CHECKING:
    from ._records import SessionInfo

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


def _sizes(engine: sa.Engine, app_name: str, items: Iterable[SessionInfo]) -> dict[Any, int]:
    """Bytes of each listed session's stored state (UTF-8 JSON text), by (user, session)."""
    wanted = {(i.user_id, i.session_id) for i in items}
    if not wanted:
        return {}
    t = sessions_table
    if engine.dialect.name == "postgresql":
        size: Any = sa.func.octet_length(sa.cast(t.c.state, sa.Text))
    else:  # SQLite: length() of a BLOB counts bytes, of TEXT characters
        size = sa.func.length(sa.cast(t.c.state, sa.LargeBinary))
    query = sa.select(t.c.user_id, t.c.session_id, size).where(
        t.c.app_name == app_name, t.c.session_id.in_(sorted({s for _, s in wanted}))
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {(u, s): int(n) for u, s, n in rows if (u, s) in wanted}


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
    """List sessions, newest update first: ids, version, times (UTC) and state size."""
    found: list[SessionInfo] = []
    sizes: dict[Any, int] = {}
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
    table.add_column("updated (UTC)", no_wrap=True)
    table.add_column("expires (UTC)", no_wrap=True)
    table.add_column("size (bytes)", justify="right", no_wrap=True)
    for info in found:
        size = sizes.get((info.user_id, info.session_id))
        table.add_row(
            Text(info.user_id),
            Text(info.session_id),
            str(info.version),
            _when(info.updated_at),
            _when(info.expires_at),
            "-" if size is None else str(size),
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


def _json_text(state: Any) -> str:
    """Pretty JSON that any terminal can print: lone surrogates stay ``\\udXXX`` escapes."""
    text = json.dumps(state, indent=2, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@sessions.command()
@_one_session
def show(session_id: str, url: str, schema: str | None, app_name: str, user_id: str) -> None:
    """Print a session's state as JSON (without refreshing its expiry)."""
    with SqlSession(url, app_name=app_name, schema=schema) as store:
        state = store.get_state(session_id, user_id)
    if state is None:
        raise click.ClickException(
            f"no session {session_id!r} of user {user_id!r} in app {app_name!r} "
            "(it does not exist or has expired); list them with `statekeeper sessions ls`"
        )
    out_console().print(JSONHighlighter()(Text(_json_text(state))), soft_wrap=True)


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
