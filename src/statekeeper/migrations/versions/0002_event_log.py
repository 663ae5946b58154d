"""Add the event log, app and user state, and the sessions' update time and event count.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from statekeeper._sql.migrate import follow_distribution

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _sessions_schema() -> str | None:
    """The schema of ``--schema``: Alembic's ALTER TABLE does not follow the schema map."""
    schema = op.get_context().version_table_schema
    return None if schema is None else str(schema)


def upgrade() -> None:
    with op.batch_alter_table("statekeeper_sessions", schema=_sessions_schema()) as batch:
        batch.add_column(sa.Column("update_time", sa.Double(), nullable=True))
        batch.add_column(
            sa.Column("event_count", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_table(
        "statekeeper_events",
        sa.Column("app_name", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.Double(), nullable=False),
        # json, not jsonb: it keeps the text verbatim, so \u0000 and lone surrogates survive.
        sa.Column("event", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_name", "user_id", "session_id", "seq", name="pk_statekeeper_events"
        ),
    )
    op.create_index(
        "ix_statekeeper_events_time",
        "statekeeper_events",
        ["app_name", "user_id", "session_id", "timestamp", "seq"],
    )
    op.create_table(
        "statekeeper_app_state",
        sa.Column("app_name", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("app_name", "key", name="pk_statekeeper_app_state"),
    )
    op.create_table(
        "statekeeper_user_state",
        sa.Column("app_name", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("app_name", "user_id", "key", name="pk_statekeeper_user_state"),
    )
    # On Citus, once `statekeeper db distribute` ran: the new tables too.
    follow_distribution(
        op.get_bind(),
        ["statekeeper_events", "statekeeper_user_state", "statekeeper_app_state"],
        _sessions_schema(),
    )


def downgrade() -> None:
    op.drop_table("statekeeper_user_state")
    op.drop_table("statekeeper_app_state")
    op.drop_index("ix_statekeeper_events_time", table_name="statekeeper_events")
    op.drop_table("statekeeper_events")
    with op.batch_alter_table("statekeeper_sessions", schema=_sessions_schema()) as batch:
        batch.drop_column("event_count")
        batch.drop_column("update_time")
