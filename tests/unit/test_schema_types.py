"""SQLite timestamps are stored as the text SQLAlchemy's DATETIME writes, in UTC."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from statekeeper._sql.schema import UTCDateTime

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: still written
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        None,
    ],
)
def test_sqlite_text_is_sqlalchemys_datetime_text_in_utc(value: dt.datetime | None) -> None:
    dialect = sqlite.dialect()
    bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None
    expected = None
    if value is not None:
        naive = value.astimezone(UTC).replace(tzinfo=None)
        expected = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)(naive)
    assert bind(value) == expected


def test_sqlite_refuses_a_naive_datetime() -> None:
    dialect = sqlite.dialect()
    bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    with pytest.raises(ValueError, match="naive datetime"):
        bind(dt.datetime(2026, 1, 2))
