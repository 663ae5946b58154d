"""The operations ``statekeeper import`` writes sessions with, free of I/O.

:func:`import_states` writes a batch of store sessions (AgentScope's);
:func:`import_sessions` and :func:`import_scopes` event-log sessions and
scoped states (ADK's).

Like the service's own operations (``ops.service``) they yield
:class:`~statekeeper._sql.ops.store.Call` steps and ``BEGIN`` / ``COMMIT``, driven by
``driver.run``; ``core.ServiceCore`` builds them. A batch is one
transaction: a session arrives whole, with its event log, and a scoped state
whole, each created only where it is absent, left alone where it is equal.
The statements are in ``statements.imports``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from ... import codec
from ...errors import ConflictError
from ..statements.imports import import_statements
from .service import session_params
from .store import BEGIN, COMMIT, Call, Context, Op, set_state

__all__ = [
    "READ_BACK_DIFFERS",
    "Own",
    "Verdict",
    "WholeScope",
    "WholeSession",
    "import_scopes",
    "import_sessions",
    "import_states",
]


#: What an import found: the session (or scoped state) was absent and is now
#: written, was already there equal, or is there with other contents.
Verdict = Literal["imported", "unchanged", "differs"]
#: What :func:`import_states` says of a session written whose state read back is another.
READ_BACK_DIFFERS = "the state read back differs from the source (written meanwhile?)"
#: A session's own state (no scoped keys) and its ``(timestamp, document)`` events.
Own = tuple[dict[str, Any], list[tuple[float, Any]]]


@dataclass(frozen=True, slots=True)
class WholeSession:
    """A session to import whole: its key, own state and events (decoded and encoded), times."""

    user_id: str
    session_id: str
    state: dict[str, Any]
    state_text: str
    events: tuple[tuple[float, dict[str, Any], str], ...]  # timestamp, document, its text
    created_at: dt.datetime
    updated_at: dt.datetime
    update_time: float

    def own(self) -> Own:
        """The own state and ``(timestamp, document)`` events, as an import compares them."""
        return self.state, [(ts, doc) for ts, doc, _ in self.events]


@dataclass(frozen=True, slots=True)
class WholeScope:
    """A scoped state to import whole: the app's (``user_id`` None) or a user's, unprefixed."""

    user_id: str | None
    state: dict[str, Any]
    encoded: dict[str, str]


def _key_params(ctx: Context, keys: list[tuple[str, str]]) -> dict[str, Any]:
    if ctx.dialect == "postgresql":
        return {"p_users": [u for u, _ in keys], "p_sessions": [s for _, s in keys]}
    return {"p_keys": keys}


def _by_user(keys: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """The keys' sessions grouped by user, users in order (locks taken in one order)."""
    sessions: dict[str, list[str]] = {}
    for user, session in keys:
        sessions.setdefault(user, []).append(session)
    return sorted(sessions.items())


def _own_of_keys(
    ctx: Context, keys: list[tuple[str, str]], now: dt.datetime, locked: bool
) -> Op[dict[tuple[str, str], tuple[int, Own]]]:
    """The live sessions among ``keys``: their version, own state and events."""
    sql = import_statements(ctx.dialect)
    params = {"p_app": ctx.app_name, "p_now": now, **_key_params(ctx, keys)}
    if locked and ctx.dialect == "postgresql":  # one user per locking statement
        rows = []
        for user, sessions in _by_user(keys):
            user_params = {"p_app": ctx.app_name, "p_now": now, "p_user": user}
            user_params["p_sessions"] = sessions
            rows += (yield Call(sql.rows_of_keys_locked, user_params)).all()
    else:
        rows = (yield Call(sql.rows_of_keys_locked if locked else sql.rows_of_keys, params)).all()
    live = {(r[0], r[1]): r for r in rows if r[5]}
    logged: dict[tuple[str, str], list[tuple[float, Any]]] = {k: [] for k in live}
    with_events = [k for k, r in live.items() if r[4]]
    if with_events:
        params.update(_key_params(ctx, with_events))
        for user, session, seq, ts, doc in (yield Call(sql.events_of_keys, params)).all():
            row = live.get((user, session))
            if row is not None and seq <= row[4]:  # past the count: a leftover
                logged[user, session].append((float(ts), codec.decode(doc)))
    return {k: (int(r[3]), (codec.decode(r[2]), logged[k])) for k, r in live.items()}


