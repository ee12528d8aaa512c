"""The host driver: one Gymnasium stream, one jitted call per environment step.

Each environment step the driver (1) steps the environment with the agent's action,
(2) makes ONE jitted call that learns from the transition and picks the next action with
the new parameters, and (3) books finished episodes, written to the run directory in chunks.

Speed (measured, see docs/benchmarks.md): on this CPU a standalone jitted call costs about
1 µs per XLA kernel plus a cost per argument and result buffer. The agent state is a pytree
of ~30-50 small arrays, so the driver passes it as ONE flat uint32 buffer (bit-exact,
donated), and the TimeStep and hyper-parameters as one float32 vector each; this cuts the
call cost by about a third against passing the pytrees themselves.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from streamrl.agents import ALGORITHMS, AgentState, HParams, StreamAgent, TimeStep
from streamrl.config import Resolved, TrainConfig, resolve
from streamrl.envs.gym import GymnasiumEnv, make_env
from streamrl.errors import NonFiniteError

__all__ = ["FlatCodec", "HostStepper", "train"]


class FlatCodec:
    """Packs a pytree of arrays into one uint32 vector and back, bit-exactly.

    Built from an example tree; every leaf must be 32-bit (float32, int32, uint32) or bool.
    Pure JAX, usable inside jit.
    """

    def __init__(self, example: Any):
        leaves, self.treedef = jax.tree_util.tree_flatten(example)
        self.meta = [(tuple(x.shape), jnp.dtype(x.dtype)) for x in leaves]
        for shape, dtype in self.meta:
            if dtype != jnp.bool_ and dtype.itemsize != 4:
                raise TypeError(f"FlatCodec needs 32-bit or bool leaves, got {dtype}")
        self.size = sum(math.prod(s) for s, _ in self.meta)

    def pack(self, tree: Any) -> jax.Array:
        # Per-leaf bitcasts into one concatenate. (Grouping leaves by dtype first makes
        # fewer kernels but measured slower: 222 → 320 µs for Stream AC on HalfCheetah.)
        words = []
        for x in jax.tree_util.tree_leaves(tree):
            x = x.astype(jnp.uint32) if x.dtype == jnp.bool_ else jax.lax.bitcast_convert_type(x, jnp.uint32)
            words.append(x.reshape(-1))
        return jnp.concatenate(words)

    def unpack(self, flat: jax.Array) -> Any:
        leaves, offset = [], 0
        for shape, dtype in self.meta:
            n = math.prod(shape)
            w = flat[offset : offset + n].reshape(shape)
            offset += n
            leaves.append(w != 0 if dtype == jnp.bool_ else jax.lax.bitcast_convert_type(w, dtype))
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


class HostStepper:
    """One agent on a host environment: the jitted init and the jitted per-step call.

    ``start(obs)`` initialises the agent from the first raw observation and returns the
    first action (NumPy); ``step(obs, reward, terminated, truncated, final_obs)`` learns from
    the transition and returns the next action. ``state`` unpacks the current AgentState.
    """

    def __init__(self, agent: StreamAgent, hparams: HParams, seed: int):
        self.agent = agent
        self.hparams = hparams.as_arrays()
        self._hp_vec = jnp.stack(list(self.hparams))
        self._key = jax.random.PRNGKey(seed)
        self._obs_size = math.prod(agent.config.obs_shape)
        self._codec: FlatCodec | None = None
        self._buf = None
        self._step_fn: Callable | None = None

    def _build(self, example_state: AgentState) -> None:
        codec = self._codec = FlatCodec(example_state)
        agent, n = self.agent, self._obs_size
        shape = agent.config.obs_shape

        def step(buf, ts_vec, hp_vec):
            ts = TimeStep(
                obs=ts_vec[:n].reshape(shape),
                reward=ts_vec[2 * n],
                terminated=ts_vec[2 * n + 1] > 0,
                truncated=ts_vec[2 * n + 2] > 0,
                final_obs=ts_vec[n : 2 * n].reshape(shape),
            )
            hp = HParams(*(hp_vec[i] for i in range(len(HParams._fields))))
            state, action = agent.step(codec.unpack(buf), ts, hp)
            return codec.pack(state), action

        return jax.jit(step, donate_argnums=0)

    def start(self, obs: np.ndarray) -> np.ndarray:
        """Initialise from the first raw observation, compile the step ahead of time (so
        the first environment step is not a compile), and return the first action."""
        t0 = time.perf_counter()
        state = jax.jit(self.agent.init)(self._key, jnp.asarray(obs, jnp.float32), self.hparams)
        step = self._build(state)
        self._buf = jax.jit(self._codec.pack)(state)
        self._ts = np.zeros(2 * self._obs_size + 3, np.float32)
        self._step_fn = step.lower(self._buf, self._ts, self._hp_vec).compile()
        self.compile_s = time.perf_counter() - t0
        return np.asarray(state.action)

    def step(self, obs, reward: float, terminated: bool, truncated: bool, final_obs) -> np.ndarray:
        n, ts = self._obs_size, self._ts
        ts[:n] = np.ravel(obs)
        ts[n : 2 * n] = np.ravel(final_obs)
        ts[2 * n : 2 * n + 3] = (reward, terminated, truncated)
        self._buf, action = self._step_fn(self._buf, ts, self._hp_vec)
        return np.asarray(action)

    @property
    def state(self) -> AgentState:
        return self._codec.unpack(self._buf)


def _check_finite(obs: np.ndarray, reward: float, step: int, env_id: str) -> None:
    if not math.isfinite(reward):
        raise NonFiniteError(f"{env_id} returned a non-finite reward ({reward}) at step {step}; run stopped", step)
    if not np.isfinite(obs).all():
        raise NonFiniteError(f"{env_id} returned a non-finite observation at step {step}; run stopped", step)


def train(cfg: TrainConfig, *, console=None) -> "Path":  # noqa: F821
    """Run ``cfg`` on a host Gymnasium environment and write its run directory.

    Returns the run directory. Raises the streamrl errors of :func:`make_env` and
    :func:`~streamrl.config.resolve` before anything is written, and
    :class:`~streamrl.errors.NonFiniteError` (after writing the records so far and a
    summary with ``status: failed``) when the environment emits NaN or inf.
    """
    from streamrl.results import RunWriter, progress_bar

    env = make_env(cfg.env, seed=cfg.seed, max_episode_steps=cfg.max_episode_steps)
    try:
        resolved: Resolved = resolve(cfg, env.spec)
        writer = RunWriter.create(cfg, resolved, env.spec)
        _loop(cfg, env, resolved, writer, console, progress_bar)
    finally:
        env.close()
    return writer.path


def _loop(cfg, env: GymnasiumEnv, resolved: Resolved, writer, console, progress_bar) -> None:
    agent = ALGORITHMS[cfg.algo](resolved.agent)
    stepper = HostStepper(agent, resolved.hparams, cfg.seed)
    total = resolved.total_steps
    obs = env.reset()
    _check_finite(obs, 0.0, 0, cfg.env)
    action = stepper.start(obs)
    status, error = "completed", None
    t0 = time.perf_counter()
    step = 0
    with progress_bar(total, enabled=cfg.progress, console=console) as bar:
        try:
            while step < total:
                obs, reward, terminated, truncated, final_obs, episode = env.step(action)
                step += 1
                _check_finite(final_obs, reward, step, cfg.env)
                if episode is not None:
                    _check_finite(obs, 0.0, step, cfg.env)
                    writer.add_episode(agent=0, seed=cfg.seed, end_step=step, episodic_return=episode[0], length=episode[1])
                action = stepper.step(obs, reward, terminated, truncated, final_obs)
                if step % 1024 == 0:
                    bar.update(step, writer.episodes_written, writer.recent_return())
                    writer.maybe_flush()
        except NonFiniteError as exc:
            status, error = "failed", exc
        except KeyboardInterrupt as exc:
            status, error = "interrupted", exc
        wall = time.perf_counter() - t0
        bar.update(step, writer.episodes_written, writer.recent_return())
    writer.finish(
        steps=step, wall_time_s=wall, status=status, message=str(error) if error else None, compile_s=stepper.compile_s
    )
    if error is not None:
        raise error
