"""One ``Runner`` turn on a ``StatekeeperSession``, in a process of its own.

``python oa_turn.py URL APP USER SESSION TEXT`` prints the agent's reply and
then the number of items the session holds, one per line.
"""

from __future__ import annotations

import asyncio
import sys

from agents import Runner
from oa_fake_model import canned_agent

from statekeeper.openai_agents import StatekeeperSession


async def main(url: str, app: str, user: str, session_id: str, text: str) -> None:
    agent, _ = canned_agent()
    async with StatekeeperSession(session_id, url, user_id=user, app_name=app) as session:
        result = await Runner.run(agent, text, session=session)
        print(result.final_output)
        print(len(await session.get_items()))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
