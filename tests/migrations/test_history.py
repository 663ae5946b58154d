"""statekeeper's migration history: shape, round trips, and parity with the code's tables."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError

from statekeeper import SqlSession, migrations
from statekeeper._sql.schema import HEAD_REVISION, VERSION_TABLE, metadata
from statekeeper.migrations._env import ours


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _diffs(url: str, target: sa.MetaData = metadata) -> list[object]:
    """What autogenerate would change to make the database match ``target``."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": ours, "compare_type": True}
            )
            return list(compare_metadata(context, target))
    finally:
        engine.dispose()


def test_head_revision_in_code_is_the_history_head() -> None:
    assert migrations.head() == HEAD_REVISION


def test_history_is_one_labelled_branch() -> None:
    scripts = migrations.revisions()
    assert scripts[0].revision == HEAD_REVISION
    assert scripts[-1].down_revision is None
    assert "statekeeper" in scripts[-1].branch_labels
    for newer, older in itertools.pairwise(scripts):
        assert newer.down_revision == older.revision  # linear: no merges, no second head
    ids = [s.revision for s in scripts]
    assert all(a > b for a, b in itertools.pairwise(ids)), "ids must sort in order"


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    migrations.upgrade(empty_url)
    assert migrations.current(empty_url) == HEAD_REVISION
    assert {"statekeeper_sessions", VERSION_TABLE} <= _tables(empty_url)

    migrations.downgrade(empty_url, "base")
    assert migrations.current(empty_url) is None
    assert "statekeeper_sessions" not in _tables(empty_url)

    migrations.upgrade(empty_url)
    assert migrations.current(empty_url) == HEAD_REVISION
    with SqlSession(empty_url) as store:
        store.set_state("s1", {"a": 1})
        assert store.get_state("s1") == {"a": 1}


def test_upgrade_twice_is_a_no_op(empty_url: str) -> None:
    migrations.upgrade(empty_url)
    with SqlSession(empty_url) as store:
        store.set_state("s1", {"kept": True})
    migrations.upgrade(empty_url)
    with SqlSession(empty_url) as store:
        assert store.get_state("s1") == {"kept": True}


def test_migrated_database_matches_the_code(empty_url: str) -> None:
    migrations.upgrade(empty_url)
    assert _diffs(empty_url) == []
    # The same comparison through Alembic's own `alembic check` on the packaged history.
    command.check(migrations.config(empty_url))


def test_parity_check_catches_drift(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url)
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["statekeeper_sessions"].append_column(sa.Column("extra", sa.Integer()))
    diffs = _diffs(sqlite_url, drifted)
    assert [d[0] for d in diffs if isinstance(d, tuple)] == ["add_column"]


def test_alembic_check_fails_on_an_unmigrated_database(sqlite_url: str) -> None:
    with pytest.raises(CommandError, match="not up to date"):
        command.check(migrations.config(sqlite_url))
