"""The drivers. A run is a fleet of N ≥ 1 independent agents (seeds × hyper-parameter
settings), agent i on environment i, each learning from its own stream.

* Host driver (:class:`HostStepper`; Gymnasium and EnvPool environments): each environment
  step the driver (1) steps the environments with the agents' actions, (2) makes ONE jitted
  call in which every agent learns from its own transition and picks its next action with
  its new parameters (``jax.vmap`` over the fleet), and (3) books finished episodes,
  written to the run directory in chunks.
* Device driver (:class:`DeviceFleet`; gymnax and brax): environments and fleet run together
  in one ``lax.scan``, a chunk of steps per jitted call, with no Python in the loop.

Speed (measured, see docs/benchmarks.md): on this CPU a standalone jitted call costs about
1 µs per XLA kernel plus a cost per argument and result buffer. The agent state is a pytree
of ~30-50 arrays, so the driver passes its small leaves as ONE flat uint32 buffer
(bit-exact, donated) and only its weight-sized leaves separately, and the TimeStep and
hyper-parameters as one float32 vector each; this cuts the call cost by about a third
against passing the pytrees themselves.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from streamrl.agents import ALGORITHMS, AgentState, HParams, StreamAgent, TimeStep
from streamrl.config import Member, Resolved, TrainConfig, resolve
from streamrl.envs.gym import make_env, make_envs
from streamrl.errors import NonFiniteError

__all__ = ["FlatCodec", "HostStepper", "DeviceFleet", "fleet", "stack_hparams", "train"]


class FlatCodec:
    """Packs a pytree of arrays into one uint32 vector and back, bit-exactly.

    Built from an example tree; every leaf must be 32-bit (float32, int32, uint32) or bool.
    Pure JAX, usable inside jit. With ``separate_from=k``, leaves of k or more elements
    stay separate arrays: ``pack`` returns ``(flat, (big leaf, ...))``; without it, the flat
    vector alone.
    """

    def __init__(self, example: Any, separate_from: int | None = None):
        leaves, self.treedef = jax.tree_util.tree_flatten(example)
        self.meta = [(tuple(x.shape), jnp.dtype(x.dtype)) for x in leaves]
        for shape, dtype in self.meta:
            if dtype != jnp.bool_ and dtype.itemsize != 4:
                raise TypeError(f"FlatCodec needs 32-bit or bool leaves, got {dtype}")
        self.separate_from = separate_from
        self.big = [separate_from is not None and math.prod(shape) >= separate_from for shape, _ in self.meta]

    def pack(self, tree: Any):
        # Per-leaf bitcasts into one concatenate. (Grouping leaves by dtype first makes
        # fewer kernels but measured slower: 222 → 320 µs for Stream AC on HalfCheetah.)
        words, big = [], []
        for x, separate in zip(jax.tree_util.tree_leaves(tree), self.big):
            if separate:
                big.append(x)
                continue
            x = x.astype(jnp.uint32) if x.dtype == jnp.bool_ else jax.lax.bitcast_convert_type(x, jnp.uint32)
            words.append(x.reshape(-1))
        flat = jnp.concatenate(words) if words else jnp.zeros((0,), jnp.uint32)
        return flat if self.separate_from is None else (flat, tuple(big))

    def unpack(self, packed) -> Any:
        flat, big = (packed, ()) if self.separate_from is None else packed
        leaves, offset, big = [], 0, iter(big)
        for (shape, dtype), separate in zip(self.meta, self.big):
            if separate:
                leaves.append(next(big))
                continue
            n = math.prod(shape)
            w = flat[offset : offset + n].reshape(shape)
            offset += n
            leaves.append(w != 0 if dtype == jnp.bool_ else jax.lax.bitcast_convert_type(w, dtype))
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


SEPARATE_LEAF_SIZE = 1 << 12
"""The host driver passes the agent state as one flat, donated uint32 buffer, except leaves
of this many elements or more (weight matrices and their traces), which stay separate
donated arrays that XLA updates in place. Measured per agent step on a 2-core CPU, all flat
/ every leaf separate / this (two runs each): Q CartPole 118 / 153 / 114 µs (no leaf that
large), AC CartPole 182 / 213 / 170, AC HalfCheetah 207–210 / 222–225 / 191–195, Q MinAtar
349–355 / 280–281 / 257–265, Q Atari 876 / 801 / 793. For large arrays the bitcasts and the
concatenate of an all-flat buffer copy each array again every step; many small separate
buffers cost per-argument overhead."""


def fleet(f: Callable, n: int) -> Callable:
    """``f`` over a leading fleet axis of size ``n``: ``jax.vmap(f)`` for n > 1; for n = 1
    the unbatched ``f`` with the axis squeezed and restored (the same values, and the
    single stream keeps its unbatched program)."""
    if n > 1:
        return jax.vmap(f)

    def single(*args):
        out = f(*jax.tree_util.tree_map(lambda x: x[0], args))
        return jax.tree_util.tree_map(lambda x: x[None], out)

    return single


def stack_hparams(members: Sequence[Member]) -> HParams:
    """The members' hyper-parameters as one HParams of float32 [N] arrays (traced by jit)."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *(m.hparams.as_arrays() for m in members))


