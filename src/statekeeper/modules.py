"""State modules: objects whose state a session store saves and loads.

A *state module* is any object with ``state_dict()`` and
``load_state_dict(state)``, as described by :class:`SupportsState`.
AgentScope 1.x agents, memories and toolkits are state modules as they are.

:class:`StateModule` is a small base class that writes both methods for you:
register plain attributes with :meth:`StateModule.register_state`, and assign
other :class:`StateModule` instances as attributes to nest them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    _Converter: TypeAlias = Callable[[Any], Any]

__all__ = ["StateModule", "SupportsState"]

_CHILDREN = "_statekeeper_children"
_REGISTERED = "_statekeeper_registered"


@runtime_checkable
class SupportsState(Protocol):
    """An object whose state can be saved to and loaded from a session.

    The stores call ``state_dict()`` when saving and ``load_state_dict(state)``
    with a single argument when loading. Many modules accept a second
    ``strict`` argument, but only :class:`StateModule` passes it on, and only
    to its nested :class:`StateModule` children, so a module only needs the
    one-argument form.

    ``isinstance(obj, SupportsState)`` checks only that both methods exist.
    """

    def state_dict(self) -> dict[str, Any]:
        """Return the module's state as JSON-compatible data.

        Returns:
            A dict of str keys to values the codec can encode.
        """
        ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> None:
        """Restore the module's state from what ``state_dict()`` returned.

        Args:
            state_dict: a dict as returned by ``state_dict()``, after a
                round trip through JSON.
        """
        ...


class StateModule:
    """Base class that saves and loads registered attributes and nested modules.

    Attributes holding :class:`StateModule` instances are found automatically
    when assigned and saved under their attribute name, in assignment order.
    Other attributes are saved only once registered with
    :meth:`register_state`, after the nested modules, in registration order.

    Subclasses must call ``super().__init__()`` before assigning nested
    modules or registering attributes.

    Example:
        >>> class Memory(StateModule):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.content: list[str] = []
        ...         self.register_state("content")
        >>> class Agent(StateModule):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.memory = Memory()
        >>> agent = Agent()
        >>> agent.memory.content.append("hi")
        >>> agent.state_dict()
        {'memory': {'content': ['hi']}}
    """

    def __init__(self) -> None:
        """Set up the registries of nested modules and registered attributes."""
        children: dict[str, StateModule] = {}
        registered: dict[str, tuple[_Converter | None, _Converter | None]] = {}
        object.__setattr__(self, _CHILDREN, children)
        object.__setattr__(self, _REGISTERED, registered)

    def __setattr__(self, name: str, value: Any) -> None:
        """Set an attribute, tracking it as a nested module if it is one.

        Args:
            name: the attribute name.
            value: the new value.

        Raises:
            RuntimeError: ``value`` is a :class:`StateModule` and
                ``StateModule.__init__`` has not run yet.
        """
        if isinstance(value, StateModule):
            self._children(f"assign the nested module {name!r}")[name] = value
        else:
            children = self.__dict__.get(_CHILDREN)
            if children is not None:
                children.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        """Delete an attribute, and stop saving it if it was a nested module.

        Args:
            name: the attribute name.
        """
        object.__delattr__(self, name)
        children = self.__dict__.get(_CHILDREN)
        if children is not None:
            children.pop(name, None)

    def register_state(
        self,
        attr_name: str,
        custom_to_json: Callable[[Any], Any] | None = None,
        custom_from_json: Callable[[Any], Any] | None = None,
    ) -> None:
        """Save and load the attribute ``attr_name`` with the module's state.

        Registering the same name again replaces its converters.

        Args:
            attr_name: the name of an existing attribute of this object.
            custom_to_json: turns the attribute's value into JSON-compatible
                data when saving; by default the value is saved as it is.
            custom_from_json: turns the saved data back into the attribute's
                value when loading; by default the data is assigned as it is.

        Raises:
            RuntimeError: ``StateModule.__init__`` has not run yet.
            AttributeError: the object has no attribute ``attr_name``.
            ValueError: the attribute holds a nested :class:`StateModule`,
                which is saved without being registered.
        """
        registered = self._registered(f"register_state({attr_name!r})")
        if not hasattr(self, attr_name):
            raise AttributeError(
                f"{type(self).__qualname__}.register_state({attr_name!r}): the object "
                f"has no attribute {attr_name!r}; assign it (self.{attr_name} = ...) "
                "before registering it"
            )
        if attr_name in self._children(f"register_state({attr_name!r})"):
            raise ValueError(
                f"{type(self).__qualname__}.register_state({attr_name!r}): the "
                "attribute holds a nested StateModule, which is saved and loaded "
                "automatically; do not register it"
            )
        registered[attr_name] = (custom_to_json, custom_from_json)

    def state_dict(self) -> dict[str, Any]:
        """Return the state of the nested modules and registered attributes.

        Returns:
            ``{child_name: child.state_dict(), ..., attr_name: value, ...}``,
            where a registered attribute's value went through its
            ``custom_to_json`` if it has one. Values are not copied.

        Raises:
            RuntimeError: ``StateModule.__init__`` has not run yet.
        """
        state: dict[str, Any] = {
            name: child.state_dict() for name, child in self._children("state_dict()").items()
        }
        for name, (to_json, _) in self._registered("state_dict()").items():
            value = getattr(self, name)
            state[name] = value if to_json is None else to_json(value)
        return state

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore the nested modules and registered attributes from ``state_dict``.

        Each nested module loads its own entry, receiving ``strict`` too; each
        registered attribute is assigned its entry, through its
        ``custom_from_json`` if it has one. Keys that name neither are ignored.

        Args:
            state_dict: a dict as returned by :meth:`state_dict`.
            strict: when true, a missing entry for a nested module or a
                registered attribute raises ``KeyError`` before anything of
                this module is loaded; when false, missing entries are
                skipped and those attributes keep their values.

        Raises:
            RuntimeError: ``StateModule.__init__`` has not run yet.
            KeyError: ``strict`` is true and an entry is missing.
        """
        children = self._children("load_state_dict()")
        registered = self._registered("load_state_dict()")
        if strict:
            for name in (*children, *registered):
                if name not in state_dict:
                    kind = "nested module" if name in children else "registered attribute"
                    raise KeyError(
                        f"{type(self).__qualname__}.load_state_dict(): the state has no "
                        f"key {name!r} for the {kind} {name!r}; the saved state comes "
                        "from a different version of this class, or pass strict=False "
                        "to keep the current value"
                    )
        for name, child in children.items():
            if name in state_dict:
                child.load_state_dict(state_dict[name], strict=strict)
        for name, (_, from_json) in registered.items():
            if name in state_dict:
                value = state_dict[name]
                setattr(self, name, value if from_json is None else from_json(value))

    def _children(self, action: str) -> dict[str, StateModule]:
        """Return the nested-module registry, or fail if ``__init__`` did not run."""
        children: dict[str, StateModule] | None = self.__dict__.get(_CHILDREN)
        if children is None:
            raise self._not_initialised(action)
        return children

    def _registered(self, action: str) -> dict[str, tuple[_Converter | None, _Converter | None]]:
        """Return the registered-attribute registry, or fail if ``__init__`` did not run."""
        registered: dict[str, tuple[_Converter | None, _Converter | None]] | None = (
            self.__dict__.get(_REGISTERED)
        )
        if registered is None:
            raise self._not_initialised(action)
        return registered

    def _not_initialised(self, action: str) -> RuntimeError:
        """Return the error for using the object before ``StateModule.__init__``."""
        cls = type(self).__qualname__
        return RuntimeError(
            f"cannot {action} on {cls}: StateModule.__init__ has not run; call "
            f"super().__init__() at the start of {cls}.__init__"
        )
