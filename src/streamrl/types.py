"""The types that environments, agents and drivers share, in a module that imports none of
them: what an environment is (:class:`EnvSpec`), what an agent sees after each step
(:class:`TimeStep`), and what a batch of host environments returns (:class:`HostBatch`,
:class:`Episode`, :class:`HostEnvs`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol, Sequence

import numpy as np

__all__ = ["EnvSpec", "TimeStep", "Episode", "HostBatch", "HostEnvs"]


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What an agent needs to know of an environment.

    Attributes:
      env_id: the id it was made from.
      family: the name of its entry in :data:`streamrl.families.FAMILIES`
        (``classic_control``, ``mujoco``, …, ``other``).
      obs_shape: shape of one observation (float32 after the adapter).
      discrete: True for a Discrete action space, False for Box.
      action_dim: number of actions (Discrete) or length of the action vector (Box).
      action_low, action_high: Box bounds (empty for Discrete).
      time_limit: the episode step limit (None if the environment has none).
      frame_stack: how many consecutive observations the agent stacks along the last
        axis after normalising each one (4 for Atari, docs/algorithms.md "Normalisation of
        the stream"; 1 elsewhere). The adapter hands over single frames.
    """

    env_id: str
    family: str
    obs_shape: tuple[int, ...]
    discrete: bool
    action_dim: int
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    time_limit: int | None = None
    frame_stack: int = 1


class TimeStep(NamedTuple):
    """What an environment adapter hands an agent after each environment step (one stream;
    JAX or NumPy values).

    Attributes:
      obs: the raw observation the agent acts on next, float32 of the observation shape
        (the reset observation when the environment was reset this step).
      reward: float32 scalar, the raw reward of the step.
      terminated: bool scalar, the MDP reached a terminal state: no bootstrap, traces reset.
      truncated: bool scalar, the episode was cut (time limit); kept separate from
        ``terminated`` all the way to the agent.
      final_obs: s′, the raw observation the step produced, before any reset (equal to
        ``obs`` when the episode goes on).
      new_episode: bool scalar or None. True when the environment was reset and ``obs``
        starts a new episode (fresh frame stack, time feature 0). None (the default) means
        ``terminated or truncated``; it differs only for Atari's lost lives under
        ``--life-loss continue`` (terminal for the learner, the game goes on:
        ``terminated`` True, ``new_episode`` False).
    """

    obs: Any
    reward: Any
    terminated: Any
    truncated: Any
    final_obs: Any
    new_episode: Any = None


class Episode(NamedTuple):
    """One finished episode of a fleet's agent ``agent`` (an environment index)."""

    agent: int
    episodic_return: float
    length: int


class HostBatch(NamedTuple):
    """What a batch of N host environments returns for one step of every environment.

    Attributes:
      obs, final_obs: float32 [N, *obs_shape] (see :class:`TimeStep`).
      reward: float [N]; terminated, truncated, new_episode: bool [N].
      active: bool [N] or None. False for an agent that neither learns nor acts this call
        (EnvPool's inserted reset step); None: every agent is active.
      episodes: the episodes that ended this step (the reported kind: Atari full games).
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    new_episode: np.ndarray
    active: np.ndarray | None
    episodes: Sequence[Episode]


class HostEnvs(Protocol):
    """The contract of a host adapter (Gymnasium, EnvPool): N environments, environment i
    for agent i. The arrays it returns may be reused by its next call."""

    spec: EnvSpec
    num_envs: int
    masks_agents: bool
    """Whether ``step`` may pause agents (return an ``active`` mask); the host stepper
    compiles the masking in only then."""

    def reset(self) -> np.ndarray:
        """First observations, float32 [N, *obs_shape]."""

    def step(self, actions: np.ndarray) -> HostBatch:
        """Step every environment with ``actions`` ([N] int or [N, d] float, unclipped)."""

    def close(self) -> None:
        """Release the environments."""
