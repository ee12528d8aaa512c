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

import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from streamrl.agents import ALGORITHMS, AgentState, HParams, StreamAgent, TimeStep
from streamrl.config import Member, Resolved, TrainConfig, resolve
from streamrl.envs.gym import make_envs
from streamrl.errors import CheckpointError, NonFiniteError

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


DIAGNOSE_EVERY = 16
"""The drivers recompute the TD error after the update (the overshooting diagnostic) on
every 16th step: checking every step would cost two extra forward passes a step (measured
+15% on MinAtar). The host driver compiles the step twice, with and without the check,
and calls the checking one every 16th step; a ``lax.cond`` instead costs 8–13 µs on every
call even when the check is skipped (measured: Q CartPole 127 against 114 µs a step).
The device driver uses ``lax.cond`` inside its scan."""


def _zero_diagnostics(states: AgentState) -> AgentState:
    return states._replace(diag=jax.tree_util.tree_map(jnp.zeros_like, states.diag))


def _params_finite(states: AgentState, n: int) -> jax.Array:
    """[n] bools: every parameter and optimiser value of agent i is finite (``states`` has
    a leading axis of n, or none for a single unbatched stream)."""
    leaves = [x for x in jax.tree_util.tree_leaves((states.params, states.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.stack([jnp.all(jnp.isfinite(x.reshape(n, -1)), axis=1) for x in leaves]).all(axis=0)


class HostStepper:
    """A fleet of N agents on host environments: the jitted init and per-step call.

    Agent i has seed ``members[i].seed`` and hyper-parameters ``members[i].hparams``; all
    N learn in one jitted call per environment step (vmapped), each from its own stream.

    ``start(obs)`` takes raw first observations [N, *obs_shape] and returns the first
    actions [N] or [N, d] (NumPy); ``step(obs, rewards, terminated, truncated, final_obs)``
    (arrays with a leading N axis) learns from the transitions and returns the next actions.
    An agent whose TD error became non-finite returns the action −1 (Discrete) or NaN
    (Box), which the driver turns into a :class:`~streamrl.errors.NonFiniteError`.
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
        discrete = agent.config.discrete

        def one(state, ts_vec, hp_vec, diagnose: bool):
            ts = TimeStep(
                obs=ts_vec[:n].reshape(shape),
                reward=ts_vec[2 * n],
                terminated=ts_vec[2 * n + 1] > 0,
                truncated=ts_vec[2 * n + 2] > 0,
                final_obs=ts_vec[n : 2 * n].reshape(shape),
            )
            hp = HParams(*(hp_vec[i] for i in range(len(HParams._fields))))
            return agent.step(state, ts, hp, diagnose)

        batched = self.n > 1

        def step(buf, ts_mat, hp_mat, *, diagnose: bool):
            old = codec.unpack(buf)
            if batched:
                states, actions = jax.vmap(functools.partial(one, diagnose=diagnose))(old, ts_mat, hp_mat)
            else:
                states, actions = one(old, ts_mat[0], hp_mat[0], diagnose)
            if self.masked:  # inactive agents (waiting for EnvPool's reset step) keep their state
                active = ts_mat[:, 2 * n + 3] > 0 if batched else ts_mat[0, 2 * n + 3] > 0
                keep = lambda new, prev: jnp.where(active.reshape(active.shape + (1,) * (new.ndim - active.ndim)), new, prev)  # noqa: E731
                states = jax.tree_util.tree_map(keep, states, old)
                actions = keep(actions, old.action)
            bad = ~jnp.isfinite(states.td_error)
            bad = bad.reshape(bad.shape + (1,) * (actions.ndim - bad.ndim))
            actions = jnp.where(bad, -1 if discrete else jnp.nan, actions)
            return codec.pack(states), actions if batched else actions[None]

        def take_diagnostics(buf):
            states = codec.unpack(buf)
            return codec.pack(_zero_diagnostics(states)), states.diag

        self._diag_fn = jax.jit(take_diagnostics, donate_argnums=0)
        self._finite_fn = jax.jit(lambda buf: _params_finite(codec.unpack(buf), self.n))
        return {d: jax.jit(functools.partial(step, diagnose=d), donate_argnums=0) for d in (False, True)}

    def start(self, obs: np.ndarray, state: AgentState | None = None) -> np.ndarray:
        """Initialise from the first raw observations [N, *obs_shape] (or, given the fleet
        ``state`` of a checkpoint, start a fresh episode at ``obs``: see
        :meth:`~streamrl.agents.StreamAgent.restart`), compile the step ahead of time (so
        the first environment step is not a compile), and return the first actions."""
        t0 = time.perf_counter()
        obs = jnp.asarray(obs, jnp.float32)
        if state is None:
            state = jax.jit(fleet(self.agent.init, self.n))(self._keys, obs, self.hparams)
        else:
            state = jax.jit(fleet(self.agent.restart, self.n))(state, obs, self.hparams)
        if self.n == 1:
            state = jax.tree_util.tree_map(lambda x: x[0], state)
        step = self._build(state)
        self._buf = jax.jit(self._codec.pack)(state)
        self._ts = np.zeros((self.n, 2 * self._obs_size + 3 + self.masked), np.float32)
        self._step_fn, self._check_fn = (step[d].lower(self._buf, self._ts, self._hp_mat).compile() for d in (False, True))
        self.compile_s = time.perf_counter() - t0
        return np.asarray(state.action).reshape(self.n, *np.shape(state.action)[self.n > 1 :])

    def step(self, obs, rewards, terminated, truncated, final_obs, active=None, diagnose: bool = False) -> np.ndarray:
        """Learn from one transition per agent and return the next actions. ``active`` [N]
        (only with ``masked=True``): agents marked False neither learn nor change action.
        ``diagnose``: also recompute δ′ for the overshooting diagnostic."""
        n, ts = self._obs_size, self._ts
        ts[:, :n] = obs.reshape(self.n, n)
        ts[:, n : 2 * n] = final_obs.reshape(self.n, n)
        ts[:, 2 * n] = rewards
        ts[:, 2 * n + 1] = terminated
        ts[:, 2 * n + 2] = truncated
        if self.masked:
            ts[:, 2 * n + 3] = True if active is None else active
        self._buf, actions = (self._check_fn if diagnose else self._step_fn)(self._buf, ts, self._hp_mat)
        return np.asarray(actions)

    def take_diagnostics(self):
        """The :class:`~streamrl.agents.Diagnostics` summed since the last call (NumPy,
        leading N axis); resets them."""
        self._buf, diag = self._diag_fn(self._buf)
        return jax.tree_util.tree_map(lambda x: np.asarray(x).reshape(self.n), diag)

    def params_finite(self) -> np.ndarray:
        """[N] bools: every parameter and trace of agent i is finite."""
        return np.asarray(self._finite_fn(self._buf))

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


def _learner_error(step: int, members, i: int, last_checkpoint: int | None) -> NonFiniteError:
    kept = f"; the last good checkpoint (step {last_checkpoint}) is kept" if last_checkpoint is not None else ""
    return NonFiniteError(
        f"the TD error or the parameters became non-finite at step {step}{_agent_label(members, i)} "
        f"(try a smaller --lr or a larger --kappa){kept}; run stopped",
        step,
    )


class DeviceFleet:
    """A fleet of N agents and N JAX-native environments stepped together in ``lax.scan``.

    ``run(steps)`` advances every stream by ``steps`` environment steps in ONE jitted call
    (no Python in the loop) and returns per-step arrays of shape [steps, N]: ``done``,
    ``episodic_return`` and ``length`` (the episode's totals, meaningful where ``done``),
    ``bad`` (a non-finite reward or observation from the environment) and ``diverged`` (a
    non-finite TD error). With ``trace=True`` it also returns the actions taken and the
    TimeSteps seen (for tests). The carry is donated, so memory stays flat however long
    the run.

    Agent i uses ``PRNGKey(members[i].seed)`` exactly as on a host environment; its
    environment draws from ``fold_in(PRNGKey(seed), ENV_STREAM)``: the reset at the start
    uses ``split(env_key)[0]``, step t uses ``fold_in(split(env_key)[1], t)``. The whole
    carry (agents, environment states, episode counters, t) is what a checkpoint keeps, so
    a resumed device run continues exactly.
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

    def _init(self, agent_keys, reset_keys, hp):
        env_states, obs = fleet(self.env.reset, self.n)(reset_keys)
        states = fleet(self.agent.init, self.n)(agent_keys, obs, hp)
        zeros = jnp.zeros(self.n, jnp.float32)
        return states, env_states, zeros, zeros.astype(jnp.int32), jnp.zeros((), jnp.int32)

    def start(self, carry=None) -> None:
        """Reset the environments and initialise the agents on the first observations, or
        continue from a checkpointed ``carry`` (:attr:`carry`)."""
        t0 = time.perf_counter()
        self._carry = jax.jit(self._init)(self._agent_keys, self.reset_keys, self.hparams) if carry is None else carry
        self._diag_fn = jax.jit(lambda c: ((_zero_diagnostics(c[0]),) + tuple(c[1:]), c[0].diag), donate_argnums=0)
        self._finite_fn = jax.jit(lambda c: _params_finite(c[0], self.n))
        self.compile_s += time.perf_counter() - t0

    def carry_shape(self):
        """Shapes and dtypes of the carry (the restore target of a checkpoint)."""
        return jax.eval_shape(self._init, self._agent_keys, self.reset_keys, self.hparams)

    def _chunk(self, length: int, trace: bool) -> Callable:
        agent, env, n = self.agent, self.env, self.n

        def one(state, env_state, ep_return, ep_length, key, hp, diagnose):
            env_state, (obs, reward, terminated, truncated, final_obs) = env.step(key, env_state, state.action)
            ts = TimeStep(obs, reward, terminated, truncated, final_obs)
            new_state, _ = agent.step(state, ts, hp, diagnose)
            done = jnp.logical_or(terminated, truncated)
            ep_return, ep_length = ep_return + reward, ep_length + 1
            bad = ~(jnp.isfinite(reward) & jnp.all(jnp.isfinite(final_obs)) & jnp.all(jnp.isfinite(obs)))
            diverged = ~jnp.isfinite(new_state.td_error)
            out = (done, ep_return, ep_length, bad, diverged) + ((state.action, ts) if trace else ())
            ep_return = jnp.where(done, 0.0, ep_return)
            ep_length = jnp.where(done, 0, ep_length)
            return (new_state, env_state, ep_return, ep_length), out

        batched = n > 1

        def run(carry, step_keys, hp):
            def body(c, _):
                states, env_states, ep_return, ep_length, t = c
                keys = jax.vmap(jax.random.fold_in, (0, None))(step_keys, t)
                diagnose = t % DIAGNOSE_EVERY == 0  # unbatched: a real branch, also under vmap
                args = (states, env_states, ep_return, ep_length, keys, hp)
                if batched:
                    (states, env_states, ep_return, ep_length), out = jax.vmap(one, (0,) * 6 + (None,))(*args, diagnose)
                else:
                    new, out = one(*jax.tree_util.tree_map(lambda x: x[0], args), diagnose)
                    (states, env_states, ep_return, ep_length), out = jax.tree_util.tree_map(lambda x: x[None], (new, out))
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

    def take_diagnostics(self):
        """The agents' :class:`~streamrl.agents.Diagnostics` since the last call (NumPy,
        leading N axis); resets them."""
        self._carry, diag = self._diag_fn(self._carry)
        return jax.tree_util.tree_map(np.asarray, diag)

    def params_finite(self) -> np.ndarray:
        """[N] bools: every parameter and trace of agent i is finite."""
        return np.asarray(self._finite_fn(self._carry))

    @property
    def state(self) -> AgentState:
        return self._carry[0]

    @property
    def carry(self):
        """(agent states, environment states, episode returns, episode lengths, t)."""
        return self._carry


# -- training ------------------------------------------------------------------------------


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived; the driver checkpoints and stops."""


class _Session:
    """What the host and device loops share: checkpoints, records, metrics, signals.

    SIGINT and SIGTERM set a flag that the loops check every 1,024 steps (host) or every
    chunk (device); the loop then checkpoints and stops cleanly.
    """

    def __init__(self, cfg: TrainConfig, resolved: Resolved, writer, metrics, start_step: int, prior_wall_s: float):
        self.cfg, self.resolved, self.writer, self.metrics = cfg, resolved, writer, metrics
        self.members = resolved.members
        self.start_step = start_step
        self.prior_wall_s = prior_wall_s
        self.last_checkpoint: int | None = start_step if start_step else None
        self.next_checkpoint = self._after(start_step)
        self.signal: int | None = None
        self._handlers: dict = {}

    def _after(self, step: int) -> int | None:
        every = self.cfg.checkpoint_every
        return (step // every + 1) * every if every and every > 0 else None

    def due(self, step: int) -> bool:
        return self.next_checkpoint is not None and step >= self.next_checkpoint

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        self.signal = signum

    def checkpoint(self, step: int, items: dict, wall_s: float, finite: np.ndarray) -> None:
        """Flush the records, then write checkpoint ``step`` (records and checkpoint agree
        after a kill: a resume drops records later than the checkpoint). A fleet with a
        non-finite parameter is never written: NonFiniteError names the agent."""
        from streamrl import checkpoint

        if not finite.all():
            raise _learner_error(step, self.members, int(np.argmin(finite)), self.last_checkpoint)
        self.writer.flush()
        meta = dict(
            final_checkpoint_meta(self.cfg, self.resolved),
            wall_time_s=self.prior_wall_s + wall_s,
            episodes=self.writer.episodes_written,
        )
        checkpoint.save(self.writer.path, step, items, meta)
        self.last_checkpoint = step
        self.next_checkpoint = self._after(step)
        self.writer.write_summary(steps=step, wall_time_s=self.prior_wall_s + wall_s, status="running")

    def diagnostics(self, step: int, diag, sps: float | None) -> None:
        if self.metrics is not None:
            self.metrics.diagnostics(step, diag, sps)


def final_checkpoint_meta(cfg: TrainConfig, resolved: Resolved) -> dict:
    """The checkpoint meta of a run (what a restored state must match)."""
    from streamrl.checkpoint import checkpoint_meta
    from streamrl.results import jsonable

    return checkpoint_meta(cfg.algo, cfg.env, jsonable(resolved.agent), len(resolved.members))


def _open_run(cfg: TrainConfig, resolved: Resolved, spec, targets: dict | None):
    """The run writer, the TensorBoard log, the start step and, when resuming (``targets``
    given: item name → shapes to restore), the checkpoint's items and meta. A resume reads
    and checks the whole checkpoint before it touches the run directory, then drops
    episode records later than the checkpoint."""
    from streamrl import checkpoint
    from streamrl.metrics import MetricsLog
    from streamrl.results import RunWriter

    items, meta = None, {}
    if targets is not None:
        step = checkpoint.latest_step(cfg.run_dir)
        if step is None:
            raise CheckpointError(f"{cfg.run_dir} has no checkpoint to resume from (it stopped before the first one)")
        items, meta = checkpoint.restore(cfg.run_dir, targets, final_checkpoint_meta(cfg, resolved), step=step)
        writer = RunWriter.reopen(cfg.run_dir, resolved.members, resolved.swept, until_step=step)
    else:
        step, writer = 0, RunWriter.create(cfg, resolved, spec)
    metrics = MetricsLog(writer.path, resolved.members) if cfg.tensorboard else None
    return writer, metrics, step, items, meta


def _finish(session: _Session, step: int, wall: float, status: str, error, compile_s: float, save) -> None:
    writer = session.writer
    if status != "failed" and step > session.start_step and session.last_checkpoint != step:
        save(step, wall)
    if session.metrics is not None:
        session.metrics.close()
    message = str(error) if error is not None else None
    if status == "interrupted":
        message = f"stopped by signal {session.signal} at step {step}; resume with: streamrl train --resume {writer.path}"
    writer.finish(
        steps=step, wall_time_s=session.prior_wall_s + wall, status=status, message=message, compile_s=compile_s,
        resumed_from=session.start_step or None,
    )


def _train_device(cfg: TrainConfig, console, resume: bool) -> Path:
    from streamrl.envs.device import make_device_env
    from streamrl.results import progress_bar

    env = make_device_env(cfg.env, cfg.max_episode_steps)
    resolved = resolve(cfg, env.spec)
    members = resolved.members
    runner = DeviceFleet(ALGORITHMS[cfg.algo](resolved.agent), env, members)
    shape = runner.carry_shape()
    targets = {"agents": shape[0], "driver": shape[1:]} if resume else None
    writer, metrics, step, items, meta = _open_run(cfg, resolved, env.spec, targets)
    prior_wall = 0.0
    if resume:
        runner.start((items["agents"], *items["driver"]))
        prior_wall = float(meta.get("wall_time_s") or 0.0)
        if console is not None:
            console.print(f"resumed {writer.path} at step {step:,} (exactly where it stopped)", soft_wrap=True)
    else:
        runner.start()
    total, chunk = resolved.total_steps, max(1, min(cfg.chunk_steps, resolved.total_steps))
    status, error, wall = "completed", None, 0.0

    def save(at, wall_s):
        carry = runner.carry
        session.checkpoint(at, {"agents": carry[0], "driver": carry[1:]}, wall_s, runner.params_finite())

    with _Session(cfg, resolved, writer, metrics, step, prior_wall) as session, progress_bar(
        total, enabled=cfg.progress, console=console, agents=len(members), completed=step
    ) as bar:
        try:
            while step < total:
                if session.signal is not None:
                    raise StopRequested
                length = min(chunk, total - step)
                if session.next_checkpoint is not None:
                    length = min(length, session.next_checkpoint - step)
                runner.compile(length)
                t0 = time.perf_counter()
                done, ep_return, ep_length, bad, diverged = runner.run(length)
                wall += time.perf_counter() - t0
                if bad.any() or diverged.any():
                    k, i = np.argwhere(bad | diverged)[0]
                    done = done[: k + 1]
                    at = int(step + k + 1)
                    error = (
                        NonFiniteError(f"{cfg.env} returned a non-finite value at step {at}{_agent_label(members, int(i))}; run stopped", at)
                        if bad[k, i] else _learner_error(at, members, int(i), session.last_checkpoint)
                    )
                records = [(int(i), step + int(k) + 1, float(ep_return[k, i]), int(ep_length[k, i])) for k, i in np.argwhere(done)]
                for i, end, ret, length_ in records:
                    writer.add_episode(agent=i, end_step=end, episodic_return=ret, length=length_)
                if metrics is not None:
                    metrics.episodes(records)
                if error is not None:
                    status, step = "failed", error.step
                    break
                step += length
                session.diagnostics(step, runner.take_diagnostics(), step / wall if wall else None)
                if session.due(step):
                    save(step, wall)
                bar.update(step, writer.episodes_written, writer.recent_return())
                writer.maybe_flush()
        except StopRequested:
            status = "interrupted"
    _finish(session, step, wall, status, error, runner.compile_s, save)
    if status == "interrupted":
        raise Interrupted(writer.path, step, session.signal)
    if error is not None:
        raise error
    return writer.path


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after writing a checkpoint."""

    def __init__(self, path: Path, step: int, signum: int | None):
        super().__init__(f"stopped at step {step:,}; checkpoint written; resume with: streamrl train --resume {path}")
        self.path, self.step, self.signum = path, step, signum


def resume_config(cfg: TrainConfig) -> TrainConfig:
    """The recorded configuration of ``cfg.resume``'s run, with ``--total-steps``,
    ``--progress`` and ``--checkpoint-every`` taken from ``cfg`` when given."""
    import dataclasses

    from streamrl.config import load_run_config

    path = Path(cfg.resume)
    old, recorded = load_run_config(path)
    schedule = old.schedule_steps or recorded.get("total_steps")
    changes = dict(run_dir=path, resume=path, progress=cfg.progress, schedule_steps=schedule)
    if cfg.total_steps is not None:
        changes["total_steps"] = cfg.total_steps
    defaults = TrainConfig()
    if cfg.checkpoint_every != defaults.checkpoint_every:
        changes["checkpoint_every"] = cfg.checkpoint_every
    return dataclasses.replace(old, **changes)


def train(cfg: TrainConfig, *, console=None) -> Path:
    """Run ``cfg`` (one agent, or a fleet of seeds × hyper-parameter settings) and write
    its run directory. The id picks the driver: ``gymnax:``/``brax:`` run on the device
    driver (:class:`DeviceFleet`), ``envpool:`` and Gymnasium ids on the host driver
    (:class:`HostStepper`). With ``cfg.resume`` the run continues from its last checkpoint
    (see :func:`resume_config`): exactly on the device driver; with a fresh episode on
    host environments (their state cannot be saved).

    Returns the run directory. Raises the streamrl errors of the environment factories
    and of :func:`~streamrl.config.resolve` before anything is written;
    :class:`~streamrl.errors.NonFiniteError` (after writing the records so far and a
    summary with ``status: failed``) when an environment emits NaN or inf or an agent's TD
    error or parameters become non-finite; :class:`Interrupted` after SIGINT or SIGTERM
    (a checkpoint is written first); :class:`~streamrl.errors.CheckpointError` when the
    checkpoint to resume from is missing, corrupt or belongs to another run.
    """
    from streamrl.envs.device import is_device_id

    resume = cfg.resume is not None
    if resume:
        cfg = resume_config(cfg)
    if is_device_id(cfg.env):
        return _train_device(cfg, console, resume)
    if cfg.env.startswith("envpool:"):
        from streamrl.envs.pool import make_envpool as make_batch
    else:
        make_batch = make_envs
    probe = make_batch(cfg.env, [cfg.seed], cfg.max_episode_steps)
    try:
        resolved: Resolved = resolve(cfg, probe.spec)
    finally:
        probe.close()
    agent = ALGORITHMS[cfg.algo](resolved.agent)
    targets = None
    if resume:
        n = len(resolved.members)
        keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in resolved.members])
        obs = jnp.zeros((n, *probe.spec.obs_shape), jnp.float32)
        targets = {"agents": jax.eval_shape(fleet(agent.init, n), keys, obs, stack_hparams(resolved.members))}
    writer, metrics, step, items, meta = _open_run(cfg, resolved, probe.spec, targets)
    seeds = [m.seed for m in resolved.members]
    if resume:  # a fresh episode, on environment seeds the run has not used
        seeds = [int(np.random.SeedSequence([s, step]).generate_state(1)[0] >> 1) for s in seeds]
    envs = make_batch(cfg.env, seeds, cfg.max_episode_steps)
    try:
        _loop(cfg, envs, resolved, agent, writer, metrics, step, items, meta, console)
    finally:
        envs.close()
    return writer.path


def _loop(cfg, envs, resolved: Resolved, agent, writer, metrics, step: int, items, meta, console) -> None:
    from streamrl.results import progress_bar

    members = resolved.members
    stepper = HostStepper(agent, members, masked=getattr(envs, "masked", False))
    total = resolved.total_steps
    obs = envs.reset()
    zeros = np.zeros(len(members))
    _check_finite(obs, zeros, step, cfg.env, members)
    prior_wall = 0.0
    if items is not None:
        prior_wall = float(meta.get("wall_time_s") or 0.0)
        actions = stepper.start(obs, items["agents"])
        if console is not None:
            console.print(
                f"resumed {writer.path} at step {step:,}: every agent starts a fresh episode "
                "(host environments cannot be checkpointed)",
                soft_wrap=True,
            )
    else:
        actions = stepper.start(obs)
    discrete = agent.config.discrete
    status, error = "completed", None
    t0 = time.perf_counter()

    def wall_now():
        return time.perf_counter() - t0

    def save(at, wall_s):
        session.checkpoint(at, {"agents": stepper.state}, wall_s, stepper.params_finite())

    start = step
    with _Session(cfg, resolved, writer, metrics, step, prior_wall) as session, progress_bar(
        total, enabled=cfg.progress, console=console, agents=len(members), completed=step
    ) as bar:
        try:
            while step < total:
                obs, rewards, terminated, truncated, final_obs, episodes, active = envs.step(actions)
                step += 1
                _check_finite(final_obs, rewards, step, cfg.env, members)
                if episodes:
                    _check_finite(obs, zeros, step, cfg.env, members)
                    for i, episodic_return, length in episodes:
                        writer.add_episode(agent=i, end_step=step, episodic_return=episodic_return, length=length)
                    if metrics is not None:
                        metrics.episodes([(i, step, r, n) for i, r, n in episodes])
                actions = stepper.step(obs, rewards, terminated, truncated, final_obs, active, step % DIAGNOSE_EVERY == 0)
                if (actions.min() < 0) if discrete else not np.isfinite(actions).all():
                    bad = actions.reshape(len(members), -1)
                    i = int(np.argmax((bad < 0).any(axis=1) if discrete else ~np.isfinite(bad).all(axis=1)))
                    raise _learner_error(step, members, i, session.last_checkpoint)
                if session.due(step):
                    save(step, wall_now())
                if step % 1024 == 0:
                    if session.signal is not None:
                        raise StopRequested
                    bar.update(step, writer.episodes_written, writer.recent_return())
                    if writer.maybe_flush():
                        session.diagnostics(step, stepper.take_diagnostics(), (step - start) / wall_now())
        except NonFiniteError as exc:
            status, error = "failed", exc
        except StopRequested:
            status = "interrupted"
        wall = wall_now()
        bar.update(step, writer.episodes_written, writer.recent_return())
        if status != "failed":
            session.diagnostics(step, stepper.take_diagnostics(), (step - start) / wall if wall else None)
    _finish(session, step, wall, status, error, stepper.compile_s, save)
    if status == "interrupted":
        raise Interrupted(writer.path, step, session.signal)
    if error is not None:
        raise error