class HostStepper:
    """A fleet of N agents on host environments: the jitted init and per-step call.

    Agent i has seed ``members[i].seed`` and hyper-parameters ``members[i].hparams``; all
    N learn in one jitted call per environment step (vmapped), each from its own stream.

    ``start(obs)`` takes raw first observations [N, *obs_shape] and returns the first
    actions [N] or [N, d] (NumPy); ``step(obs, rewards, terminated, truncated, final_obs)``
    (arrays with a leading N axis) learns from the transitions and returns the next actions.
    ``state`` unpacks the current fleet AgentState (leaves with a leading N axis).
    """

    def __init__(self, agent: StreamAgent, members: Sequence[Member], *, masked: bool = False):
        self.agent = agent
        self.n = len(members)
        self.masked = masked
        self.hparams = stack_hparams(members)
        self._hp_mat = jnp.stack(list(self.hparams), axis=1)  # [N, fields]: one argument
        self._keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in members])
        self._obs_size = math.prod(agent.config.obs_shape)
        self._codec: FlatCodec | None = None
        self._buf = None
        self._step_fn: Callable | None = None
        self.compile_s = 0.0

    def _build(self, example_state: AgentState):
        """The jitted step for ``example_state``: the fleet state (leading N axis) for
        N > 1, the unbatched state for a single stream (a leading axis of 1 sliced off and
        put back inside the program costs XLA copies of every donated leaf: measured
        ~40 µs a step on MinAtar). The state crosses the boundary packed by
        :class:`FlatCodec` (small leaves in one buffer, weight-sized leaves separate)."""
        codec = self._codec = FlatCodec(example_state, separate_from=SEPARATE_LEAF_SIZE)
        agent, n = self.agent, self._obs_size
        shape = agent.config.obs_shape

        def one(state, ts_vec, hp_vec):
            ts = TimeStep(
                obs=ts_vec[:n].reshape(shape),
                reward=ts_vec[2 * n],
                terminated=ts_vec[2 * n + 1] > 0,
                truncated=ts_vec[2 * n + 2] > 0,
                final_obs=ts_vec[n : 2 * n].reshape(shape),
            )
            hp = HParams(*(hp_vec[i] for i in range(len(HParams._fields))))
            return agent.step(state, ts, hp)

        batched = self.n > 1

        def step(buf, ts_mat, hp_mat):
            old = codec.unpack(buf)
            if batched:
                states, actions = jax.vmap(one)(old, ts_mat, hp_mat)
            else:
                states, actions = one(old, ts_mat[0], hp_mat[0])
            if self.masked:  # inactive agents (waiting for EnvPool's reset step) keep their state
                active = ts_mat[:, 2 * n + 3] > 0 if batched else ts_mat[0, 2 * n + 3] > 0
                keep = lambda new, prev: jnp.where(active.reshape(active.shape + (1,) * (new.ndim - active.ndim)), new, prev)  # noqa: E731
                states = jax.tree_util.tree_map(keep, states, old)
                actions = keep(actions, old.action)
            return codec.pack(states), actions if batched else actions[None]

        return jax.jit(step, donate_argnums=0)

    def start(self, obs: np.ndarray) -> np.ndarray:
        """Initialise from the first raw observations [N, *obs_shape], compile the step
        ahead of time (so the first environment step is not a compile), and return the
        first actions."""
        t0 = time.perf_counter()
        init = jax.jit(fleet(self.agent.init, self.n))
        state = init(self._keys, jnp.asarray(obs, jnp.float32), self.hparams)
        if self.n == 1:
            state = jax.tree_util.tree_map(lambda x: x[0], state)
        step = self._build(state)
        self._buf = jax.jit(self._codec.pack)(state)
        self._ts = np.zeros((self.n, 2 * self._obs_size + 3 + self.masked), np.float32)
        self._step_fn = step.lower(self._buf, self._ts, self._hp_mat).compile()
        self.compile_s = time.perf_counter() - t0
        return np.asarray(state.action).reshape(self.n, *np.shape(state.action)[self.n > 1 :])

    def step(self, obs, rewards, terminated, truncated, final_obs, active=None) -> np.ndarray:
        """Learn from one transition per agent and return the next actions. ``active`` [N]
        (only with ``masked=True``): agents marked False neither learn nor change action."""
        n, ts = self._obs_size, self._ts
        ts[:, :n] = obs.reshape(self.n, n)
        ts[:, n : 2 * n] = final_obs.reshape(self.n, n)
        ts[:, 2 * n] = rewards
        ts[:, 2 * n + 1] = terminated
        ts[:, 2 * n + 2] = truncated
        if self.masked:
            ts[:, 2 * n + 3] = True if active is None else active
        self._buf, actions = self._step_fn(self._buf, ts, self._hp_mat)
        return np.asarray(actions)

    @property
    def state(self) -> AgentState:
        """The fleet's AgentState, every leaf with a leading N axis (N = 1 included)."""
        state = self._codec.unpack(self._buf)
        return state if self.n > 1 else jax.tree_util.tree_map(lambda x: x[None], state)


