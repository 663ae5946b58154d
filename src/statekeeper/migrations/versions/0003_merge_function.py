"""Add statekeeper_merge_json(), the JSON merge of a state save's upsert (PostgreSQL only).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

A save without ``expected_version`` is one upsert whose ``ON CONFLICT DO
UPDATE`` merges the stored state with the new modules. Written as a subquery
there, it is refused by a distributed PostgreSQL (Citus: "subqueries are not
supported within INSERT queries"); as a function call it is not, and an
IMMUTABLE function created on a Citus coordinator is created on its workers
too. SQLite merges with ``json_set`` and gets nothing.
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

# ``stored`` with its top-level keys named in ``delta_keys`` dropped and the
# members of ``delta`` (whose keys those are) appended. Only ``stored`` is
# taken apart: json_each hands back each kept member's value as the text
# stored (json, not jsonb: nothing is reformatted), and ``delta``'s text is
# spliced in whole. Nothing kept: ``delta``; an empty ``delta``: ``stored``.
#
# PL/pgSQL, not SQL: PostgreSQL plans a SQL function's query on every call that
# cannot inline it (and this one must not be inlined: the subquery would be
# back in the INSERT), while PL/pgSQL keeps the plan for the session. Measured:
# a 10 KB merge about 18% slower as a SQL function, the same as the subquery as
# PL/pgSQL.
_BODY = """
BEGIN RETURN coalesce(
    (SELECT ('{' || string_agg(to_json(o.key)::text || ':' || o.value::text, ',')
             || ',' || substr(delta::text, 2))::json
       FROM json_each(stored) AS o
      WHERE o.key <> ALL (delta_keys)
     HAVING count(*) > 0 AND delta::text <> '{}'),
    CASE WHEN delta::text = '{}' THEN stored ELSE delta END);
END
"""


def _name() -> str:
    """The function's name, in the schema of ``--schema`` when there is one."""
    schema = op.get_context().version_table_schema
    return "statekeeper_merge_json" if schema is None else f'"{schema}".statekeeper_merge_json'


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE FUNCTION {_name()}(stored json, delta json, delta_keys text[]) RETURNS json"
        f" LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $statekeeper${_BODY}$statekeeper$"
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION {_name()}(json, json, text[])")
