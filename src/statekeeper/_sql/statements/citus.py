"""Citus: how each of statekeeper's tables is spread over the nodes, and the statements that do it.

Every per-session and per-user statement filters on ``user_id``, so the
sessions, their events and the user state are distributed on it and
co-located (a user's rows share a shard, and a statement that joins them
runs on that shard alone). App state and the migrations' version table are
small and read by every user: reference tables, a copy on every node.
"""

from __future__ import annotations

from typing import Final, Literal

import sqlalchemy as sa

from ..schema import VERSION_TABLE, app_state, events, sessions, user_state

__all__ = [
    "ANCHOR",
    "CITUS_AVAILABLE",
    "CITUS_VERSION",
    "DISTRIBUTE",
    "DISTRIBUTE_FUNCTION",
    "FUNCTIONS",
    "FUNCTION_SPREAD",
    "DISTRIBUTION_COLUMN",
    "LAYOUT",
    "LOCK",
    "REFERENCE",
    "SEQUENTIAL",
    "TABLE_KIND",
    "TRUNCATE_LOCAL",
    "Kind",
]

Kind = Literal["distributed", "reference"]

DISTRIBUTION_COLUMN: Final = "user_id"

#: The table the other distributed tables are co-located with.
ANCHOR: Final = sessions.name

#: Each table statekeeper owns, anchor first: what it must be on Citus.
LAYOUT: Final[dict[str, Kind]] = {
    sessions.name: "distributed",
    events.name: "distributed",
    user_state.name: "distributed",
    app_state.name: "reference",
    VERSION_TABLE: "reference",
}

#: The citus extension's version in this database (no row: not created).
CITUS_VERSION = sa.text("SELECT extversion FROM pg_extension WHERE extname = 'citus'")

#: A row when the server offers the citus extension (``CREATE EXTENSION`` would work).
CITUS_AVAILABLE = sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'citus'")

#: Whether ``p_table`` (a quoted, maybe schema-qualified name) exists, and what Citus made of it:
#: ``citus_table_type`` is NULL for a plain table.
TABLE_KIND = sa.text(
    "SELECT to_regclass(:p_table) IS NOT NULL, t.citus_table_type, t.distribution_column "
    "FROM (SELECT 1) AS one "
    "LEFT JOIN citus_tables AS t ON t.table_name = to_regclass(:p_table)"
)

#: Distribute ``p_table`` on ``user_id``, co-located with ``p_with`` (``'default'`` for the anchor).
DISTRIBUTE = sa.text(
    f"SELECT create_distributed_table(:p_table, '{DISTRIBUTION_COLUMN}', colocate_with => :p_with)"
)

#: The SQL functions statekeeper's statements call (from revision 0003), by signature.
FUNCTIONS: Final = ("statekeeper_merge_json(json, json, text[])",)

#: Whether ``p_function`` (a quoted signature) exists, and whether Citus knows to
#: keep it on every node. A function created before ``CREATE EXTENSION citus`` is
#: on the coordinator only, until :data:`DISTRIBUTE_FUNCTION`.
FUNCTION_SPREAD = sa.text(
    "SELECT to_regprocedure(:p_function) IS NOT NULL, EXISTS (SELECT 1 FROM pg_dist_object "
    "WHERE classid = 'pg_proc'::regclass AND objid = to_regprocedure(:p_function))"
)

#: Create ``p_function`` on every node, now and on nodes added later.
DISTRIBUTE_FUNCTION = sa.text("SELECT create_distributed_function(:p_function)")

#: Make ``p_table`` a reference table: a copy on every node.
REFERENCE = sa.text("SELECT create_reference_table(:p_table)")

#: Drop the coordinator's own copy of rows that ``create_distributed_table`` moved to the shards.
TRUNCATE_LOCAL = sa.text("SELECT truncate_local_data_after_distributing_table(:p_table)")

#: The advisory lock ``statekeeper db upgrade`` takes: distribution and upgrades take turns.
LOCK = sa.text("SELECT pg_advisory_xact_lock(:p_key)")

#: One shard at a time within the transaction: a transaction that changes
#: distributed tables and then creates a reference table (or writes one) may
#: not have used several connections per node before.
SEQUENTIAL: Final = "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"
