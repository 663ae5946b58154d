"""The abstract store API that every statekeeper store implements, sync and async."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

if TYPE_CHECKING:
    from types import TracebackType

    from ._records import SessionPage

__all__ = ["AsyncSessionBase", "SessionBase"]


class SessionBase(abc.ABC):
    """A store of agent-session state, keyed by user and session id.

    Stores are context managers: leaving the ``with`` block calls :meth:`close`.
    Besides the errors each method lists, every call may raise
    :class:`~statekeeper.errors.DatabaseUnavailableError` (the database cannot
    be reached) and :class:`~statekeeper.errors.StoreClosedError` (after
    :meth:`close`).
    """

    @abc.abstractmethod
    def save_session_state(self, session_id: str, user_id: str = "", **modules: Any) -> None:
        """Save the state of each given module, keeping the session's other modules.

        Each module is any object with ``state_dict()``; its state is stored under
        its keyword name. Modules stored earlier and not passed now are kept, so
        two writers saving different modules of one session both survive.

        Args:
            session_id: the session, non-empty, at most 255 characters.
            user_id: the user owning the session; may be empty.
            **modules: the state modules to save, by name.

        Raises:
            StateEncodingError: a state holds NaN, an infinity or a non-JSON
                value; nothing was written.
            ValueError: an id is invalid.
        """

    @abc.abstractmethod
    def load_session_state(
        self, session_id: str, user_id: str = "", allow_not_exist: bool = True, **modules: Any
    ) -> None:
        """Load the stored state into each given module with ``load_state_dict``.

        A module the session has no state for is skipped with a WARNING log that
        names it. With a ``ttl``, loading refreshes the session's expiry.

        Args:
            session_id: the session.
            user_id: the user owning the session.
            allow_not_exist: if false, a missing or expired session raises.
            **modules: the state modules to load into, by name.

        Raises:
            SessionNotFoundError: the session does not exist and
                ``allow_not_exist`` is false.
            ValueError: an id is invalid.
        """

    @abc.abstractmethod
    def get_state(self, session_id: str, user_id: str = "") -> dict[str, Any] | None:
        """Return the session's whole state (module name to state), or ``None`` if absent.

        With a ``ttl``, reading refreshes the session's expiry.

        Args:
            session_id: the session.
            user_id: the user owning the session.

        Returns:
            The decoded state, or ``None`` for a missing or expired session.
        """

    @abc.abstractmethod
    def set_state(
        self,
        session_id: str,
        state: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        """Replace the session's whole state, creating the session if needed.

        Args:
            session_id: the session.
            state: the new state: a dict of module name to JSON-compatible value.
            user_id: the user owning the session.
            expected_version: write only if the stored version is this one
                (``0``: only if the session does not exist yet).

        Returns:
            The session's new version.

        Raises:
            ConflictError: the stored version is not ``expected_version``;
                nothing was written.
            StateEncodingError: the state cannot be stored as exact JSON.
            ValueError: an id is invalid.
        """

    @abc.abstractmethod
    def merge_state(
        self,
        session_id: str,
        modules: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        """Replace the given top-level entries of the state, keeping the others, atomically.

        Args:
            session_id: the session.
            modules: module name to JSON-compatible value.
            user_id: the user owning the session.
            expected_version: write only if the stored version is this one
                (``0``: only if the session does not exist yet).

        Returns:
            The session's new version.

        Raises:
            ConflictError: the stored version is not ``expected_version``;
                nothing was written.
            StateEncodingError: a value cannot be stored as exact JSON.
            ValueError: an id is invalid.
        """

    @abc.abstractmethod
    def delete_session(self, session_id: str, user_id: str = "") -> bool:
        """Delete the session.

        Args:
            session_id: the session.
            user_id: the user owning the session.

        Returns:
            Whether a live session was deleted.
        """

    @abc.abstractmethod
    def session_exists(self, session_id: str, user_id: str = "") -> bool:
        """Tell whether the session exists and has not expired (without refreshing it).

        Args:
            session_id: the session.
            user_id: the user owning the session.

        Returns:
            ``True`` if the session exists.
        """

    @abc.abstractmethod
    def list_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        """List live sessions, newest update first, one page at a time.

        Pages are keyset-paginated: sessions added while paging do not shift or
        repeat the pages still to come.

        Args:
            user_id: only this user's sessions; ``None`` lists every user's.
            limit: at most this many sessions per page.
            cursor: the ``next_cursor`` of the previous page.

        Returns:
            A :class:`SessionPage`.

        Raises:
            ValueError: ``limit`` is not positive or ``cursor`` is not one of ours.
        """

    @abc.abstractmethod
    def purge_expired(self) -> int:
        """Delete this app's expired sessions.

        Returns:
            How many sessions were deleted.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the store: later calls raise ``StoreClosedError``; closing twice is harmless.

        An engine passed in by the caller stays open; an engine statekeeper
        made from a URL is disposed when the last store sharing it closes.
        """

    def __enter__(self) -> Self:
        """Return the store."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()