def _written_meanwhile(whole: WholeSession, expected: int) -> ConflictError:
    return ConflictError(
        f"session {whole.session_id!r} of user {whole.user_id!r} was written by someone "
        "else during the import; nothing was written: run the import again",
        expected=expected,
        actual=None,
    )


def import_sessions(
    ctx: Context,
    batch: list[WholeSession],
    overwrite: bool,
    dry_run: bool,
    now: dt.datetime,
) -> Op[list[Verdict]]:
    """Create each session of ``batch`` with its whole event log, unless it is there.

    A live session under the key holding the same own state and events is
    ``"unchanged"``; one holding others is ``"differs"`` and left alone, or
    with ``overwrite`` replaced (its version goes on rising). One
    transaction for the batch: the sessions there (one query, and one for
    their events), one ``executemany`` of the new rows (a replaced one is a
    statement of its own), one ``DELETE`` of the written keys' leftover events
    and one ``executemany`` of every event.
    A session written meanwhile raises :class:`ConflictError` and the batch
    rolls back whole (run it again session by session to find which). The
    version is one per event more than a create's ``1``, as appends would
    leave it. ``dry_run``: read and judge, write nothing (after a write, the
    read-back check: every session written is then ``"unchanged"``).
    """
    sql = import_statements(ctx.dialect)
    if not dry_run:
        yield BEGIN
    keys = [(w.user_id, w.session_id) for w in batch]
    stored = yield from _own_of_keys(ctx, keys, now, locked=not dry_run)
    verdicts: list[Verdict] = []
    fresh: list[tuple[dict[str, Any], WholeSession]] = []
    written: list[WholeSession] = []
    for whole in batch:
        found = stored.get((whole.user_id, whole.session_id))
        if found is not None and found[1] == whole.own():
            verdicts.append("unchanged")
        elif found is not None and not overwrite:
            verdicts.append("differs")
        else:
            verdicts.append("imported")
            if dry_run:
                continue
            count = len(whole.events)
            params = session_params(ctx, whole.user_id, whole.session_id, now)
            params.update(
                p_state=whole.state_text,
                p_version=count + 1,
                p_created=whole.created_at,
                p_updated=whole.updated_at,
                p_time=whole.update_time,
                p_count=count,
            )
            written.append(whole)
            if found is None:
                fresh.append((params, whole))
                continue
            params["p_expected"] = found[0]
            params["p_version"] = max(found[0] + 1, count + 1)
            if (yield Call(sql.session, params)).first() is None:
                raise _written_meanwhile(whole, found[0])
    if dry_run:
        return verdicts
    if fresh:  # one executemany; a key it did not write was written meanwhile
        rows = (yield Call(sql.fresh_sessions, [params for params, _ in fresh])).all()
        made = {(user, session) for user, session in rows}
        for _, whole in fresh:
            if (whole.user_id, whole.session_id) not in made:
                raise _written_meanwhile(whole, 0)
    if written:
        params = {
            "p_app": ctx.app_name,
            **_key_params(ctx, [(w.user_id, w.session_id) for w in written]),
        }
        yield Call(sql.clear_events_of_keys, params)
        logged = [
            {
                "p_app": ctx.app_name,
                "p_user": w.user_id,
                "p_session": w.session_id,
                "p_seq": seq,
                "p_time": ts,
                "p_event": text,
            }
            for w in written
            for seq, (ts, _, text) in enumerate(w.events, 1)
        ]
        if logged:
            yield Call(sql.event, logged)
    yield COMMIT
    return verdicts


