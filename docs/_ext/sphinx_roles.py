"""A griffe extension for the API reference: Sphinx roles in docstrings become code spans.

statekeeper's docstrings name other objects the Sphinx way (``:meth:`close```,
``:class:`~statekeeper.errors.SchemaNotReadyError```); mkdocstrings would print
those roles as they are. This turns each into a code span of the name (its
last part after ``~``), so the pages read as the docstrings mean.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:meth|class|func|attr|exc|data|mod|obj):`(~?)([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every loaded object's docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)
