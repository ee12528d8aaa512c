"""EnvPool host adapter: a fleet fed by one EnvPool batch, environment i for agent i.

EnvPool auto-resets on the call AFTER an episode ends: that call ignores the action and
returns the reset observation with reward 0 (the "inserted reset step"). This adapter never
lets it reach an agent as a transition:

* on the call where environment i ends an episode, agent i is inactive (it does not learn
  or act); the transition (reward, terminated, truncated, final observation) is held;
* on the next call (EnvPool's reset step) agent i learns from the held transition, with
  the reset observation as the observation to act on next, and chooses its action.

Episodic returns and lengths count real transitions only. Ids: ``envpool:<task id>``
(``envpool:CartPole-v1``, ``envpool:HalfCheetah-v5``, …).
"""

from __future__ import annotations

import difflib

import numpy as np

from streamrl import families
from streamrl.errors import MissingExtraError, UnknownEnvError, UnsupportedSpaceError
from streamrl.types import Episode, EnvSpec, HostBatch

__all__ = ["EnvPoolEnvs", "make_envpool"]


class EnvPoolEnvs:
    """N EnvPool environments as a batched host adapter, a :class:`~streamrl.types.HostEnvs`
    (see the module docstring).

    ``reset()`` returns float32 observations [N, *obs_shape]. ``step(actions)`` returns a
    :class:`~streamrl.types.HostBatch` whose TimeStep fields hold for the agents with
    ``active[i]``; ``active`` [N] bool is False for the agents that wait for EnvPool's
    reset step.
    """

    masks_agents = True

    def __init__(self, pool, spec: EnvSpec):
        self.pool, self.spec = pool, spec
        self.num_envs = n = pool.config["num_envs"]
        self._held = np.zeros(n, bool)  # episode ended on the previous call: this call resets
        self._held_reward = np.zeros(n, np.float64)
        self._held_terminated = np.zeros(n, bool)
        self._held_truncated = np.zeros(n, bool)
        self._held_final = np.zeros((n, *spec.obs_shape), np.float32)
        self._return = np.zeros(n, np.float64)
        self._length = np.zeros(n, np.int64)
        self._low = np.asarray(spec.action_low, np.float32)
        self._high = np.asarray(spec.action_high, np.float32)

    def reset(self) -> np.ndarray:
        obs, _ = self.pool.reset()
        self._held[:] = False
        self._return[:] = 0.0
        self._length[:] = 0
        return np.asarray(obs, np.float32)

    def step(self, actions):
        actions = np.asarray(actions) if self.spec.discrete else np.clip(actions, self._low, self._high)
        obs, reward, terminated, truncated, _ = self.pool.step(actions)
        obs = np.asarray(obs, np.float32)
        resetting = self._held.copy()
        live = ~resetting
        ended = live & (terminated | truncated)

        # Transitions the agents learn from this call.
        rewards = np.where(resetting, self._held_reward, reward)
        term = np.where(resetting, self._held_terminated, terminated & live)
        trunc = np.where(resetting, self._held_truncated, truncated & live)
        final_obs = obs.copy()
        final_obs[resetting] = self._held_final[resetting]

        # Book real transitions only; hold the ones that end an episode.
        self._return[live] += reward[live]
        self._length[live] += 1
        episodes = [Episode(int(i), float(self._return[i]), int(self._length[i])) for i in np.flatnonzero(ended)]
        self._held_reward[ended] = reward[ended]
        self._held_terminated[ended] = terminated[ended]
        self._held_truncated[ended] = truncated[ended]
        self._held_final[ended] = obs[ended]
        self._return[ended] = 0.0
        self._length[ended] = 0
        self._held = ended
        return HostBatch(obs, rewards, term, trunc, final_obs, resetting, ~ended, episodes)

    def close(self) -> None:
        self.pool.close()


def make_envpool(env_id: str, seeds, max_episode_steps: int | None = None) -> EnvPoolEnvs:
    """EnvPool batch for ``envpool:<task id>`` with one environment per seed.

    EnvPool seeds its environments from one base seed (environment i gets ``seeds[0] + i``
    in EnvPool's own scheme), so streams match other EnvPool runs with the same seeds, not
    Gymnasium runs. Tasks get their family's episode cap (:mod:`streamrl.families`: the
    paper's 10,000 steps for Discrete classic control).

    Raises MissingExtraError (envpool not installed), UnknownEnvError (unknown task, close
    matches suggested) and UnsupportedSpaceError.
    """
    try:
        import envpool
        import gymnasium as gym
    except ImportError as exc:
        raise MissingExtraError(f"{env_id} needs the envpool extra ({exc}): pip install 'streamrl[envpool]'") from None
    task = env_id.partition(":")[2]
    known = envpool.list_all_envs()
    if task not in known:
        close = difflib.get_close_matches(task, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr('envpool:' + c) for c in close)}?" if close else ""
        raise UnknownEnvError(f"unknown environment id {env_id!r}{hint}")
    kwargs = {"env_type": "gymnasium", "num_envs": len(seeds), "seed": int(seeds[0])}
    family = families.of_task("envpool", task)
    if max_episode_steps is None and family.episode_cap is not None:
        max_episode_steps = family.episode_cap
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    pool = envpool.make(task, **kwargs)
    obs_space, act_space = pool.observation_space, pool.action_space
    if not isinstance(obs_space, gym.spaces.Box):
        raise UnsupportedSpaceError(f"{env_id} has {type(obs_space).__name__} observations; streamrl supports Box")
    discrete = isinstance(act_space, gym.spaces.Discrete)
    if not discrete and not (isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1):
        raise UnsupportedSpaceError(f"{env_id} has {type(act_space).__name__} actions; streamrl supports Discrete and 1-D Box")
    spec = EnvSpec(
        env_id=env_id,
        family=family.name,
        obs_shape=tuple(int(d) for d in obs_space.shape),
        discrete=discrete,
        action_dim=int(act_space.n) if discrete else int(act_space.shape[0]),
        action_low=() if discrete else tuple(float(x) for x in act_space.low),
        action_high=() if discrete else tuple(float(x) for x in act_space.high),
        time_limit=int(pool.spec.config.max_episode_steps),
    )
    return EnvPoolEnvs(pool, spec)
