"""What every stream-x agent shares: the TimeStep it sees, its hyper-parameters, its state,
and the normalisation of the stream (observations, rewards, time feature).

An agent is a pair of pure functions (see :class:`StreamAgent`)::

    state = agent.init(key, first_obs, hparams)          # also picks the first action
    state, action = agent.step(state, timestep, hparams)  # learn from the last transition,
                                                          # then pick the next action

so that one jitted call per environment step does all of an agent's work, and a fleet is
``jax.vmap`` of the same functions.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from streamrl import normalize as nz
from streamrl.optim import OPTIMIZERS, adaptive_obgd, obgd, trace_adam, trace_sgd
from streamrl.types import TimeStep

__all__ = [
    "TimeStep",
    "HParams",
    "AgentConfig",
    "AgentState",
    "StreamNorm",
    "Diagnostics",
    "Observation",
    "StreamAgent",
    "Network",
    "epsilon_at",
    "action_key",
]


class HParams(NamedTuple):
    """Hyper-parameters, all float32 scalars so they can be traced (a sweep never recompiles).

    Defaults are the paper's single set (arXiv:2410.14606, Table 2; docs/algorithms.md "Hyper-parameters").

    Attributes:
      lr: ObGD step size.
      gamma: discount γ.
      lambda_: eligibility-trace decay λ.
      kappa: ObGD bounding factor κ of the value / Q network (2.0).
      kappa_policy: κ of the policy network of Stream AC (3.0).
      entropy_coef: entropy coefficient c of Stream AC (0.01).
      eps_start, eps_end: ε-greedy schedule ends (1.0 → 0.01).
      eps_decay_steps: steps over which ε decays linearly (fraction × total steps).
      beta2, adam_eps: AdaptiveObGD second-moment decay and ε.
      bootstrap_truncated: 1.0 bootstraps from v(s′) when an episode is truncated;
        0.0 (the paper's and official code's default) treats truncation like termination.
      normalize_obs: 1.0 normalises observations (Welford), 0.0 passes them raw.
      scale_reward: 1.0 scales rewards by the return-trace deviation, 0.0 passes them raw.
      target_update_every: DQN1's target-network period in steps (others ignore it).
    """

    lr: Any = 1.0
    gamma: Any = 0.99
    lambda_: Any = 0.8
    kappa: Any = 2.0
    kappa_policy: Any = 3.0
    entropy_coef: Any = 0.01
    eps_start: Any = 1.0
    eps_end: Any = 0.01
    eps_decay_steps: Any = 25_000.0
    beta2: Any = 0.999
    adam_eps: Any = 1e-8
    bootstrap_truncated: Any = 0.0
    normalize_obs: Any = 1.0
    scale_reward: Any = 1.0
    target_update_every: Any = 1000.0

    def as_arrays(self) -> "HParams":
        """The same values as float32 JAX scalars (what the jitted step takes)."""
        return HParams(*(jnp.asarray(v, jnp.float32) for v in self))


def action_key(key: jax.Array, step: jax.Array) -> jax.Array:
    """The PRNG key of the action chosen after ``step`` environment steps."""
    return jax.random.fold_in(key, step)


def epsilon_at(step, hp: HParams) -> jax.Array:
    """ε of the linear schedule at environment step ``step`` (0 for the first action)."""
    frac = step.astype(jnp.float32) / hp.eps_decay_steps
    return jnp.maximum(hp.eps_start + (hp.eps_end - hp.eps_start) * frac, hp.eps_end)


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Static description of an agent: everything that fixes shapes and the program.

    Attributes:
      obs_shape: shape of one raw observation.
      discrete: True for Discrete actions, False for Box actions.
      action_dim: number of actions (Discrete) or the action vector length (Box).
      torso: network torso, one of ``streamrl.nets.TORSOS``.
      hidden: hidden-layer widths.
      optimizer: ``"obgd"``, ``"adaptive"`` (AdaptiveObGD), or the classic baselines
        ``"sgd"`` and ``"adam"`` applied to the trace update δz (:mod:`streamrl.optim`).
      time_limit: T of the time feature, or None for no time feature.
      sparsity: sparse-init fraction (0: dense init, same bound).
      layer_norm: LayerNorm after each hidden layer (False: the ablation).
      action_low, action_high: Box bounds (Stream TD's uniform behaviour policy); empty
        for Discrete.
      frame_stack: k > 1 stacks the last k normalised observations along the last axis
        (Atari: 4 grayscale frames of shape (84, 84, 1) → (84, 84, 4)); each frame is
        normalised when it arrives, before stacking (docs/algorithms.md "Normalisation of the stream").
    """

    obs_shape: tuple[int, ...]
    discrete: bool
    action_dim: int
    torso: str = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    optimizer: str = "obgd"
    time_limit: int | None = None
    sparsity: float = 0.9
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    frame_stack: int = 1
    layer_norm: bool = True

    def __post_init__(self):
        # The config layer (streamrl.config.resolve) checks the user's flags and names them
        # in its messages; these guard the agent against a bad description from code.
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must list positive layer widths, got {self.hidden}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise ValueError(f"the time-feature limit T must be > 0, got {self.time_limit}")
        if self.frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {self.frame_stack}")
        if self.frame_stack > 1 and (self.time_limit is not None or not self.obs_shape):
            raise ValueError("frame stacking needs observations with a channel axis and no time feature")

    @property
    def stacked_shape(self) -> tuple[int, ...]:
        """Shape of ``frame_stack`` observations stacked along the last axis."""
        if self.frame_stack == 1:
            return self.obs_shape
        return (*self.obs_shape[:-1], self.obs_shape[-1] * self.frame_stack)

    @property
    def net_input_shape(self) -> tuple[int, ...]:
        """Observation shape seen by the network (stacked frames; the time feature adds
        one element to a flattened observation)."""
        if self.time_limit is None:
            return self.stacked_shape
        return (math.prod(self.obs_shape) + 1,)