def _agent_label(members, i: int) -> str:
    """' for agent i (seed s)' in a fleet, '' for a single stream (error messages)."""
    return f" for agent {i} (seed {members[i].seed})" if len(members) > 1 else ""


def _check_finite(obs: np.ndarray, rewards: np.ndarray, step: int, env_id: str, members) -> None:
    if np.isfinite(rewards).all() and np.isfinite(obs).all():
        return
    for what, values in (("reward", rewards), ("observation", obs)):
        finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if not finite.all():
            i = int(np.argmin(finite))
            shown = f" ({values[i]})" if what == "reward" else ""
            raise NonFiniteError(
                f"{env_id} returned a non-finite {what}{shown} at step {step}{_agent_label(members, i)}; run stopped", step
            )


class DeviceFleet:
    """A fleet of N agents and N JAX-native environments stepped together in ``lax.scan``.

    ``run(steps)`` advances every stream by ``steps`` environment steps in ONE jitted call
    (no Python in the loop) and returns per-step arrays of shape [steps, N]: ``done``,
    ``episodic_return`` and ``length`` (the episode's totals, meaningful where ``done``),
    and ``bad`` (a non-finite reward or observation). With ``trace=True`` it also returns
    the actions taken and the TimeSteps seen (for tests). The carry is donated, so memory
    stays flat however long the run.

    Agent i uses ``PRNGKey(members[i].seed)`` exactly as on a host environment; its
    environment draws from ``fold_in(PRNGKey(seed), ENV_STREAM)``: the reset at the start
    uses ``split(env_key)[0]``, step t uses ``fold_in(split(env_key)[1], t)``.
    """

    ENV_STREAM = 0x5EED

    def __init__(self, agent: StreamAgent, env, members: Sequence[Member]):
        self.agent, self.env, self.n = agent, env, len(members)
        self.hparams = stack_hparams(members)
        self._agent_keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in members])
        env_keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(m.seed), self.ENV_STREAM) for m in members])
        self.reset_keys, self.step_keys = jax.vmap(jax.random.split, out_axes=1)(env_keys)
        self._carry = None
        self._chunks: dict[tuple[int, bool], Callable] = {}
        self.compile_s = 0.0

    def start(self) -> None:
        """Reset the environments and initialise the agents on the first observations."""
        t0 = time.perf_counter()

        def init(agent_keys, reset_keys, hp):
            env_states, obs = fleet(self.env.reset, self.n)(reset_keys)
            states = fleet(self.agent.init, self.n)(agent_keys, obs, hp)
            zeros = jnp.zeros(self.n, jnp.float32)
            return states, env_states, zeros, zeros.astype(jnp.int32), jnp.zeros((), jnp.int32)

        self._carry = jax.jit(init)(self._agent_keys, self.reset_keys, self.hparams)
        self.compile_s += time.perf_counter() - t0

    def _chunk(self, length: int, trace: bool) -> Callable:
        agent, env, n = self.agent, self.env, self.n

        def one(state, env_state, ep_return, ep_length, key, hp):
            env_state, (obs, reward, terminated, truncated, final_obs) = env.step(key, env_state, state.action)
            ts = TimeStep(obs, reward, terminated, truncated, final_obs)
            new_state, _ = agent.step(state, ts, hp)
            done = jnp.logical_or(terminated, truncated)
            ep_return, ep_length = ep_return + reward, ep_length + 1
            bad = ~(jnp.isfinite(reward) & jnp.all(jnp.isfinite(final_obs)) & jnp.all(jnp.isfinite(obs)))
            out = (done, ep_return, ep_length, bad) + ((state.action, ts) if trace else ())
            ep_return = jnp.where(done, 0.0, ep_return)
            ep_length = jnp.where(done, 0, ep_length)
            return (new_state, env_state, ep_return, ep_length), out

        stepper = fleet(one, n)

        def run(carry, step_keys, hp):
            def body(c, _):
                states, env_states, ep_return, ep_length, t = c
                keys = jax.vmap(jax.random.fold_in, (0, None))(step_keys, t)
                (states, env_states, ep_return, ep_length), out = stepper(
                    states, env_states, ep_return, ep_length, keys, hp
                )
                return (states, env_states, ep_return, ep_length, t + 1), out

            return jax.lax.scan(body, carry, None, length=length)

        return jax.jit(run, donate_argnums=0)

    def compile(self, steps: int, *, trace: bool = False) -> Callable:
        """The compiled chunk of ``steps`` steps (compiled once per length; time in compile_s)."""
        key = (steps, trace)
        if key not in self._chunks:
            t0 = time.perf_counter()
            self._chunks[key] = self._chunk(steps, trace).lower(self._carry, self.step_keys, self.hparams).compile()
            self.compile_s += time.perf_counter() - t0
        return self._chunks[key]

    def run(self, steps: int, *, trace: bool = False):
        """Advance every stream by ``steps``; returns the per-step outputs as NumPy arrays."""
        self._carry, out = self.compile(steps, trace=trace)(self._carry, self.step_keys, self.hparams)
        return jax.tree_util.tree_map(np.asarray, out)

    @property
    def state(self) -> AgentState:
        return self._carry[0]