class AsyncSessionBase(abc.ABC):
    """A store of agent-session state, keyed by user and session id.

    Stores are context managers: leaving the ``with`` block calls :meth:`close`.
    Besides the errors each method lists, every call may raise
    :class:`~statekeeper.errors.DatabaseUnavailableError` (the database cannot
    be reached) and :class:`~statekeeper.errors.StoreClosedError` (after
    :meth:`close`).
    """

    @abc.abstractmethod
    async def save_session_state(self, session_id: str, user_id: str = "", **modules: Any) -> None:
        """Save the state of each given module, keeping the session's other modules.

        Each module is any object with ``state_dict()``; its state is stored under
        its keyword name. Modules stored earlier and not passed now are kept, so
        two writers saving different modules of one session both survive.

        Args:
            session_id: the session, non-empty, at most 255 characters.
            user_id: the user owning the session; may be empty.
            **modules: the state modules to save, by name.

        Raises:
            StateEncodingError: a state holds NaN, an infinity or a non-JSON
                value; nothing was written.
            ValueError: an id is invalid.
        """

    @abc.abstractmethod
    async def load_session_state(
        self, session_id: str, user_id: str = "", allow_not_exist: bool = True, **modules: Any
    ) -> None:
        """Load the stored state into each given module with ``load_state_dict``.

        A module the session has no state for is skipped with a WARNING log that
        names it. With a ``ttl``, loading refreshes the session's expiry.

        Args:
            session_id: the session.
            user_id: the user owning the session.
            allow_not_exist: if false, a missing or expired session raises.
            **modules: the state modules to load into, by name.

        Raises:
            SessionNotFoundError: the session does not exist and
                ``allow_not_exist`` is false.
            ValueError: an id is invalid.
        """

    @abc.abstractmethod
    async def get_state(self, session_id: str, user_id: str = "") -> dict[str, Any] | None:
        """Return the session's whole state (module name to state), or ``None`` if absent.

        With a ``ttl``, reading refreshes the session's expiry.

        Args:
            session_id: the session.
            user_id: the user owning the session.

        Returns:
            The decoded state, or ``None`` for a missing or expired session.
        """

    @abc.abstractmethod
    async def set_state(
        self,
        session_id: str,
        state: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        """Replace the session's whole state, creating the session if needed.

        Args:
            session_id: the session.
            state: the new state: a dict of module name to JSON-compatible value.
            user_id: the user owning the session.
            expected_version: write only if the stored version is this one
                (``0``: only if the session does not exist yet).

        Returns:
            The session's new version.

        Raises:
            ConflictError: the stored version is not ``expected_version``;
                nothing was written.
            StateEncodingError: the state cannot be stored as exact JSON.
            ValueError: an id is invalid.
        """

    @abc.abstractmethod
    async def merge_state(
        self,
        session_id: str,
        modules: dict[str, Any],
        user_id: str = "",
        *,
        expected_version: int | None = None,
    ) -> int:
        """Replace the given top-level entries of the state, keeping the others, atomically.

        Args:
            session_id: the session.
            modules: module name to JSON-compatible value.
            user_id: the user owning the session.
            expected_version: write only if the stored version is this one
                (``0``: only if the session does not exist yet).

        Returns:
            The session's new version.

        Raises:
            ConflictError: the stored version is not ``expected_version``;
                nothing was written.
            StateEncodingError: a value cannot be stored as exact JSON.
            ValueError: an id is invalid.
        """

    @abc.abstractmethod
    async def delete_session(self, session_id: str, user_id: str = "") -> bool:
        """Delete the session.

        Args:
            session_id: the session.
            user_id: the user owning the session.

        Returns:
            Whether a live session was deleted.
        """

    @abc.abstractmethod
    async def session_exists(self, session_id: str, user_id: str = "") -> bool:
        """Tell whether the session exists and has not expired (without refreshing it).

        Args:
            session_id: the session.
            user_id: the user owning the session.

        Returns:
            ``True`` if the session exists.
        """

    @abc.abstractmethod
    async def list_sessions(
        self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> SessionPage:
        """List live sessions, newest update first, one page at a time.

        Pages are keyset-paginated: sessions added while paging do not shift or
        repeat the pages still to come.

        Args:
            user_id: only this user's sessions; ``None`` lists every user's.
            limit: at most this many sessions per page.
            cursor: the ``next_cursor`` of the previous page.

        Returns:
            A :class:`SessionPage`.

        Raises:
            ValueError: ``limit`` is not positive or ``cursor`` is not one of ours.
        """

    @abc.abstractmethod
    async def purge_expired(self) -> int:
        """Delete this app's expired sessions.

        Returns:
            How many sessions were deleted.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the store: later calls raise ``StoreClosedError``; closing twice is harmless.

        An engine passed in by the caller stays open; an engine statekeeper
        made from a URL is disposed when the last store sharing it closes.
        """

    async def __aenter__(self) -> Self:
        """Return the store."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        await self.close()
