"""Alembic environment of statekeeper's migrations (loaded by Alembic, not imported)."""

from statekeeper.migrations._env import run_env

run_env()
