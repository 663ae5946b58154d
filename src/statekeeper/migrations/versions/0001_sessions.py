"""Create statekeeper_sessions.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = ("statekeeper",)
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "statekeeper_sessions",
        sa.Column("app_name", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        # json, not jsonb: it keeps the text verbatim, so \u0000 and lone surrogates survive.
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint(
            "app_name", "user_id", "session_id", name="pk_statekeeper_sessions"
        ),
    )
    op.create_index("ix_statekeeper_sessions_expires_at", "statekeeper_sessions", ["expires_at"])
    op.create_index(
        "ix_statekeeper_sessions_user_updated",
        "statekeeper_sessions",
        ["app_name", "user_id", "updated_at", "session_id"],
    )
    op.create_index(
        "ix_statekeeper_sessions_app_updated",
        "statekeeper_sessions",
        ["app_name", "updated_at", "user_id", "session_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_statekeeper_sessions_app_updated", table_name="statekeeper_sessions")
    op.drop_index("ix_statekeeper_sessions_user_updated", table_name="statekeeper_sessions")
    op.drop_index("ix_statekeeper_sessions_expires_at", table_name="statekeeper_sessions")
    op.drop_table("statekeeper_sessions")
