"""Device adapters: JAX-native environments (gymnax, brax) as pure functions, so the
environment and a fleet of agents run together inside one ``lax.scan``.

An adapter has a static :class:`~streamrl.types.EnvSpec` and two pure functions::

    env_state, obs = adapter.reset(key)
    env_state, timestep = adapter.step(key, env_state, action)

``step`` auto-resets and returns a :class:`~streamrl.types.TimeStep`: ``obs`` is the
observation to act on next (the reset observation when the episode ended), ``final_obs``
the observation the step produced; ``terminated`` and ``truncated`` stay separate. Ids: ``gymnax:<name>`` (CartPole-v1, Acrobot-v1,
MountainCar-v0, Pendulum-v1, Breakout-MinAtar, Asterix-MinAtar, Freeway-MinAtar,
SpaceInvaders-MinAtar, …) and ``brax:<name>`` (ant, halfcheetah, hopper, walker2d, humanoid, …).
"""

from __future__ import annotations

import difflib
from typing import Callable

import jax
import jax.numpy as jnp

from streamrl import families
from streamrl.errors import MissingExtraError, UnknownEnvError, UnsupportedSpaceError
from streamrl.types import EnvSpec, TimeStep

__all__ = ["DeviceEnv", "make_device_env"]


class DeviceEnv:
    """A JAX-native environment: ``spec`` plus pure ``reset`` and auto-resetting ``step``
    (see the module docstring). Observations are float32 of ``spec.obs_shape``; actions
    are int32 scalars (Discrete) or float32 vectors clipped to the bounds (Box)."""

    def __init__(self, spec: EnvSpec, reset: Callable, step: Callable):
        self.spec = spec
        self.reset = reset
        self.step = step


def _missing(extra: str, exc: Exception) -> MissingExtraError:
    return MissingExtraError(f"this environment needs the {extra} extra ({exc}): pip install 'streamrl[{extra}]'")


def _suggest(name: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if close:
        return "; did you mean " + ", ".join(repr(prefix + c) for c in close) + "?"
    return "; known: " + ", ".join(prefix + k for k in known)


def _gymnax(name: str, max_episode_steps: int | None) -> DeviceEnv:
    try:
        import gymnax
        from gymnax.environments import spaces
    except ImportError as exc:
        raise _missing("gymnax", exc) from None
    if name not in gymnax.registered_envs:
        raise UnknownEnvError(f"unknown environment id 'gymnax:{name}'{_suggest(name, list(gymnax.registered_envs), 'gymnax:')}")
    env, params = gymnax.make(name)
    family = families.of_task("gymnax", name)
    act_space = env.action_space(params)
    limit = max_episode_steps or (family.episode_cap if isinstance(act_space, spaces.Discrete) else None)
    if limit is not None:
        params = params.replace(max_steps_in_episode=int(limit))
    obs_space, act_space = env.observation_space(params), env.action_space(params)
    if isinstance(act_space, spaces.Discrete):
        discrete, action_dim, low, high = True, int(act_space.n), (), ()
    elif isinstance(act_space, spaces.Box) and len(act_space.shape) <= 1:
        discrete = False
        action_dim = int(act_space.shape[0]) if act_space.shape else 1
        low = tuple(float(x) for x in jnp.broadcast_to(act_space.low, (action_dim,)))
        high = tuple(float(x) for x in jnp.broadcast_to(act_space.high, (action_dim,)))
    else:
        raise UnsupportedSpaceError(f"gymnax:{name} has {type(act_space).__name__} actions; streamrl supports Discrete and 1-D Box")
    spec = EnvSpec(
        env_id=f"gymnax:{name}",
        family=family.name,
        obs_shape=tuple(int(d) for d in obs_space.shape),
        discrete=discrete,
        action_dim=action_dim,
        action_low=low,
        action_high=high,
        time_limit=int(params.max_steps_in_episode),
    )
    scalar_box = not discrete and not act_space.shape

    def to_env(action):
        if discrete:
            return action
        action = jnp.clip(action, jnp.asarray(low), jnp.asarray(high))
        return action[0] if scalar_box else action

    def reset(key):
        obs, state = env.reset(key, params)
        return state, obs.astype(jnp.float32)

    def step(key, state, action):
        # gymnax's own auto-reset keeps terminated, truncated and the final observation apart.
        obs, state, reward, terminated, truncated, info = env.step(key, state, to_env(action), params)
        return state, TimeStep(
            obs.astype(jnp.float32),
            reward.astype(jnp.float32),
            terminated,
            truncated,
            info["final_observation"].astype(jnp.float32),
            jnp.logical_or(terminated, truncated),
        )

    return DeviceEnv(spec, reset, step)


def _brax(name: str, max_episode_steps: int | None) -> DeviceEnv:
    try:
        from brax import envs as brax_envs
    except ImportError as exc:
        raise _missing("brax", exc) from None
    known = sorted(brax_envs._envs)  # brax's registry of names
    if name not in known:
        raise UnknownEnvError(f"unknown environment id 'brax:{name}'{_suggest(name, known, 'brax:')}")
    family = families.of_task("brax", name)
    limit = int(max_episode_steps or family.episode_length)
    env = brax_envs.create(name, episode_length=limit, auto_reset=False)
    spec = EnvSpec(
        env_id=f"brax:{name}",
        family=family.name,
        obs_shape=(int(env.observation_size),),
        discrete=False,
        action_dim=int(env.action_size),
        action_low=(-1.0,) * int(env.action_size),
        action_high=(1.0,) * int(env.action_size),
        time_limit=limit,
    )

    def reset(key):
        state = env.reset(key)
        return state, state.obs.astype(jnp.float32)

    def step(key, state, action):
        nxt = env.step(state, jnp.clip(action, -1.0, 1.0))
        truncated = nxt.info["truncation"] > 0
        done = nxt.done > 0
        terminated = jnp.logical_and(done, jnp.logical_not(truncated))
        # The reset runs under lax.cond: skipped at run time unless this stream ended
        # (under vmap it becomes a select, and every stream pays for it).
        new_state = jax.lax.cond(done, lambda: env.reset(key), lambda: nxt)
        final_obs = nxt.obs.astype(jnp.float32)
        return new_state, TimeStep(new_state.obs.astype(jnp.float32), nxt.reward.astype(jnp.float32), terminated, truncated, final_obs, done)

    return DeviceEnv(spec, reset, step)


def make_device_env(env_id: str, max_episode_steps: int | None = None) -> DeviceEnv:
    """The device adapter for ``gymnax:<name>`` or ``brax:<name>``.

    Tasks get their family's episode cap (:mod:`streamrl.families`: the paper's 10,000
    steps for Discrete classic control, like the host driver; brax episodes last 1,000
    steps). ``max_episode_steps`` overrides both.

    Raises:
      UnknownEnvError: unknown name (close matches suggested).
      MissingExtraError: gymnax or brax not installed (names the pip extra).
      UnsupportedSpaceError: actions neither Discrete nor 1-D Box.
    """
    prefix, _, name = env_id.partition(":")
    if prefix == "gymnax":
        return _gymnax(name, max_episode_steps)
    if prefix == "brax":
        return _brax(name, max_episode_steps)
    raise UnknownEnvError(f"{env_id!r} is not a device environment id (prefixes: gymnax:, brax:)")
