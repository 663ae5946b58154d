"""The ``statekeeper`` command."""

from __future__ import annotations

from pathlib import Path

import click

from ._version import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="statekeeper")
def main() -> None:
    """Keep AI-agent session state in SQL databases."""


@main.command()
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("statekeeper-demo.db"),
    show_default=True,
    help="SQLite file to write.",
)
def demo(path: Path) -> None:
    """Save a small agent's state to a SQLite file and load it back (no server needed)."""
    from ._demo import run

    run(path, echo=click.echo)
