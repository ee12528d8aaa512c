"""Small Gymnasium environments that exercise streamrl's error paths. Importing this
module registers them; use the ids as ``envs_for_tests:<Id>``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class _Base(gym.Env):
    def __init__(self, episode_length=3):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.episode_length = episode_length
        self.t = 0
        self.total = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        self.total += 1
        return np.full(3, 0.1, np.float32), 1.0, self.t >= self.episode_length, False, {}


class NaNRewardEnv(_Base):
    """Episodes of 3 steps; the reward of global step 7 is NaN."""

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        return obs, (float("nan") if self.total == 7 else r), term, trunc, info


class InfObsEnv(_Base):
    """Observation of global step 5 contains +inf."""

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        if self.total == 5:
            obs = obs.copy()
            obs[1] = np.inf
        return obs, r, term, trunc, info


class HugeRewardEnv(_Base):
    """Episodes of 3 steps with varied observations; from global step 250 on the reward is
    3e38 (finite): with --kappa 0 and no reward scaling, the learner's parameters blow up."""

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        obs = np.array([np.sin(self.total), np.cos(self.total), float(action)], np.float32)
        return obs, (3e38 if self.total >= 250 else r), term, trunc, info


class DictObsEnv(_Base):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1.0, 1.0, (3,), np.float32)})


class MultiDiscreteEnv(_Base):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.MultiDiscrete([2, 3])


gym.register("NaNReward-v0", entry_point=NaNRewardEnv)
gym.register("InfObs-v0", entry_point=InfObsEnv)
gym.register("DictObs-v0", entry_point=DictObsEnv)
gym.register("HugeReward-v0", entry_point=HugeRewardEnv)
gym.register("MultiDiscreteAct-v0", entry_point=MultiDiscreteEnv)