class StreamNorm(NamedTuple):
    """Normaliser state of one stream: observation statistics, reward scaler, and the
    number of steps taken in the current episode (for the time feature)."""

    obs: nz.Welford
    reward: nz.RewardScaler
    episode_step: jax.Array


class Diagnostics(NamedTuple):
    """Learning diagnostics summed over the steps since the driver last read them (it
    resets them after each read; they never influence learning).

    Attributes:
      count: int32 scalar, updates summed.
      abs_td_sum, td_sq_sum: float32 scalars, Σ|δ| and Σδ².
      abs_td_max: float32 scalar, max |δ|.
      step_size_sum: float32 scalar, Σα, the ObGD effective step size of the value / Q
        network (the critic for Stream AC).
      policy_step_size_sum: float32 scalar, Σα of Stream AC's actor (0 otherwise).
      overshoot_checks: int32 scalar, updates whose δ′ was recomputed (the drivers check
        every 16th update: it costs extra forward passes).
      overshoots: int32 scalar, checked updates after which the TD error recomputed on the
        same sample, δ′, had the opposite sign of δ (docs/algorithms.md "Diagnostics").
    """

    count: jax.Array
    abs_td_sum: jax.Array
    td_sq_sum: jax.Array
    abs_td_max: jax.Array
    step_size_sum: jax.Array
    policy_step_size_sum: jax.Array
    overshoot_checks: jax.Array
    overshoots: jax.Array

    @staticmethod
    def zeros() -> "Diagnostics":
        i, f = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)
        return Diagnostics(i, f, f, f, f, f, i, i)

    def record(self, td_error, overshoot, step_size, policy_step_size=0.0) -> "Diagnostics":
        """Add one update: δ, the ``(checked, overshot)`` pair of
        :meth:`StreamAgent.overshoot_check`, and the step sizes."""
        abs_td = jnp.abs(td_error)
        checked, overshot = overshoot
        return Diagnostics(
            self.count + 1,
            self.abs_td_sum + abs_td,
            self.td_sq_sum + jnp.square(td_error),
            jnp.maximum(self.abs_td_max, abs_td),
            self.step_size_sum + step_size,
            self.policy_step_size_sum + policy_step_size,
            self.overshoot_checks + checked,
            self.overshoots + overshot,
        )


class AgentState(NamedTuple):
    """Everything an agent carries from one step to the next (one stream).

    Attributes:
      params: dict of Flax parameter trees (``{"q": …}`` or ``{"actor": …, "critic": …}``).
      opt_state: dict of ObGD states, keyed like ``params``.
      norm: :class:`StreamNorm`.
      obs: the normalised observation s the current action was chosen at (float32,
        ``AgentConfig.net_input_shape``).
      action: the action chosen at s (int32 scalar, or float32 vector, unclipped).
      nongreedy: bool scalar, the action differs from the greedy one (Q(λ) trace cut).
      key: PRNG key of this stream, constant; the action at step t uses
        ``action_key(key, t)`` (so a resumed run draws the same numbers).
      step: int32 scalar, environment steps learned from so far.
      td_error: float32 scalar, δ of the last update (0 before the first).
      diag: :class:`Diagnostics` since the driver last read them.
    """

    params: dict
    opt_state: dict
    norm: StreamNorm
    obs: jax.Array
    action: jax.Array
    nongreedy: jax.Array
    key: jax.Array
    step: jax.Array
    td_error: jax.Array
    diag: Diagnostics


