"""``statekeeper import``: bring AgentScope 1.x sessions into a statekeeper database."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import _importers
from ._cli_common import err_console, out_console, reports_errors, schema_option
from .sql import SqlSession

__all__ = ["import_"]

F = TypeVar("F", bound=Callable[..., Any])


def _target_options(fn: F) -> F:
    fn = click.option(
        "--overwrite", is_flag=True, help="Replace sessions that exist with another state."
    )(fn)
    fn = click.option("--dry-run", is_flag=True, help="Read and check everything; write nothing.")(
        fn
    )
    fn = click.option(
        "--app",
        "app_name",
        default="",
        metavar="APP",
        help='The target store\'s app_name (default "").',
    )(fn)
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
    items = _importers.agentscope_json(str(folder), split_user=split_user)
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
    from .redis import redis_module

    client = redis_module().Redis.from_url(redis_url)
    try:
        items = _importers.agentscope_redis(client, key_prefix)
        _run(items, to_url, schema, app_name, dry_run, overwrite)
    finally:
        client.close()


def _run(
    items: list[_importers.Item],
    to_url: str,
    schema: str | None,
    app_name: str,
    dry_run: bool,
    overwrite: bool,
) -> None:
    out = out_console()
    console = err_console()
    started = time.perf_counter()
    with (
        SqlSession(to_url, app_name=app_name, schema=schema) as store,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as bar,
    ):
        task = bar.add_task("importing", total=len(items))
        summary = _importers.import_items(
            items,
            store,
            dry_run=dry_run,
            overwrite=overwrite,
            progress=lambda n: bar.advance(task, n),
        )
    seconds = time.perf_counter() - started
    for line in _importers.iter_errors(summary):
        out.print(line, markup=False)
    verb = "would import" if dry_run else "imported"
    rate = summary.total / seconds if seconds > 0 else 0.0
    out.print(
        f"{verb} {summary.imported}, unchanged {summary.unchanged}, "
        f"skipped {len(summary.skipped)}, failed {len(summary.failed)} "
        f"of {summary.total} sessions in {seconds:.1f} s ({rate:.0f} sessions/s)"
        + (" (dry run: nothing written)" if dry_run else ""),
        markup=False,
    )
    if summary.failed:
        raise SystemExit(1)
