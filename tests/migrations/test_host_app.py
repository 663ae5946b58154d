"""statekeeper's history inside a host app that has its own Alembic history and database."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.config import main as alembic_main
from click.testing import CliRunner

from statekeeper import SqlSession, migrations
from statekeeper._sql.schema import HEAD_REVISION, VERSION_TABLE
from statekeeper.cli import main

if TYPE_CHECKING:
    from pathlib import Path

APP_ENV = """
import sqlalchemy as sa
from alembic import context

from statekeeper.migrations import include_object

metadata = sa.MetaData()
sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("item", sa.String(50)),
)

config = context.config
# -x filter=off shows what autogenerate would do without statekeeper's filter.
use_filter = context.get_x_argument(as_dictionary=True).get("filter") != "off"
engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object if use_filter else None,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""

APP_REVISION = '''
"""Create orders."""
import sqlalchemy as sa
from alembic import op

revision = "a1b2c3"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "orders", sa.Column("id", sa.Integer, primary_key=True), sa.Column("item", sa.String(50))
    )


def downgrade():
    op.drop_table("orders")
'''


def _host_app(root: Path, url: str) -> Path:
    """Write a small Alembic project with its own table and revision; return its alembic.ini."""
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(APP_ENV)
    (root / "migrations" / "versions" / "a1b2c3_orders.py").write_text(APP_REVISION)
    ini = root / "alembic.ini"
    ini.write_text(
        textwrap.dedent(
            f"""\
            [alembic]
            script_location = %(here)s/migrations
            sqlalchemy.url = {url}

            # statekeeper's packaged history: alembic --name statekeeper upgrade head
            [statekeeper]
            script_location = statekeeper:migrations
            sqlalchemy.url = {url}
            """
        )
    )
    return ini


def _app_versions(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _upgrade_ours(way: str, ini: Path, url: str) -> None:
    if way == "alembic --name statekeeper":
        alembic_main(["-c", str(ini), "--name", "statekeeper", "upgrade", "head"])
    else:
        result = CliRunner().invoke(main, ["db", "upgrade", "--url", url])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("way", ["statekeeper db", "alembic --name statekeeper"])
def test_both_histories_live_in_one_database(
    empty_url: str, tmp_path: Path, way: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = empty_url
    ini = _host_app(tmp_path / "app", url)
    app = Config(str(ini))

    command.upgrade(app, "head")
    _upgrade_ours(way, ini, url)
    assert _app_versions(url) == ["a1b2c3"]  # the app's version table: untouched
    assert migrations.current(url) == HEAD_REVISION
    assert {"orders", "alembic_version", "statekeeper_sessions", VERSION_TABLE} <= _tables(url)
    with SqlSession(url) as store:
        store.set_state("s1", {"a": 1})

    # The app's `alembic check` leaves our tables alone with include_object...
    alembic_main(["-c", str(ini), "check"])
    # ... and would drop them without it.
    with pytest.raises(SystemExit):
        alembic_main(["-c", str(ini), "-x", "filter=off", "check"])
    captured = capsys.readouterr()
    assert "remove_table" in captured.out + captured.err

    # Each history upgrades again without seeing the other's revisions.
    command.upgrade(app, "head")
    _upgrade_ours(way, ini, url)
    assert _app_versions(url) == ["a1b2c3"]

    # Our downgrade removes our tables only.
    migrations.downgrade(url, "base")
    tables = _tables(url)
    assert "orders" in tables
    assert "statekeeper_sessions" not in tables
    assert _app_versions(url) == ["a1b2c3"]


def test_statekeeper_section_reads_the_url_from_the_environment(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text("[statekeeper]\nscript_location = statekeeper:migrations\n")
    monkeypatch.setenv("STATEKEEPER_URL", sqlite_url)
    alembic_main(["-c", str(ini), "--name", "statekeeper", "upgrade", "head"])
    assert migrations.current(sqlite_url) == HEAD_REVISION
