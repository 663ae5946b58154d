"""``python -m statekeeper``: the ``statekeeper`` command."""

from .cli import main

main(prog_name="statekeeper")
