"""StateModule and the state-module protocol."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from statekeeper.codec import decode, encode_modules
from statekeeper.modules import StateModule, SupportsState


class Memory(StateModule):
    def __init__(self) -> None:
        super().__init__()
        self.content: list[dict[str, Any]] = []
        self.register_state("content")


class Toolkit(StateModule):
    def __init__(self) -> None:
        super().__init__()
        self.active: set[str] = set()
        self.register_state("active", custom_to_json=sorted, custom_from_json=set)


class Agent(StateModule):
    def __init__(self) -> None:
        super().__init__()
        self.name = "Friday"
        self.memory = Memory()
        self.toolkit = Toolkit()
        self.created = datetime.datetime(2025, 1, 2, 3, 4, 5)
        self.register_state("name")
        self.register_state(
            "created",
            custom_to_json=datetime.datetime.isoformat,
            custom_from_json=datetime.datetime.fromisoformat,
        )


class Recorder(StateModule):
    """Records the ``strict`` it was loaded with."""

    def __init__(self) -> None:
        super().__init__()
        self.value = 0
        self.register_state("value")
        self.seen_strict: list[bool] = []

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        self.seen_strict.append(strict)
        super().load_state_dict(state_dict, strict=strict)


class Parent(StateModule):
    def __init__(self) -> None:
        super().__init__()
        self.child = Recorder()


class Plain:
    """A state module that does not derive from StateModule, as AgentScope's may not."""

    def __init__(self) -> None:
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]


def test_state_dict_holds_nested_modules_then_registered_attributes() -> None:
    agent = Agent()
    agent.memory.content.append({"role": "user", "text": "hi"})
    agent.toolkit.active.update({"web", "code"})
    state = agent.state_dict()
    assert state == {
        "memory": {"content": [{"role": "user", "text": "hi"}]},
        "toolkit": {"active": ["code", "web"]},
        "name": "Friday",
        "created": "2025-01-02T03:04:05",
    }
    assert list(state) == ["memory", "toolkit", "name", "created"]


def test_state_survives_a_json_round_trip_into_a_new_object() -> None:
    agent = Agent()
    agent.name = "Jarvis"
    agent.memory.content.append({"text": "hi", "score": 0.5})
    agent.toolkit.active.add("web")
    saved = decode(encode_modules({"agent": agent.state_dict()}))["agent"]

    fresh = Agent()
    fresh.load_state_dict(saved)
    assert fresh.name == "Jarvis"
    assert fresh.memory.content == [{"text": "hi", "score": 0.5}]
    assert fresh.toolkit.active == {"web"}
    assert fresh.created == datetime.datetime(2025, 1, 2, 3, 4, 5)
    assert fresh.state_dict() == agent.state_dict()


def test_strict_load_names_the_missing_key_and_class() -> None:
    agent = Agent()
    state = agent.state_dict()
    del state["toolkit"]
    with pytest.raises(KeyError, match=r"Agent\.load_state_dict\(\).*'toolkit'.*nested module"):
        agent.load_state_dict(state)


def test_strict_load_of_missing_registered_attribute_loads_nothing() -> None:
    agent = Agent()
    state = agent.state_dict()
    state["memory"] = {"content": [{"text": "new"}]}
    state["name"] = "Jarvis"
    del state["created"]
    with pytest.raises(KeyError, match=r"'created'.*registered attribute"):
        agent.load_state_dict(state)
    assert agent.name == "Friday"
    assert agent.memory.content == []


def test_non_strict_load_skips_missing_keys() -> None:
    agent = Agent()
    agent.load_state_dict({"name": "Jarvis", "memory": {}}, strict=False)
    assert agent.name == "Jarvis"
    assert agent.memory.content == []
    assert agent.toolkit.active == set()


def test_unknown_keys_are_ignored() -> None:
    agent = Agent()
    state = agent.state_dict()
    state["extra"] = 1
    agent.load_state_dict(state)
    assert not hasattr(agent, "extra")


@pytest.mark.parametrize("strict", [True, False])
def test_strict_is_passed_down_to_nested_modules(strict: bool) -> None:
    parent = Parent()
    parent.load_state_dict({"child": {"value": 7}}, strict=strict)
    assert parent.child.seen_strict == [strict]
    assert parent.child.value == 7


def test_nested_module_missing_its_own_key_follows_strict() -> None:
    parent = Parent()
    with pytest.raises(KeyError, match=r"Recorder\.load_state_dict\(\).*'value'"):
        parent.load_state_dict({"child": {}})
    parent.load_state_dict({"child": {}}, strict=False)
    assert parent.child.value == 0


def test_replacing_a_nested_module_with_another_value_stops_saving_it() -> None:
    agent = Agent()
    agent.toolkit = None  # type: ignore[assignment]
    assert "toolkit" not in agent.state_dict()
    del agent.memory
    assert "memory" not in agent.state_dict()
    agent.memory = Memory()
    assert list(agent.state_dict()) == ["memory", "name", "created"]


def test_register_state_of_a_missing_attribute_is_an_attribute_error() -> None:
    module = StateModule()
    with pytest.raises(AttributeError, match=r"StateModule\.register_state\('nope'\).*assign it"):
        module.register_state("nope")


def test_register_state_of_a_nested_module_is_refused() -> None:
    agent = Agent()
    with pytest.raises(ValueError, match="saved and loaded automatically"):
        agent.register_state("memory")


def test_registering_again_replaces_the_converters() -> None:
    toolkit = Toolkit()
    toolkit.active = {"b", "a"}
    toolkit.register_state("active", custom_to_json=lambda value: ",".join(sorted(value)))
    assert toolkit.state_dict() == {"active": "a,b"}


class Forgetful(StateModule):
    def __init__(self) -> None:  # does not call super().__init__()
        self.value = 1


def test_forgetting_super_init_fails_clearly() -> None:
    module = Forgetful()
    with pytest.raises(RuntimeError, match=r"call super\(\)\.__init__\(\)"):
        module.register_state("value")
    with pytest.raises(RuntimeError, match=r"Forgetful.*super\(\)\.__init__\(\)"):
        module.state_dict()
    with pytest.raises(RuntimeError, match=r"super\(\)\.__init__\(\)"):
        module.load_state_dict({})
    with pytest.raises(RuntimeError, match="nested module 'child'"):
        module.child = Memory()


def test_plain_object_with_both_methods_satisfies_the_protocol() -> None:
    plain: SupportsState = Plain()
    assert isinstance(plain, SupportsState)
    plain.load_state_dict({"count": 3})
    assert plain.state_dict() == {"count": 3}


def test_state_modules_satisfy_the_protocol_and_others_do_not() -> None:
    agent: SupportsState = Agent()
    assert isinstance(agent, SupportsState)

    class SaveOnly:
        def state_dict(self) -> dict[str, Any]:
            return {}

    assert not isinstance(SaveOnly(), SupportsState)
    assert not isinstance({}, SupportsState)
