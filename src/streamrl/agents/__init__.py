"""The stream-x agents, one module per algorithm family, and the registry by name.

A new algorithm is one module here (a :class:`StreamAgent` subclass) and one line in
:data:`ALGORITHMS` (docs/architecture.md)."""

from streamrl.agents.ac import StreamAC
from streamrl.agents.base import AgentConfig, AgentState, Diagnostics, HParams, Network, StreamAgent, TimeStep
from streamrl.agents.control import StreamQ, StreamSARSA
from streamrl.agents.dqn import DQN1
from streamrl.agents.td import StreamTD

ALGORITHMS = {"ac": StreamAC, "q": StreamQ, "sarsa": StreamSARSA, "td": StreamTD, "dqn1": DQN1}
"""Algorithm name (the CLI's ALGO) → agent class."""

__all__ = [
    "ALGORITHMS",
    "DQN1",
    "AgentConfig",
    "AgentState",
    "Diagnostics",
    "HParams",
    "Network",
    "StreamAC",
    "StreamAgent",
    "StreamQ",
    "StreamSARSA",
    "StreamTD",
    "TimeStep",
]