class Observation(NamedTuple):
    """A TimeStep after normalisation (what the learning rule uses)."""

    next_obs: jax.Array  # normalised s′ (before auto-reset), with time feature
    act_obs: jax.Array  # normalised observation to act on next
    reward: jax.Array  # scaled reward
    done: jax.Array  # episode ended (terminated or truncated): reset the traces
    bootstrap: jax.Array  # float32: 1 − (terminated or (truncated and not bootstrap_truncated))


class Network(NamedTuple):
    """What an agent declares about one of its networks.

    Attributes:
      heads: output sizes of its linear heads (``(n_actions,)`` for Q, ``(1,)`` for v,
        ``(d, d)`` for a Gaussian policy's μ and pre-softplus σ).
      kappa: the :class:`HParams` field holding the κ of its ObGD (``"kappa"`` or
        ``"kappa_policy"``).
    """

    heads: tuple[int, ...]
    kappa: str = "kappa"


def state_value_td_error(o: "Observation", hp: HParams, v_s, v_next) -> jax.Array:
    """δ = r + γ·bootstrap·v(s′) − v(s): the TD error of a state-value network (Stream
    TD(λ) and the critic of Stream AC(λ); arXiv:2410.14606, Algorithms 1 and 3), used by
    the update and, with the updated parameters, by the overshooting diagnostic."""
    return o.reward + hp.gamma * o.bootstrap * v_next - v_s


