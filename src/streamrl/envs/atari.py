"""Atari (ALE) preprocessing of the paper, built on Gymnasium's own wrappers.

The stack, innermost first (docs/algorithms.md "Benchmark families"; Mnih et al. 2015, Nature
518, "Methods: preprocessing"; Machado et al. 2018, JAIR 61, for the sticky actions that
ALE v5 ids keep):

1. ``gym.make(id, frameskip=1)``: the emulator steps one frame per call, because
2. :class:`gymnasium.wrappers.AtariPreprocessing` does the no-op reset (up to 30 no-ops),
   max-and-skip 4 (the max over the last two of four frames, rewards summed), and the
   84×84 grayscale resize (``INTER_AREA``, as Gymnasium does). No reward clipping, no
   scaling: the agent normalises each frame with its own running statistics;
3. an optional :class:`gymnasium.wrappers.TimeLimit` in agent steps (``--max-episode-steps``);
4. :class:`EpisodicLife`: losing a life is a terminal state *for the learner*
   (``terminated``: no bootstrap, traces reset) while the game goes on;
   ``info["game_over"]`` tells the adapter whether the game really ended, so the reported
   episodic return is the full-game score. Two behaviours after a lost life
   (``--life-loss``):

   * ``continue`` (default; what the official stream-x Atari scripts do, so what the
     paper's Atari numbers used): nothing is reset. The next observation is the next
     frame, the agent's frame stack goes on, no FIRE is pressed; only game over resets.
   * ``restart`` (OpenAI Baselines' ``EpisodicLifeEnv`` + ``FireResetEnv`` as most DQN
     code uses them): the learner starts a new episode: one no-op step, FIRE pressed
     again, a fresh frame stack;
5. :class:`FireOnReset`: press FIRE after every reset (game start, and with ``restart``
   after a lost life) in games that need it to start.

Gymnasium has no wrappers for 4 and 5 (they come from OpenAI Baselines' ``atari_wrappers``),
so they are written here. Frame stacking (4) happens in the agent, after per-frame
normalisation: see :class:`streamrl.agents.base.StreamAgent.observe`.
"""

from __future__ import annotations

import gymnasium as gym

from streamrl.errors import MissingExtraError

__all__ = ["EpisodicLife", "FireOnReset", "wrap_atari", "LIFE_LOSS", "FRAME_STACK", "NOOP_MAX", "FRAME_SKIP", "SCREEN_SIZE"]

LIFE_LOSS = ("continue", "restart")
"""What follows a lost life: ``continue`` (the official code's) or ``restart`` (Baselines')."""

FRAME_STACK = 4
NOOP_MAX = 30
FRAME_SKIP = 4
SCREEN_SIZE = 84


def _lives(env: gym.Env) -> int:
    return int(env.unwrapped.ale.lives())


class EpisodicLife(gym.Wrapper):
    """Loss of a life is a terminal state for the learner, not for the game.

    ``step`` returns ``terminated=True`` when a life is lost (the game continues) and sets
    ``info["game_over"]`` (True only when the game itself terminated or was truncated).
    With ``life_loss="continue"`` it also sets ``info["continues"]`` on a lost life: the
    adapter must not reset. With ``"restart"``, ``reset`` after a life loss does not
    restart the game: it takes one no-op step and returns its observation, with that
    step's reward in ``info["reset_reward"]``.
    """

    def __init__(self, env: gym.Env, life_loss: str = "continue"):
        super().__init__(env)
        if life_loss not in LIFE_LOSS:
            raise ValueError(f"life_loss must be one of {LIFE_LOSS}, got {life_loss!r}")
        self.life_loss = life_loss
        self._lives = 0
        self._game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = bool(terminated or truncated)
        lives = _lives(self.env)
        if 0 < lives < self._lives and not self._game_over:
            terminated = True
            info["continues"] = self.life_loss == "continue"
        self._lives = lives
        info["game_over"] = self._game_over
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self._game_over:
            obs, info = self.env.reset(**kwargs)
            info["reset_reward"] = 0.0
        else:
            obs, reward, terminated, truncated, info = self.env.step(0)
            info["reset_reward"] = float(reward)
            if terminated or truncated:  # the no-op ended the game: start a new one
                obs, info = self.env.reset(**kwargs)
                info["reset_reward"] = 0.0
        self._game_over = False
        self._lives = _lives(self.env)
        return obs, info


class FireOnReset(gym.Wrapper):
    """Press FIRE (action 1), then action 2, after each reset, in games whose action 1 is
    FIRE (Breakout, Pong, …); rewards of these steps go to ``info["reset_reward"]``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.needs_fire = len(meanings) >= 3 and meanings[1] == "FIRE"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        extra = float(info.get("reset_reward", 0.0))
        if not self.needs_fire:
            return obs, info
        for action in (1, 2):
            obs, reward, terminated, truncated, step_info = self.env.step(action)
            extra += float(reward)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
                extra = float(info.get("reset_reward", 0.0))
        info = dict(info, reset_reward=extra)
        return obs, info


def wrap_atari(env: gym.Env, max_episode_steps: int | None = None, life_loss: str = "continue") -> gym.Env:
    """The paper's preprocessing around an ALE environment made with ``frameskip=1``;
    ``life_loss`` (``"continue"`` or ``"restart"``) as in the module docstring.

    Returns an environment with uint8 observations of shape (84, 84, 1) (one grayscale
    frame; the agent stacks 4) and the game's Discrete action set.

    Raises:
      MissingExtraError: OpenCV (needed by Gymnasium's AtariPreprocessing) is missing.
    """
    try:
        import cv2  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "Atari preprocessing needs OpenCV, which is not installed: pip install 'streamrl[atari]'"
        ) from None
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=NOOP_MAX,
        frame_skip=FRAME_SKIP,
        screen_size=SCREEN_SIZE,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        grayscale_newaxis=True,
        scale_obs=False,
    )
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    return FireOnReset(EpisodicLife(env, life_loss))
