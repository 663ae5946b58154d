"""Alembic environment for the repository layout; the history itself lives in the package.

``versions/`` and ``script.py.mako`` here link to ``src/statekeeper/migrations``,
which is what the installed wheel runs. This folder has no ``__init__.py`` on
purpose: it must never shadow the ``alembic`` package.
"""

from statekeeper.migrations._env import run_env

run_env()