def final_checkpoint_meta(cfg: TrainConfig, resolved: Resolved) -> dict:
    """The checkpoint meta of a run (what a restored state must match)."""
    from streamrl.checkpoint import checkpoint_meta
    from streamrl.results import jsonable

    return checkpoint_meta(cfg.algo, cfg.env, jsonable(resolved.agent), len(resolved.members))


def _save_state(path: Path, cfg: TrainConfig, resolved: Resolved, step: int, state: AgentState) -> None:
    """Checkpoint the fleet's state (the run directory keeps the final agents for
    ``streamrl eval``)."""
    from streamrl import checkpoint

    checkpoint.save(path, step, state, final_checkpoint_meta(cfg, resolved))


def _train_device(cfg: TrainConfig, console) -> Path:
    from streamrl.envs.device import make_device_env
    from streamrl.results import RunWriter, progress_bar

    env = make_device_env(cfg.env, cfg.max_episode_steps)
    resolved = resolve(cfg, env.spec)
    writer = RunWriter.create(cfg, resolved, env.spec)
    members = resolved.members
    runner = DeviceFleet(ALGORITHMS[cfg.algo](resolved.agent), env, members)
    runner.start()
    total, chunk = resolved.total_steps, max(1, min(cfg.chunk_steps, resolved.total_steps))
    status, error, step, wall = "completed", None, 0, 0.0
    with progress_bar(total, enabled=cfg.progress, console=console, agents=len(members)) as bar:
        try:
            while step < total:
                length = min(chunk, total - step)
                runner.compile(length)
                t0 = time.perf_counter()
                done, ep_return, ep_length, bad = runner.run(length)
                wall += time.perf_counter() - t0
                if bad.any():
                    k, i = np.argwhere(bad)[0]
                    done = done[: k + 1]
                    error = NonFiniteError(
                        f"{cfg.env} returned a non-finite value at step {step + k + 1}{_agent_label(members, int(i))}; "
                        "run stopped",
                        int(step + k + 1),
                    )
                for k, i in np.argwhere(done):
                    writer.add_episode(
                        agent=int(i), end_step=step + int(k) + 1,
                        episodic_return=float(ep_return[k, i]), length=int(ep_length[k, i]),
                    )
                if error is not None:
                    status, step = "failed", error.step
                    break
                step += length
                bar.update(step, writer.episodes_written, writer.recent_return())
                writer.maybe_flush()
        except KeyboardInterrupt as exc:
            status, error = "interrupted", exc
    writer.finish(steps=step, wall_time_s=wall, status=status, message=str(error) if error else None, compile_s=runner.compile_s)
    if status != "failed":
        _save_state(writer.path, cfg, resolved, step, runner.state)
    if error is not None:
        raise error
    return writer.path


