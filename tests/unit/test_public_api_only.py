"""statekeeper uses SQLAlchemy and Alembic through their public API only."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "statekeeper"

#: Private names a fast path once reached for; any ``sa.x._y`` / ``sqlalchemy.x._y`` too.
FORBIDDEN = re.compile(
    r"_check\s*=|_cached_result_processor|_result_columns|_bind_processors|_bind_names"
    r"|greenlet_spawn|\bdo_ping\b|sqlalchemy\.util|\.pool\._"
    r"|\b(sa|sqlalchemy|alembic)\.(\w+\.)*_[a-z]\w*"
)


def test_no_private_sqlalchemy_name_is_used() -> None:
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert found == []


def test_the_check_can_fail() -> None:
    assert FORBIDDEN.search("compiled.construct_params(_check=False)")
    assert FORBIDDEN.search("from sqlalchemy.util import greenlet_spawn")
    assert FORBIDDEN.search("x = sa.engine._private")
