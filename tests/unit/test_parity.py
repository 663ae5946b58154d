"""The sync and async twins expose the same API, name for name."""

from __future__ import annotations

import inspect

import pytest

import statekeeper
from statekeeper import (
    AsyncJSONSession,
    AsyncRedisSession,
    AsyncSessionBase,
    AsyncSessionService,
    AsyncSqlSession,
    JSONSession,
    RedisSession,
    SessionBase,
    SessionService,
    SqlSession,
)

STORES = [
    (SqlSession, AsyncSqlSession),
    (JSONSession, AsyncJSONSession),
    (RedisSession, AsyncRedisSession),
]
TWINS = [(SessionBase, AsyncSessionBase), *STORES]
SERVICES = [(SessionService, AsyncSessionService)]
API = [
    "save_session_state",
    "load_session_state",
    "get_state",
    "set_state",
    "merge_state",
    "delete_session",
    "session_exists",
    "list_sessions",
    "purge_expired",
    "close",
]


SERVICE_API = [
    "create_session",
    "get_session",
    "append_event",
    "list_sessions",
    "delete_session",
    "get_app_state",
    "get_user_state",
    "close",
]


def _public(cls: type) -> set[str]:
    return {
        name
        for name, _ in inspect.getmembers(cls)
        if not name.startswith("_") and callable(getattr(cls, name))
    }


@pytest.mark.parametrize(("sync", "async_"), TWINS)
def test_twins_have_the_same_public_methods(sync: type, async_: type) -> None:
    assert _public(sync) == _public(async_)
    assert set(API) <= _public(sync)


@pytest.mark.parametrize(("sync", "async_"), TWINS)
@pytest.mark.parametrize("name", API)
def test_twins_have_the_same_signature_and_docstring(sync: type, async_: type, name: str) -> None:
    s, a = getattr(sync, name), getattr(async_, name)
    assert inspect.signature(s) == inspect.signature(a)
    assert inspect.getdoc(s) == inspect.getdoc(a)
    assert inspect.getdoc(s)
    assert not inspect.iscoroutinefunction(s)
    assert inspect.iscoroutinefunction(a)


def test_service_twins_have_the_same_public_methods() -> None:
    assert _public(SessionService) == _public(AsyncSessionService)
    assert set(SERVICE_API) <= _public(SessionService)


@pytest.mark.parametrize("name", SERVICE_API)
def test_service_twins_have_the_same_signature_and_docstring(name: str) -> None:
    s, a = getattr(SessionService, name), getattr(AsyncSessionService, name)
    assert inspect.signature(s) == inspect.signature(a)
    assert inspect.getdoc(s) == inspect.getdoc(a)
    assert inspect.getdoc(s)
    assert not inspect.iscoroutinefunction(s)
    assert inspect.iscoroutinefunction(a)


@pytest.mark.parametrize(("sync_cls", "async_cls"), [*STORES, *SERVICES])
def test_constructors_match(sync_cls: type, async_cls: type) -> None:
    sync = inspect.signature(sync_cls)
    async_ = inspect.signature(async_cls)
    assert list(sync.parameters) == list(async_.parameters)
    for name in sync.parameters:
        if name not in ("url_or_engine", "url_or_client"):
            assert sync.parameters[name] == async_.parameters[name]


@pytest.mark.parametrize(("sync_cls", "async_cls"), [(SqlSession, AsyncSqlSession), *SERVICES])
def test_context_managers(sync_cls: type, async_cls: type) -> None:
    assert hasattr(sync_cls, "__enter__")
    assert hasattr(sync_cls, "__exit__")
    assert hasattr(async_cls, "__aenter__")
    assert hasattr(async_cls, "__aexit__")


def test_every_public_name_is_documented() -> None:
    for name in statekeeper.__all__:
        if name == "__version__":
            continue
        obj = getattr(statekeeper, name)
        assert inspect.getdoc(obj), name
        for member, value in vars(obj).items():
            if not member.startswith("_") and callable(value):
                assert inspect.getdoc(getattr(obj, member)), f"{name}.{member}"


def test_errors_hierarchy() -> None:
    from statekeeper import errors

    for cls in (
        errors.SessionNotFoundError,
        errors.ConflictError,
        errors.StateEncodingError,
        errors.SchemaNotReadyError,
        errors.SessionExistsError,
    ):
        assert issubclass(cls, errors.StatekeeperError)
    assert issubclass(errors.SessionNotFoundError, ValueError)
    assert issubclass(errors.StateEncodingError, ValueError)