def import_scopes(
    ctx: Context, batch: list[WholeScope], overwrite: bool, dry_run: bool
) -> Op[list[Verdict]]:
    """Write the app's and users' whole states of ``batch``, unless they are there.

    Stored equal: ``"unchanged"``; stored with other keys or values:
    ``"differs"``, left alone unless ``overwrite`` (then replaced whole);
    absent: written. One transaction; ``dry_run``: read and judge only.
    """
    sql = import_statements(ctx.dialect)
    params: dict[str, Any] = {"p_app": ctx.app_name}
    if not dry_run:
        yield BEGIN
    stored: dict[str | None, dict[str, Any]] = {}
    if any(w.user_id is None for w in batch):
        rows = (yield Call(sql.app_read, params)).all()
        stored[None] = {key: codec.decode(value) for key, value in rows}
    users = [w.user_id for w in batch if w.user_id is not None]
    if users:
        if ctx.dialect == "postgresql":  # one user per locking statement
            found = []
            for user in sorted(set(users)):
                found += (yield Call(sql.users_read, {**params, "p_user": user})).all()
        else:
            params["p_users"] = users
            found = (yield Call(sql.users_read, params)).all()
        for user, key, value in found:
            stored.setdefault(user, {})[key] = codec.decode(value)
    verdicts: list[Verdict] = []
    written: list[WholeScope] = []
    for whole in batch:
        there = stored.get(whole.user_id, {})
        if there == whole.state:
            verdicts.append("unchanged")
        elif there and not overwrite:
            verdicts.append("differs")
        else:
            verdicts.append("imported")
            written.append(whole)
    if dry_run:
        return verdicts
    if any(w.user_id is None for w in written):
        yield Call(sql.app_clear, params)
    params["p_users"] = [w.user_id for w in written if w.user_id is not None]
    if params["p_users"]:
        yield Call(sql.users_clear, params)
    app_rows = [
        {"p_app": ctx.app_name, "p_key": k, "p_value": v}
        for w in written
        if w.user_id is None
        for k, v in w.encoded.items()
    ]
    user_rows = [
        {"p_app": ctx.app_name, "p_user": w.user_id, "p_key": k, "p_value": v}
        for w in written
        if w.user_id is not None
        for k, v in w.encoded.items()
    ]
    if app_rows:
        yield Call(sql.app_insert, app_rows)
    if user_rows:
        yield Call(sql.user_insert, user_rows)
    yield COMMIT
    return verdicts


def _states_of_keys(
    ctx: Context, keys: list[tuple[str, str]], now: dt.datetime
) -> Op[dict[tuple[str, str], tuple[str, bool]]]:
    """The stored sessions among ``keys``: their state text and whether they are live."""
    sql = import_statements(ctx.dialect)
    params = {"p_app": ctx.app_name, "p_now": now, **_key_params(ctx, keys)}
    rows = (yield Call(sql.rows_of_keys, params)).all() if keys else []
    return {(r[0], r[1]): (r[2], bool(r[5])) for r in rows}


def import_states(
    ctx: Context,
    batch: list[tuple[str, str, dict[str, Any], str]],
    overwrite: bool,
    now: dt.datetime,
) -> Op[list[str]]:
    """Write a batch of store sessions ``(user_id, session_id, state, its text)``; judge each.

    One ``SELECT`` of the sessions there; one ``INSERT ... ON CONFLICT DO
    NOTHING`` ``executemany`` of the absent ones (the rows ``set_state``
    writes for a new session), in a transaction; a ``set_state`` of each one
    that is there with another state and ``overwrite`` (or expired); then one
    ``SELECT`` reading every written state back. Each verdict is
    ``"imported"``, ``"unchanged"``, ``"differs"`` (left alone) or
    :data:`READ_BACK_DIFFERS`.
    """
    stored = yield from _states_of_keys(ctx, [(u, s) for u, s, _, _ in batch], now)
    verdicts: list[str] = []
    fresh: list[int] = []
    replace: list[int] = []
    for i, (user_id, session_id, state, _) in enumerate(batch):
        found = stored.get((user_id, session_id))
        if found is None:
            fresh.append(i)
        elif found[1] and codec.decode(found[0]) == state:
            verdicts.append("unchanged")
            continue
        elif overwrite or not found[1]:
            replace.append(i)
        else:
            verdicts.append("differs")
            continue
        verdicts.append("imported")
    if fresh:
        rows = [
            {**session_params(ctx, u, s, now), "p_state": text, "p_expires": None}
            for u, s, _, text in (batch[i] for i in fresh)
        ]
        yield BEGIN
        yield Call(import_statements(ctx.dialect).fresh_states, rows)
        yield COMMIT
    for i in replace:  # rare: a state that differs, or an expired one
        user_id, session_id, _, text = batch[i]
        yield from set_state(ctx, user_id, session_id, text, None, now)
    written = [batch[i] for i in (*fresh, *replace)]
    back = yield from _states_of_keys(ctx, [(u, s) for u, s, _, _ in written], now)
    wrong = set()
    for user_id, session_id, state, _ in written:
        found = back.get((user_id, session_id))
        if found is None or codec.decode(found[0]) != state:
            wrong.add((user_id, session_id))
    return [
        READ_BACK_DIFFERS if v == "imported" and (b[0], b[1]) in wrong else v
        for v, b in zip(verdicts, batch, strict=True)
    ]
