"""On Citus, every per-session and per-user operation runs on one shard.

The stores run with ``citus.multi_task_query_log_level = error``: Citus
then refuses, instead of running, any statement it would send to more than
one shard (or node). The operations a user calls per session or per user
must all pass; the app-wide ones (a listing of every user's sessions, a
purge) are refused, which shows the check sees them. The tables are the
ones ``statekeeper db distribute`` made (tests/conftest.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import CITUS_URL
from tests.integration.test_store import Plain

from statekeeper import SessionService, SqlSession

pytestmark = pytest.mark.skipif(
    not CITUS_URL,
    reason="no Citus coordinator: set STATEKEEPER_TEST_CITUS_URL "
    "(e.g. postgresql://postgres@127.0.0.1:9700/test) to run the Citus tests",
)

#: Citus raises an error for a statement it would run as several tasks.
ONE_SHARD = {"connect_args": {"options": "-c citus.multi_task_query_log_level=error"}}


def _refused(call: Any) -> str:
    with pytest.raises(sa.exc.DBAPIError) as caught:
        call()
    return str(caught.value.orig)


def test_store_operations_touch_one_shard(pg_database: str) -> None:
    with SqlSession(
        pg_database, app_name=f"routing-{uuid.uuid4().hex[:8]}", engine_options=ONE_SHARD
    ) as store:
        saved, loaded = Plain(), Plain()
        saved.data = {"memory": [1]}
        store.save_session_state("s", "u", agent=saved)
        store.load_session_state("s", "u", agent=loaded)
        assert loaded.data == {"memory": [1]}
        version = store.set_state("s", {"a": 1, "b": {"c": 2}}, "u")
        store.set_state("s", {"a": 2}, "u", expected_version=version)
        store.merge_state("s", {"b": None, "d": 4}, "u")  # top-level keys replaced
        version = store.merge_state("s", {"e": 5}, "u")
        store.merge_state("s", {"f": 6}, "u", expected_version=version)
        assert store.get_state("s", "u") == {"a": 2, "b": None, "d": 4, "e": 5, "f": 6}
        assert store.session_exists("s", "u")
        assert [info.session_id for info in store.list_sessions("u").items] == ["s"]
        assert store.delete_session("s", "u")
        assert not store.session_exists("s", "u")

        # The app-wide operations run on every shard: the check refuses them.
        assert "multi-task query" in _refused(lambda: store.list_sessions())
        assert "multi-task query" in _refused(store.purge_expired)


def test_service_operations_touch_one_shard(pg_database: str) -> None:
    with SessionService(
        pg_database, app_name=f"routing-{uuid.uuid4().hex[:8]}", engine_options=ONE_SHARD
    ) as service:
        service.create_session("s", "u", state={"user:name": "Ada", "k": 1})
        service.append_event("s", {"id": "e1"}, "u", state_delta={"k": 2, "user:seen": True})
        service.append_event("s", {"id": "e2"}, "u")
        got = service.get_session("s", "u", recent=1)
        assert got is not None
        assert got.state == {"user:name": "Ada", "user:seen": True, "k": 2}
        assert [event.data for event in got.events] == [{"id": "e2"}]
        assert service.get_session("s", "u", after=0.0) is not None
        assert [record.session_id for record in service.list_sessions("u").items] == ["s"]
        assert service.get_user_state("u") == {"name": "Ada", "seen": True}
        assert service.get_app_state() == {}
        popped = service.pop_event("s", "u")
        assert popped is not None
        assert popped.data == {"id": "e2"}
        assert service.delete_session("s", "u")
        assert service.get_session("s", "u") is None

        assert "multi-task query" in _refused(lambda: service.list_sessions())
