"""A canned ``agents`` model for the tests: no network, no API key.

Its reply names how many input items it was given, so a test sees the
history the session supplied: ``"seen 3 items: hello"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

set_tracing_disabled(True)


def _last_text(items: str | list[Any]) -> str:
    if isinstance(items, str):
        return items
    content = items[-1].get("content") if items and isinstance(items[-1], dict) else ""
    return content if isinstance(content, str) else str(content)


class CannedModel(Model):
    """Answers every turn with ``"seen N items: <last user text>"``."""

    def __init__(self) -> None:
        self.inputs: list[list[Any]] = []

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        items = [input] if isinstance(input, str) else list(input)
        self.inputs.append(items)
        text = f"seen {len(items)} items: {_last_text(input)}"
        message = ResponseOutputMessage(
            id=f"msg_{len(self.inputs)}",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the tests run Runner.run")


def canned_agent() -> tuple[Agent[Any], CannedModel]:
    """An agent on a fresh canned model."""
    model = CannedModel()
    return Agent(name="assistant", instructions="Reply.", model=model), model