def train(cfg: TrainConfig, *, console=None) -> Path:
    """Run ``cfg`` (one agent, or a fleet of seeds × hyper-parameter settings) and write
    its run directory. The id picks the driver: ``gymnax:``/``brax:`` run on the device
    driver (:class:`DeviceFleet`), ``envpool:`` and Gymnasium ids on the host driver
    (:class:`HostStepper`).

    Returns the run directory. Raises the streamrl errors of the environment factories
    and of :func:`~streamrl.config.resolve` before anything is written, and
    :class:`~streamrl.errors.NonFiniteError` (after writing the records so far and a
    summary with ``status: failed``) when an environment emits NaN or inf.
    """
    from streamrl.envs.device import is_device_id
    from streamrl.results import RunWriter, progress_bar

    if is_device_id(cfg.env):
        return _train_device(cfg, console)
    if cfg.env.startswith("envpool:"):
        from streamrl.envs.pool import make_envpool as make_batch
    else:
        make_batch = make_envs
    probe = make_batch(cfg.env, [cfg.seed], cfg.max_episode_steps)
    try:
        resolved: Resolved = resolve(cfg, probe.spec)
    finally:
        probe.close()
    envs = make_batch(cfg.env, [m.seed for m in resolved.members], cfg.max_episode_steps)
    try:
        writer = RunWriter.create(cfg, resolved, envs.spec)
        _loop(cfg, envs, resolved, writer, console, progress_bar)
    finally:
        envs.close()
    return writer.path


def _loop(cfg, envs, resolved: Resolved, writer, console, progress_bar) -> None:
    agent = ALGORITHMS[cfg.algo](resolved.agent)
    members = resolved.members
    stepper = HostStepper(agent, members, masked=getattr(envs, "masked", False))
    total = resolved.total_steps
    obs = envs.reset()
    zeros = np.zeros(len(members))
    _check_finite(obs, zeros, 0, cfg.env, members)
    actions = stepper.start(obs)
    status, error = "completed", None
    t0 = time.perf_counter()
    step = 0
    with progress_bar(total, enabled=cfg.progress, console=console, agents=len(members)) as bar:
        try:
            while step < total:
                obs, rewards, terminated, truncated, final_obs, episodes, active = envs.step(actions)
                step += 1
                _check_finite(final_obs, rewards, step, cfg.env, members)
                if episodes:
                    _check_finite(obs, zeros, step, cfg.env, members)
                    for i, episodic_return, length in episodes:
                        writer.add_episode(agent=i, end_step=step, episodic_return=episodic_return, length=length)
                actions = stepper.step(obs, rewards, terminated, truncated, final_obs, active)
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
    if status != "failed":
        _save_state(writer.path, cfg, resolved, step, stepper.state)
    if error is not None:
        raise error
