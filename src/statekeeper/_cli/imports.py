"""``statekeeper import``: AgentScope 1.x and Google ADK sessions into a statekeeper database."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .._importers.agentscope import Item, import_items, read_folder, read_redis
from .._importers.report import Summary, iter_errors
from .._sql.database import Database
from .._sql.engine import safe_url
from ..errors import DatabaseUnavailableError
from .common import (
    Unreachable,
    out_console,
    progress_bar,
    reports_errors,
    schema_option,
)

__all__ = ["import_"]

F = TypeVar("F", bound=Callable[..., Any])


def _write_options(fn: F) -> F:
    """``--to``, ``--schema``, ``--dry-run`` and ``--overwrite``: where and how to write."""
    fn = click.option(
        "--overwrite", is_flag=True, help="Replace sessions that exist with another state."
    )(fn)
    fn = click.option("--dry-run", is_flag=True, help="Read and check everything; write nothing.")(
        fn
    )
    fn = schema_option(fn)
    return click.option(
        "--to",
        "to_url",
        envvar="STATEKEEPER_URL",
        show_envvar=True,
        required=True,
        metavar="URL",
        help="The statekeeper database to import into (run `statekeeper db upgrade` first).",
    )(fn)


def _target_options(fn: F) -> F:
    """The write options and ``--app``, the target store's app_name."""
    fn = click.option(
        "--app",
        "app_name",
        default="",
        metavar="APP",
        help='The target store\'s app_name (default "").',
    )(fn)
    return _write_options(fn)


@click.group("import")
def import_() -> None:
    """Import sessions from other stores into a statekeeper database.

    A session is created only where it is absent; one already holding the
    same state is counted as unchanged, so running an import twice changes
    nothing. Every written state is read back and compared with the source.
    Unreadable sessions are reported by name and the rest go on; the exit
    status is 1 if any failed.
    """


@import_.command("agentscope-json")
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--split-user",
    is_flag=True,
    help="File names are USER_SESSION.json (AgentScope's name with a user_id): split them "
    'at the first underscore. Default: the whole name is the session id of user "".',
)
@_target_options
@reports_errors
def agentscope_json(
    folder: Path,
    split_user: bool,
    to_url: str,
    schema: str | None,
    app_name: str,
    dry_run: bool,
    overwrite: bool,
) -> None:
    """Import the *.json files of an AgentScope JSONSession folder."""
    items = read_folder(str(folder), split_user=split_user)
    _run(items, to_url, schema, app_name, dry_run, overwrite)


@import_.command("agentscope-redis")
@click.argument("redis_url", metavar="REDIS_URL")
@click.option(
    "--key-prefix", default="", metavar="PREFIX", help="The AgentScope RedisSession's key_prefix."
)
@_target_options
@reports_errors
def agentscope_redis(
    redis_url: str,
    key_prefix: str,
    to_url: str,
    schema: str | None,
    app_name: str,
    dry_run: bool,
    overwrite: bool,
) -> None:
    """Import the keys of an AgentScope RedisSession (found with SCAN, never KEYS)."""
    from .._redis_ops import redis_module, unavailable

    redis = redis_module()
    client = redis.Redis.from_url(redis_url)
    try:
        try:
            items = read_redis(client, key_prefix)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Unreachable(
                f"the AgentScope Redis source: {unavailable(safe_url(redis_url), exc)}"
            ) from exc
        _run(items, to_url, schema, app_name, dry_run, overwrite)
    finally:
        client.close()


@import_.command("adk-database")
@click.argument("source_url", metavar="URL")
@click.option(
    "--app",
    "app_name",
    default=None,
    metavar="APP",
    help="Import only this ADK app (default: every app). Each ADK app goes into the "
    "statekeeper app of the same name.",
)
@_write_options
@reports_errors
def adk_database(
    source_url: str,
    app_name: str | None,
    to_url: str,
    schema: str | None,
    dry_run: bool,
    overwrite: bool,
) -> None:
    """Import a Google ADK DatabaseSessionService database: sessions, events, app and user state.

    URL is the database's SQLAlchemy URL, as given to DatabaseSessionService
    (sqlite+aiosqlite:///adk.db, postgresql+asyncpg://user@host/db, or the same
    without the driver); it is only read. ADK's schema version 1 is read
    (ADK 1.22 and later, every 2.x). Each session comes with its events in the
    order ADK returns them, timestamps exact; app: and user: state go to the
    statekeeper app's and user's state.
    """
    from .._importers.adk import import_database
    from .._importers.adk_source import AdkDatabase

    out = out_console()
    started = time.perf_counter()
    try:
        source = AdkDatabase(source_url)
    except DatabaseUnavailableError as exc:
        raise Unreachable(f"the ADK database: {exc}") from exc
    try:
        with progress_bar() as bar:
            task = bar.add_task("importing", total=0)  # the count comes once the target is ready
            outcome = import_database(
                source,
                to_url,
                schema=schema,
                app=app_name,
                dry_run=dry_run,
                overwrite=overwrite,
                started=lambda total: bar.update(task, total=total),
                progress=lambda n: bar.advance(task, n),
            )
    finally:
        source.close()
    seconds = time.perf_counter() - started
    for summary in (outcome.scopes, outcome.sessions):
        for line in iter_errors(summary):
            out.print(line, markup=False)
    scopes = outcome.scopes
    verb = "would import" if dry_run else "imported"
    out.print(
        f"app and user states: {verb} {scopes.imported}, unchanged {scopes.unchanged}, "
        f"skipped {len(scopes.skipped)}, failed {len(scopes.failed)} of {scopes.total}",
        markup=False,
    )
    _print_summary(outcome.sessions, seconds, dry_run)
    if outcome.failed:
        raise SystemExit(1)


def _run(
    items: list[Item],
    to_url: str,
    schema: str | None,
    app_name: str,
    dry_run: bool,
    overwrite: bool,
) -> None:
    started = time.perf_counter()
    with (
        contextlib.closing(Database(to_url, schema=schema, kind="SqlSession")) as database,
        progress_bar() as bar,
    ):
        task = bar.add_task("importing", total=len(items))
        summary = import_items(
            items,
            database,
            app_name,
            dry_run=dry_run,
            overwrite=overwrite,
            progress=lambda n: bar.advance(task, n),
        )
    seconds = time.perf_counter() - started
    out = out_console()
    for line in iter_errors(summary):
        out.print(line, markup=False)
    _print_summary(summary, seconds, dry_run)
    if summary.failed:
        raise SystemExit(1)


def _print_summary(summary: Summary, seconds: float, dry_run: bool) -> None:
    """The last line: what happened to the sessions, how long it took."""
    verb = "would import" if dry_run else "imported"
    rate = summary.total / seconds if seconds > 0 else 0.0
    out_console().print(
        f"{verb} {summary.imported}, unchanged {summary.unchanged}, "
        f"skipped {len(summary.skipped)}, failed {len(summary.failed)} "
        f"of {summary.total} sessions in {seconds:.1f} s ({rate:.0f} sessions/s)"
        + (" (dry run: nothing written)" if dry_run else ""),
        markup=False,
    )
