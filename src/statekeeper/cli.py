"""The ``statekeeper`` command: ``db`` (migrations), ``sessions`` (admin), ``import`` and ``demo``.

Every subcommand takes ``--url`` (or ``STATEKEEPER_URL``) and, for
PostgreSQL, ``--schema`` (or ``STATEKEEPER_SCHEMA``). Run
``statekeeper COMMAND --help`` for the details, or ``python -m statekeeper``.
"""

from __future__ import annotations

from pathlib import Path

import click

from ._cli.common import DOCS_HINT, EXIT_STATUS_HELP
from ._cli.db import db
from ._cli.imports import import_
from ._cli.sessions import sessions
from ._version import __version__

__all__ = ["main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_STATUS_HELP,
)
@click.version_option(__version__, prog_name="statekeeper")
def main() -> None:
    """Keep AI-agent session state in SQL databases.

    First run `statekeeper db upgrade --url URL` to create the tables. Every
    command takes --url (or STATEKEEPER_URL); `statekeeper COMMAND --help`
    tells more.
    """


main.add_command(db)
main.add_command(sessions)
main.add_command(import_)


@main.command(short_help="Save and load a small agent in SQLite (no server).")
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("statekeeper-demo.db"),
    show_default=True,
    help="SQLite file to write.",
)
def demo(path: Path) -> None:
    """Save a small agent's state to a SQLite file and load it back (no server needed)."""
    from ._cli.demo import run

    run(path, echo=click.echo)
    click.echo(DOCS_HINT)
