from tests.fakes.agent_harness import *  # noqa: F403 (fixtures)