class StreamAgent(abc.ABC):
    """Base of the stream-x agents: normalisation, optimiser construction, init.

    A subclass (one module per algorithm) declares its networks (:meth:`network_specs`),
    its behaviour policy (``_act``), its evaluation policy (``greedy_action``) and its
    learning step (``step``), with one TD-error function used by both the update and the
    overshooting diagnostic. ``streamrl.agents.ALGORITHMS`` registers it by name.
    """

    requires_discrete = False
    """True for algorithms that need Discrete actions (the config layer refuses Box ones)."""

    has_policy = True
    """False for prediction (Stream TD(λ)): nothing to evaluate with ``streamrl eval``."""

    classic = False
    """True for a classic baseline (DQN1): its defaults are the classic preset's
    (:func:`streamrl.config.apply_preset`), not stream-x's."""

    classic_lr = 1e-3
    """Adam's step size under the classic preset."""

    schedule_as: str | None = None
    """Take the family's run length and ε schedule of this algorithm (None: its own name)."""

    def __init__(self, config: AgentConfig):
        self.config = config

    @classmethod
    def default_hidden(cls, discrete: bool) -> tuple[int, ...]:
        """Hidden widths of the MLP torso when ``--hidden`` is not given (the official
        classic-control and MuJoCo scripts): 2 × 128 unless an algorithm says otherwise."""
        return (128, 128)

    @classmethod
    def evaluation_policy(cls, discrete: bool) -> str:
        """How ``streamrl eval`` acts, for people (recorded in eval.json)."""
        return "greedy"

    # -- networks -----------------------------------------------------------------
    @abc.abstractmethod
    def network_specs(self) -> dict[str, Network]:
        """Network name → :class:`Network` (head sizes and the κ of its ObGD)."""

    @functools.cached_property
    def _nets(self) -> dict:
        from streamrl.nets import StreamNet

        c = self.config
        return {
            name: StreamNet(torso=c.torso, hidden=c.hidden, heads=spec.heads, sparsity=c.sparsity, layer_norm=c.layer_norm)
            for name, spec in self.network_specs().items()
        }

    def networks(self) -> dict:
        """Network name → Flax module (:class:`streamrl.nets.StreamNet`)."""
        return self._nets

    def apply(self, name: str, params: Any, obs: jax.Array):
        """Head outputs of network ``name`` (its Flax parameter tree) at one normalised
        observation: a tuple of float32 vectors, one per head."""
        return self._nets[name].apply(params, obs)

    def optimizer(self, name: str, hp: HParams) -> optax.GradientTransformationExtraArgs:
        """The ObGD (or AdaptiveObGD) of network ``name``, with the κ its spec declares; or
        a classic baseline's optimiser on the same trace update (``sgd``, ``adam``: no κ)."""
        kappa = getattr(hp, self.network_specs()[name].kappa)
        if self.config.optimizer == "adaptive":
            return adaptive_obgd(hp.lr, hp.gamma, hp.lambda_, kappa, hp.beta2, hp.adam_eps)
        if self.config.optimizer == "sgd":
            return trace_sgd(hp.lr, hp.gamma, hp.lambda_)
        if self.config.optimizer == "adam":
            return trace_adam(hp.lr, hp.gamma, hp.lambda_, beta2=hp.beta2, eps=hp.adam_eps)
        return obgd(hp.lr, hp.gamma, hp.lambda_, kappa)

    def paired_value_and_grad(self, name, params, obs, next_obs, select):
        """One batched forward pass of network ``name`` on (s, s′).

        Returns ``(select(out_s), ∇ select(out_s), out_next)`` where ``out_*`` are the head
        outputs at s and s′ and ``select`` maps the heads at s to the scalar prediction
        (e.g. q(s, a)). Same values as separate passes, with half the XLA kernels.

        Measured on a 2-core CPU, the batch of two wins for MLPs (fewer kernels) and loses
        for the conv torsos (whole Stream Q step, MinAtar: 318–336 µs paired against
        299–303 µs separate; Atari: 1,157 against 1,053 µs), so conv torsos take a gradient
        pass at s and a forward pass at s′.
        """
        if self.config.torso != "mlp":
            apply = functools.partial(self.apply, name)
            value, grads = jax.value_and_grad(lambda p: select(apply(p, obs)))(params)
            return value, grads, apply(params, next_obs)
        batch = jnp.stack([obs, next_obs])
        apply = functools.partial(self.apply, name)
        out, vjp = jax.vjp(lambda p: jax.vmap(apply, (None, 0))(p, batch), params)
        first = jax.tree_util.tree_map(lambda x: x[0], out)
        value, cotangent_s = jax.value_and_grad(select)(first)
        cotangent = jax.tree_util.tree_map(
            lambda c: jnp.stack([c, jnp.zeros_like(c)]), cotangent_s
        )
        (grads,) = vjp(cotangent)
        return value, grads, jax.tree_util.tree_map(lambda x: x[1], out)

    def forward_pair(self, name, params, obs, next_obs):
        """Head outputs of network ``name`` at s and at s′ (one batch of two for MLPs, two
        passes for conv torsos, as :meth:`paired_value_and_grad`)."""
        apply = functools.partial(self.apply, name)
        if self.config.torso != "mlp":
            return apply(params, obs), apply(params, next_obs)
        out = jax.vmap(apply, (None, 0))(params, jnp.stack([obs, next_obs]))
        return jax.tree_util.tree_map(lambda x: x[0], out), jax.tree_util.tree_map(lambda x: x[1], out)

    @staticmethod
    def overshoot_check(diagnose, td_error, td_after_fn) -> tuple[jax.Array, jax.Array]:
        """``(checked, overshot)`` int32 scalars: whether δ′ = ``td_after_fn()`` (the TD
        error recomputed on the same sample with the new parameters) was computed, and
        whether it has the opposite sign of δ. ``diagnose`` is a Python bool or an
        unbatched traced bool; a traced one runs ``td_after_fn`` under ``lax.cond``, so
        skipped checks cost no forward passes (also under ``vmap``, where the predicate
        stays unbatched)."""

        def check():
            return jnp.ones((), jnp.int32), (td_error * td_after_fn() < 0).astype(jnp.int32)

        def skip():
            return jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)

        if isinstance(diagnose, bool):
            return check() if diagnose else skip()
        return jax.lax.cond(diagnose, check, skip)

    def state_value_td_error(self, name, params, obs, o: "Observation", hp: HParams):
        """δ (:func:`state_value_td_error`) of state-value network ``name`` (its head 0 is
        v) and ∇v(s); returns ``(td_error, grads)`` with δ a stopped-gradient float32."""
        v_s, grads, (v_next,) = self.paired_value_and_grad(name, params, obs, o.next_obs, lambda heads: heads[0][0])
        return jax.lax.stop_gradient(state_value_td_error(o, hp, v_s, v_next[0])), grads

    def state_value_td_error_after(self, name, params, obs, o: "Observation", hp: HParams):
        """δ′: :func:`state_value_td_error` with the updated parameters ``params`` of
        network ``name`` on the same sample (the overshooting diagnostic)."""
        (v_s,), (v_next,) = self.forward_pair(name, params, obs, o.next_obs)
        return state_value_td_error(o, hp, v_s[0], v_next[0])

    def apply_update(self, name, params, opt_state, grads, td_error, reset, hp):
        """One ObGD step of network ``name``; returns (params, opt_state)."""
        updates, opt_state = self.optimizer(name, hp).update(
            grads, opt_state, td_error=td_error, reset=reset
        )
        return optax.apply_updates(params, updates), opt_state

    # -- stream normalisation ----------------------------------------------------
    def _with_time(self, x, episode_step):
        if self.config.time_limit is None:
            return x
        return jnp.concatenate([x.reshape(-1), nz.time_feature(episode_step, self.config.time_limit)])

    def _normalize_obs(self, stats, x, hp):
        x = x.astype(jnp.float32)
        return jnp.where(hp.normalize_obs > 0, nz.welford_normalize(stats, x), x)

    def _stack(self, prev_obs, frame):
        """Drop the oldest frame of ``prev_obs`` and append ``frame`` (newest last)."""
        if self.config.frame_stack == 1:
            return frame
        c = self.config.obs_shape[-1]
        return jnp.concatenate([prev_obs[..., c:], frame], axis=-1)

    def _fill(self, frame):
        """A fresh stack: ``frame_stack`` copies of the first frame of an episode
        (Gymnasium's FrameStackObservation pads with the reset observation the same way)."""
        if self.config.frame_stack == 1:
            return frame
        return jnp.concatenate([frame] * self.config.frame_stack, axis=-1)

    def observe(
        self, norm: StreamNorm, prev_obs: jax.Array, ts: TimeStep, hp: HParams
    ) -> tuple[StreamNorm, Observation]:
        """Update the normalisers with one TimeStep and return the normalised view.

        Order (docs/algorithms.md): s′ updates the observation statistics before it is
        normalised; when the environment was reset (``ts.new_episode``), the reset
        observation then does the same. ``prev_obs`` is the normalised s
        (``AgentState.obs``): with frame stacking, s′ is s with its oldest frame dropped
        and the newly normalised frame appended, and a reset observation starts a fresh
        stack. The learner's episode ends (traces and reward trace reset, no bootstrap
        when terminated) at ``terminated or truncated``, also where the environment goes
        on (Atari's lost lives under ``--life-loss continue``: s′ is then also the
        observation to act on, and its stack goes on).
        """
        done = jnp.logical_or(ts.terminated, ts.truncated)
        new_episode = done if ts.new_episode is None else ts.new_episode
        final_obs = ts.final_obs.astype(jnp.float32)
        stats = nz.welford_update(norm.obs, final_obs)
        next_obs = self._normalize_obs(stats, final_obs, hp)
        reset_stats = nz.welford_update(stats, ts.obs.astype(jnp.float32))
        stats = jax.tree_util.tree_map(lambda a, b: jnp.where(new_episode, a, b), reset_stats, stats)
        reset_obs = self._normalize_obs(stats, ts.obs, hp)
        episode_step = norm.episode_step + 1
        next_obs = self._stack(prev_obs, next_obs)
        reset_obs = self._fill(reset_obs)
        act_obs = jnp.where(new_episode, self._with_time(reset_obs, 0 * episode_step), self._with_time(next_obs, episode_step))
        next_obs = self._with_time(next_obs, episode_step)
        reward = ts.reward.astype(jnp.float32)
        scaler, scaled = nz.reward_scaler_update(norm.reward, reward, done, hp.gamma)
        reward = jnp.where(hp.scale_reward > 0, scaled, reward)
        cut = jnp.logical_or(ts.terminated, jnp.logical_and(ts.truncated, hp.bootstrap_truncated <= 0))
        new_norm = StreamNorm(stats, scaler, jnp.where(new_episode, 0, episode_step))
        return new_norm, Observation(next_obs, act_obs, reward, done, 1.0 - cut.astype(jnp.float32))

    def frozen_observation(self, norm: StreamNorm, prev_obs, raw_obs, episode_step, new_episode, hp: HParams):
        """The network input for ``raw_obs`` with the normalisers frozen (evaluation): the
        statistics in ``norm`` are used, not updated. ``prev_obs`` is the previous input
        (for frame stacking), ``episode_step`` the steps taken in the episode (int32, for
        the time feature), ``new_episode`` a bool scalar that starts a fresh frame stack."""
        x = self._normalize_obs(norm.obs, raw_obs, hp)
        x = jnp.where(new_episode, self._fill(x), self._stack(prev_obs, x)) if self.config.frame_stack > 1 else x
        return self._with_time(x, episode_step)

    @abc.abstractmethod
    def greedy_action(self, params: dict, obs: jax.Array) -> jax.Array:
        """The action an evaluation takes at normalised ``obs`` (no exploration)."""

    # -- lifecycle -----------------------------------------------------------------
    def init(self, key: jax.Array, obs: jax.Array, hp: HParams) -> AgentState:
        """Fresh parameters, traces and normalisers; the first observation ``obs`` (raw,
        the observation shape) goes through the normaliser and the first action is chosen.
        """
        key, *net_keys = jax.random.split(key, 1 + len(self.network_specs()))
        stats = nz.welford_update(nz.welford_init(self.config.obs_shape), obs.astype(jnp.float32))
        norm = StreamNorm(stats, nz.reward_scaler_init(), jnp.zeros((), jnp.int32))
        x = self._with_time(self._fill(self._normalize_obs(stats, obs, hp)), norm.episode_step)
        params = {
            name: net.init(k, jnp.zeros(self.config.net_input_shape, jnp.float32))
            for (name, net), k in zip(self.networks().items(), net_keys)
        }
        opt_state = {name: self.optimizer(name, hp).init(p) for name, p in params.items()}
        step = jnp.zeros((), jnp.int32)
        action, nongreedy = self._act(params, x, step, action_key(key, step), hp)
        return AgentState(
            params=params,
            opt_state=opt_state,
            norm=norm,
            obs=x,
            action=action,
            nongreedy=nongreedy,
            key=key,
            step=step,
            td_error=jnp.zeros((), jnp.float32),
            diag=Diagnostics.zeros(),
        )

    def restart(self, state: AgentState, obs: jax.Array, hp: HParams) -> AgentState:
        """Start a fresh episode at raw ``obs`` without learning (a resumed host run: the
        environment was reset and the transition in flight is lost). As at an episode end:
        ``obs`` goes through the observation normaliser, the traces and the reward trace
        are zeroed, the time feature and the frame stack restart, and the action is chosen
        with the stream's key for the current step. Parameters, normaliser statistics and
        AdaptiveObGD's second moments are kept."""
        stats = nz.welford_update(state.norm.obs, obs.astype(jnp.float32))
        episode_step = jnp.zeros((), jnp.int32)
        x = self._with_time(self._fill(self._normalize_obs(stats, obs, hp)), episode_step)
        norm = StreamNorm(stats, state.norm.reward._replace(trace=jnp.zeros_like(state.norm.reward.trace)), episode_step)
        opt_state = {
            name: s._replace(trace=jax.tree_util.tree_map(jnp.zeros_like, s.trace)) for name, s in state.opt_state.items()
        }
        action, nongreedy = self._act(state.params, x, state.step, action_key(state.key, state.step), hp)
        return state._replace(opt_state=opt_state, norm=norm, obs=x, action=action, nongreedy=nongreedy)

    @abc.abstractmethod
    def _act(self, params, obs, step, key, hp):
        """Choose an action at normalised ``obs``: returns (action, nongreedy)."""

    @abc.abstractmethod
    def step(self, state: AgentState, ts: TimeStep, hp: HParams, diagnose=True) -> tuple[AgentState, jax.Array]:
        """Learn from (s, a, r, s′) and choose the next action, for one stream (unbatched;
        a fleet is ``jax.vmap`` of it).

        Args:
          state: the stream's :class:`AgentState` (s is ``state.obs``, a ``state.action``).
          ts: the :class:`~streamrl.types.TimeStep` the environment returned for a: obs
            and final_obs float32 of ``config.obs_shape``, reward float32 [], terminated,
            truncated (and new_episode) bool [].
          hp: :class:`HParams` of float32 [] scalars.
          diagnose: Python bool or unbatched traced bool: recompute δ′ after the update for
            the overshooting diagnostic (:class:`Diagnostics`).

        Returns:
          ``(new_state, action)``: the action at the next observation, int32 [] (Discrete)
          or float32 [action_dim] (Box, unclipped), equal to ``new_state.action``.
        """
