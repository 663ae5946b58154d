"""Alembic environment for the repository layout; the history itself lives in the package.

``alembic.ini`` points ``version_locations`` at ``src/statekeeper/migrations/versions``
and ``script.py.mako`` here links to the package's template, so this runs the
history the installed wheel runs. This folder has no ``__init__.py`` on
purpose: it must never shadow the ``alembic`` package.
"""

from statekeeper.migrations._env import run_env

run_env()
