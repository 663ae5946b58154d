"""Read the session-service URIs of ADK's tooling (``statekeeper+sqlite://``, ...).

``adk web --session_service_uri=URI`` and ``get_fast_api_app`` hand the URI
to the service registered for its scheme; :mod:`statekeeper.adk` registers
the schemes below and reads the URI here. A URI is a database URL with
``statekeeper+`` in front and, optionally, the service's own settings as
query options; every other query option stays on the database URL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

PREFIX = "statekeeper+"
#: The URI schemes ``statekeeper.adk`` registers in ADK's service registry.
SCHEMES = ("statekeeper+sqlite", "statekeeper+postgresql")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse(
    uri: str, *, schema: str | None, ttl: Any, auto_migrate: bool
) -> tuple[sa.URL, dict[str, Any]]:
    """Split a URI into the database URL and the service's settings.

    Args:
        uri: ``statekeeper+sqlite:///app.db?auto_migrate=true``,
            ``statekeeper+postgresql://user@host/db?schema=agents&ttl=3600``, or a
            plain database URL (``sqlite:///app.db``).
        schema: the ``schema`` keyword argument given beside the URI.
        ttl: the ``ttl`` keyword argument given beside the URI.
        auto_migrate: the ``auto_migrate`` keyword argument given beside the URI.

    Returns:
        The database URL (without the prefix and the settings) and the
        settings ``schema``, ``ttl`` and ``auto_migrate``: the URI's, or else
        the keyword arguments'.

    Raises:
        ValueError: the URI is not a database URL, a setting's value is
            invalid, or a setting is given both in the URI and as an argument.
    """
    if not isinstance(uri, str):
        raise TypeError(f"uri must be a str, not {type(uri).__name__}")
    text = uri[len(PREFIX) :] if uri.startswith(PREFIX) else uri
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError:
        raise ValueError(
            f"{_shown(uri)} is not a session-service URI; write "
            "statekeeper+sqlite:///path/to/app.db or statekeeper+postgresql://user@host/db"
        ) from None
    settings: dict[str, Any] = {}
    for name in ("auto_migrate", "schema", "ttl"):
        if name not in url.query:
            continue
        value = url.query[name]
        if not isinstance(value, str):
            raise ValueError(f"{_shown(uri)} gives the option {name!r} more than once")
        settings[name] = _setting(name, value, uri)
    given = {"schema": schema, "ttl": ttl, "auto_migrate": auto_migrate or None}
    twice = sorted(name for name in settings if given[name] is not None)
    if twice:
        raise ValueError(
            f"{', '.join(twice)} given both in the URI and as keyword arguments; "
            "give each setting once"
        )
    merged = {"schema": schema, "ttl": ttl, "auto_migrate": auto_migrate, **settings}
    return url.difference_update_query(settings), merged


def _setting(name: str, value: str, uri: str) -> Any:
    """Return one query option as the service's keyword argument expects it."""
    if name == "auto_migrate":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"{_shown(uri)}: auto_migrate must be true or false, not {value!r}")
    if name == "ttl":
        try:
            return float(value)
        except ValueError:
            raise ValueError(
                f"{_shown(uri)}: ttl must be a number of seconds, not {value!r}"
            ) from None
    if not value:
        raise ValueError(f"{_shown(uri)}: schema must name a PostgreSQL schema")
    return value


def _shown(uri: str) -> str:
    """Return the URI as an error message may show it (no password)."""
    text = uri[len(PREFIX) :] if uri.startswith(PREFIX) else uri
    try:
        hidden = sa.make_url(text).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return repr(uri.split("@")[-1] if "@" in uri else uri)
    return repr(PREFIX + hidden if uri.startswith(PREFIX) else hidden)
