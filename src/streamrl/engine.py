"""The fleet engine: N ≥ 1 independent agents (seeds × hyper-parameter settings), agent i
learning from stream i, stepped by jitted programs. Pure computation, no I/O: the drivers
(:mod:`streamrl.drivers`) feed it and the training loop (:mod:`streamrl.run`) records what
it returns.

* :class:`HostStepper` (host environments: Gymnasium, EnvPool): ONE jitted call per
  environment step in which every agent learns from its own transition and picks its next
  action with its new parameters (``jax.vmap`` over the fleet).
* :class:`DeviceFleet` (JAX environments: gymnax, brax): environments and fleet run
  together in one ``lax.scan``, a chunk of steps per jitted call, no Python in the loop.
* :func:`fleet_state_target`: the shapes of a fleet's AgentState, the one restore target
  of a checkpoint.

Speed (measured, see docs/benchmarks.md): on this CPU a standalone jitted call costs about
1 µs per XLA kernel plus a cost per argument and result buffer. The agent state is a pytree
of ~30-50 arrays, so the host stepper passes its small leaves as ONE flat uint32 buffer
(bit-exact, donated) and only its weight-sized leaves separately, and the TimeStep and
hyper-parameters as one float32 vector each (:class:`TimeStepLayout`); this cuts the call
cost by about a third against passing the pytrees themselves.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from streamrl.agents import AgentState, HParams, StreamAgent
from streamrl.types import HostBatch, TimeStep

__all__ = [
    "FlatCodec", "TimeStepLayout", "HostStepper", "DeviceFleet", "DeviceOutput", "fleet", "stack_hparams",
    "fleet_state_target", "DIAGNOSE_EVERY",
]


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


def stack_hparams(members: Sequence) -> HParams:
    """The members' hyper-parameters (``member.hparams``, see :class:`streamrl.config.Member`)
    as one HParams of float32 [N] arrays (traced by jit). Built in NumPy: stacking N JAX
    scalars compiles a program with N arguments (minutes for 100,000 agents)."""
    return HParams(*(jnp.asarray(np.array([float(getattr(m.hparams, f)) for m in members], np.float32)) for f in HParams._fields))


def agent_keys(members: Sequence) -> jax.Array:
    """[N, 2] uint32: ``PRNGKey(member.seed)`` per member (the agent's own stream of keys);
    one vmapped call when every seed is an int32 (the same keys as one call per seed)."""
    seeds = [m.seed for m in members]
    if all(-(2**31) <= s < 2**31 for s in seeds):
        return jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.int32))
    return jnp.stack([jax.random.PRNGKey(s) for s in seeds])


def fleet_state_target(agent: StreamAgent, members: Sequence) -> AgentState:
    """Shapes and dtypes (``jax.ShapeDtypeStruct``) of the fleet AgentState of ``members``
    on ``agent``: every leaf with a leading N axis. What a checkpoint is restored into."""
    n = len(members)
    obs = jnp.zeros((n, *agent.config.obs_shape), jnp.float32)
    return jax.eval_shape(fleet(agent.init, n), agent_keys(members), obs, stack_hparams(members))


DIAGNOSE_EVERY = 16
"""The drivers recompute the TD error after the update (the overshooting diagnostic) on
every 16th step: checking every step would cost two extra forward passes a step (measured
+15% on MinAtar). The host driver compiles the step twice, with and without the check,
and calls the checking one every 16th step; a ``lax.cond`` instead costs 8–13 µs on every
call even when the check is skipped (measured: Q CartPole 127 against 114 µs a step).
The device driver uses ``lax.cond`` inside its scan."""


def zero_diagnostics(states: AgentState) -> AgentState:
    return states._replace(diag=jax.tree_util.tree_map(jnp.zeros_like, states.diag))


def params_finite(states: AgentState, n: int) -> jax.Array:
    """[n] bools: every parameter and optimiser value of agent i is finite (``states`` has
    a leading axis of n, or none for a single unbatched stream)."""
    leaves = [x for x in jax.tree_util.tree_leaves((states.params, states.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.stack([jnp.all(jnp.isfinite(x.reshape(n, -1)), axis=1) for x in leaves]).all(axis=0)


class TimeStepLayout:
    """Named slices of the float32 vector that carries one stream's :class:`TimeStep` (and,
    for adapters that pause agents, its ``active`` flag) into the jitted host step: one
    argument buffer instead of six. ``write`` fills rows [N, size] from a
    :class:`~streamrl.types.HostBatch` on the host; ``read`` rebuilds the TimeStep of one
    row inside jit (bools as ``> 0``). Exact: every field is float32 or a 0/1 flag."""

    def __init__(self, obs_shape: tuple[int, ...], with_active: bool):
        self.obs_shape = tuple(obs_shape)
        obs_size = math.prod(obs_shape)
        # (write() relies on this order: the vectors, then the scalars)
        fields = [("obs", obs_size), ("final_obs", obs_size), ("reward", 1), ("terminated", 1), ("truncated", 1), ("new_episode", 1)]
        if with_active:
            fields.append(("active", 1))
        self.slices, offset = {}, 0
        for name, size in fields:
            self.slices[name] = slice(offset, offset + size)
            offset += size
        self.size = offset

    def write(self, rows: np.ndarray, batch: HostBatch) -> None:
        # Per step on the host: plain slice assignments (a generic loop over the fields
        # with reshapes measured ~5 µs a step slower).
        n = rows.shape[0]
        obs, final_obs = self.slices["obs"], self.slices["final_obs"]
        rows[:, obs] = batch.obs.reshape(n, -1)
        rows[:, final_obs] = batch.final_obs.reshape(n, -1)
        rows[:, final_obs.stop] = batch.reward
        rows[:, final_obs.stop + 1] = batch.terminated
        rows[:, final_obs.stop + 2] = batch.truncated
        rows[:, final_obs.stop + 3] = batch.new_episode
        if "active" in self.slices:
            rows[:, final_obs.stop + 4] = True if batch.active is None else batch.active

    def read(self, vec: jax.Array) -> tuple[TimeStep, jax.Array | None]:
        def get(name):
            return vec[self.slices[name]]

        ts = TimeStep(
            obs=get("obs").reshape(self.obs_shape),
            reward=get("reward")[0],
            terminated=get("terminated")[0] > 0,
            truncated=get("truncated")[0] > 0,
            final_obs=get("final_obs").reshape(self.obs_shape),
            new_episode=get("new_episode")[0] > 0,
        )
        return ts, (get("active")[0] > 0 if "active" in self.slices else None)


class HostStepper:
    """A fleet of N agents on host environments: the jitted init and per-step call.

    Agent i has seed ``members[i].seed`` and hyper-parameters ``members[i].hparams``; all
    N learn in one jitted call per environment step (vmapped), each from its own stream.

    ``start(obs)`` takes raw first observations [N, *obs_shape] and returns the first
    actions [N] or [N, d] (NumPy); ``step(batch)`` learns from a
    :class:`~streamrl.types.HostBatch` (an agent with ``batch.active[i]`` False keeps its
    state and action: ``pausing=True`` compiles that in) and returns ``(actions,
    diverged)``: the next actions and [N] bools, True where the agent's TD error became
    non-finite. ``state`` unpacks the current fleet AgentState (leaves with a leading N axis).
    """

    def __init__(self, agent: StreamAgent, members: Sequence, *, pausing: bool = False):
        self.agent = agent
        self.n = len(members)
        self.pausing = pausing
        self.hparams = stack_hparams(members)
        self._hp_mat = jnp.stack(list(self.hparams), axis=1)  # [N, fields]: one argument
        self._keys = agent_keys(members)
        self.layout = TimeStepLayout(agent.config.obs_shape, pausing)
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
        agent, layout = self.agent, self.layout

        def one(state, ts_vec, hp_vec, diagnose: bool):
            ts, active = layout.read(ts_vec)
            hp = HParams(*(hp_vec[i] for i in range(len(HParams._fields))))
            new_state, action = agent.step(state, ts, hp, diagnose)
            if active is not None:  # a paused agent (EnvPool's reset step) keeps its state
                new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(active, new, old), new_state, state)
                action = new_state.action
            return new_state, action, ~jnp.isfinite(new_state.td_error)

        batched = self.n > 1

        def step(buf, ts_mat, hp_mat, *, diagnose: bool):
            old = codec.unpack(buf)
            if batched:
                states, actions, diverged = jax.vmap(functools.partial(one, diagnose=diagnose))(old, ts_mat, hp_mat)
                return codec.pack(states), actions, diverged
            states, actions, diverged = one(old, ts_mat[0], hp_mat[0], diagnose)
            return codec.pack(states), actions[None], diverged[None]

        def take_diagnostics(buf):
            states = codec.unpack(buf)
            return codec.pack(zero_diagnostics(states)), states.diag

        self._diag_fn = jax.jit(take_diagnostics, donate_argnums=0)
        self._finite_fn = jax.jit(lambda buf: params_finite(codec.unpack(buf), self.n))
        return {d: jax.jit(functools.partial(step, diagnose=d), donate_argnums=0) for d in (False, True)}

    def start(self, obs: np.ndarray, state: AgentState | None = None) -> np.ndarray:
        """Initialise from the first raw observations [N, *obs_shape] (or, given the fleet
        ``state`` of a checkpoint, start a fresh episode at ``obs``: see
        :meth:`~streamrl.agents.StreamAgent.restart`), compile the step ahead of time (so
        the first environment step is not a compile), and return the first actions."""
        t0 = time.perf_counter()
        obs = jnp.asarray(obs, jnp.float32)
        if state is None:
            state = self._lifecycle("init")(self._keys, obs, self.hparams)
        else:
            state = self._lifecycle("restart")(state, obs, self.hparams)
        if self.n == 1:
            state = jax.tree_util.tree_map(lambda x: x[0], state)
        if self._step_fn is None:
            self._compile_step(state)
        self._buf = self._pack(state)
        self.compile_s = time.perf_counter() - t0
        return np.asarray(state.action).reshape(self.n, *np.shape(state.action)[self.n > 1 :])

    def compile(self, obs: np.ndarray) -> None:
        """Compile the init, the restart and the step for observations shaped like ``obs``
        [N, *obs_shape] ahead of :meth:`start` (which then reuses them): an online agent
        compiles when it is made, not at its first step. Nothing is kept of ``obs``."""
        obs = jnp.asarray(obs, jnp.float32)
        state = self._lifecycle("init")(self._keys, obs, self.hparams)
        self._lifecycle("restart")(state, obs, self.hparams)
        if self.n == 1:
            state = jax.tree_util.tree_map(lambda x: x[0], state)
        if self._step_fn is None:
            self._compile_step(state)

    def load(self, state: AgentState) -> None:
        """Take the fleet ``state`` (leaves [N, ...], e.g. a checkpoint's) as it is, without
        starting an episode (a frozen online agent: nothing of the state may change)."""
        if self.n == 1:
            state = jax.tree_util.tree_map(lambda x: x[0], state)
        if self._step_fn is None:
            self._compile_step(state)
        self._buf = self._pack(state)

    def _lifecycle(self, name: str) -> Callable:
        """The jitted fleet ``agent.init`` or ``agent.restart`` (made once)."""
        fns = self.__dict__.setdefault("_lifecycle_fns", {})
        if name not in fns:
            fns[name] = jax.jit(fleet(getattr(self.agent, name), self.n))
        return fns[name]

    def _compile_step(self, state: AgentState) -> None:
        step = self._build(state)
        self._pack = jax.jit(self._codec.pack)
        buf = self._pack(state)
        self._ts = np.zeros((self.n, self.layout.size), np.float32)
        self._step_fn, self._check_fn = (step[d].lower(buf, self._ts, self._hp_mat).compile() for d in (False, True))

    def step(self, batch: HostBatch, diagnose: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Learn from one transition per agent; returns (next actions, diverged [N] bool).
        ``diagnose``: also recompute δ′ for the overshooting diagnostic."""
        self.layout.write(self._ts, batch)
        self._buf, actions, diverged = (self._check_fn if diagnose else self._step_fn)(self._buf, self._ts, self._hp_mat)
        return np.asarray(actions), np.asarray(diverged)

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


class DeviceOutput(NamedTuple):
    """What :meth:`DeviceFleet.run` returns per step and stream (NumPy, [steps, N, ...]).

    Attributes:
      done: bool, an episode ended at this step.
      episodic_return, length: float32 / int32, the episode's totals (meaningful where ``done``).
      bad: bool, the environment emitted a non-finite reward or observation.
      diverged: bool, the agent's TD error became non-finite.
      action, timestep: with ``trace=True`` only: the action taken and the TimeStep seen.
    """

    done: Any
    episodic_return: Any
    length: Any
    bad: Any
    diverged: Any
    action: Any = None
    timestep: Any = None


class DeviceFleet:
    """A fleet of N agents and N JAX-native environments stepped together in ``lax.scan``.

    ``run(steps)`` advances every stream by ``steps`` environment steps in ONE jitted call
    (no Python in the loop) and returns a :class:`DeviceOutput` of per-step arrays [steps,
    N]. With ``trace=True`` it also returns the actions taken and the TimeSteps seen (for
    tests). The carry is donated, so memory stays flat however long the run.

    Agent i uses ``PRNGKey(members[i].seed)`` exactly as on a host environment; its
    environment draws from ``fold_in(PRNGKey(seed), ENV_STREAM)``: the reset at the start
    uses ``split(env_key)[0]``, step t uses ``fold_in(split(env_key)[1], t)``. The whole
    carry (agents, environment states, episode counters, t) is what a checkpoint keeps, so
    a resumed device run continues exactly.
    """

    ENV_STREAM = 0x5EED

    def __init__(self, agent: StreamAgent, env, members: Sequence):
        self.agent, self.env, self.n = agent, env, len(members)
        self.hparams = stack_hparams(members)
        self._agent_keys = agent_keys(members)
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
        self._diag_fn = jax.jit(lambda c: ((zero_diagnostics(c[0]),) + tuple(c[1:]), c[0].diag), donate_argnums=0)
        self._finite_fn = jax.jit(lambda c: params_finite(c[0], self.n))
        self.compile_s += time.perf_counter() - t0

    def carry_shape(self):
        """Shapes and dtypes of the carry (the restore target of a checkpoint)."""
        return jax.eval_shape(self._init, self._agent_keys, self.reset_keys, self.hparams)

    def _chunk(self, length: int, trace: bool) -> Callable:
        agent, env, n = self.agent, self.env, self.n

        def one(state, env_state, ep_return, ep_length, key, hp, diagnose):
            env_state, ts = env.step(key, env_state, state.action)
            new_state, _ = agent.step(state, ts, hp, diagnose)
            done = jnp.logical_or(ts.terminated, ts.truncated)
            ep_return, ep_length = ep_return + ts.reward, ep_length + 1
            bad = ~(jnp.isfinite(ts.reward) & jnp.all(jnp.isfinite(ts.final_obs)) & jnp.all(jnp.isfinite(ts.obs)))
            diverged = ~jnp.isfinite(new_state.td_error)
            out = DeviceOutput(done, ep_return, ep_length, bad, diverged, *((state.action, ts) if trace else ()))
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

    def run(self, steps: int, *, trace: bool = False) -> DeviceOutput:
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


