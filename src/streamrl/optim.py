"""ObGD and AdaptiveObGD: overshooting-bounded gradient descent with eligibility traces.

Source: Elsayed, Vasan & Mahmood, "Streaming Deep Reinforcement Learning Finally Works",
arXiv:2410.14606 (2024), Algorithms 3 and 4, with the official code's behaviour where the
two differ (docs/algorithms.md, section "ObGD").

Both are optax ``GradientTransformationExtraArgs``. Unlike a loss-minimising optimiser, they
take the gradient ``g`` of the *prediction* (v(s), q(s, a) or the policy objective) and the
TD error δ, and return the update to **add** to the parameters (optax convention,
``optax.apply_updates``)::

    z ← γλ z + g
    δ̄ = max(|δ|, 1)
    M = lr · κ · δ̄ · ‖z‖₁              (‖·‖₁ over all tensors of the tree)
    α = lr / M if M > 1 else lr
    update = α δ z
    z ← 0 if reset                      (after the update)

All hyper-parameters may be traced JAX scalars, so a sweep over them never recompiles.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "ObGDState", "AdaptiveObGDState", "TraceAdamState", "obgd", "adaptive_obgd", "trace_sgd", "trace_adam",
    "trace_l1_norm", "OPTIMIZERS",
]

OPTIMIZERS = ("obgd", "adaptive", "sgd", "adam")
"""The optimisers an agent can use: the stream-x ones (ObGD, AdaptiveObGD) and the classic
baselines of the paper's stream-barrier comparison (SGD and Adam on the trace update)."""


class ObGDState(NamedTuple):
    """State of :func:`obgd`.

    Attributes:
      trace: eligibility trace z, a tree shaped like the parameters.
      step_size: float32 scalar, the effective step size α of the last update (a
        diagnostic: lr when the bound was not active, lr / M when it was; 0 before the
        first update).
    """

    trace: Any
    step_size: Any = None


class AdaptiveObGDState(NamedTuple):
    """State of :func:`adaptive_obgd`.

    Attributes:
      trace: eligibility trace z, a tree shaped like the parameters.
      second_moment: v, per-parameter running mean of (δ z)², same tree.
      count: int32 scalar, number of updates made so far (t in the bias correction).
      step_size: float32 scalar, the effective step size α of the last update.
    """

    trace: Any
    second_moment: Any
    count: jax.Array
    step_size: Any = None


def trace_l1_norm(tree: Any) -> jax.Array:
    """‖tree‖₁: the sum of absolute values over every leaf of ``tree`` (float32 scalar)."""
    return sum(jnp.sum(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree))


def _step_size(lr, kappa, td_error, norm):
    """α = lr / M if M > 1 else lr, with M = lr · κ · max(|δ|, 1) · norm."""
    bound = lr * kappa * jnp.maximum(jnp.abs(td_error), 1.0) * norm
    return jnp.where(bound > 1.0, lr / bound, lr)


def _reset(tree, reset):
    return jax.tree_util.tree_map(lambda x: jnp.where(reset, jnp.zeros_like(x), x), tree)


def obgd(lr=1.0, gamma=0.99, lambda_=0.8, kappa=2.0) -> optax.GradientTransformationExtraArgs:
    """Overshooting-bounded gradient descent (ObGD), paper Algorithm 3.

    Args:
      lr: step size (float scalar, may be traced).
      gamma: discount γ in [0, 1].
      lambda_: trace decay λ in [0, 1].
      kappa: bounding factor κ ≥ 0 (0 disables the bound: plain TD(λ) steps).

    Returns:
      An optax ``GradientTransformationExtraArgs``. Its ``update(grads, state, params=None,
      *, td_error, reset)`` takes ``grads``, the gradient of the prediction (a tree like the
      parameters), ``td_error`` δ (float scalar) and ``reset`` (bool scalar: zero the trace
      after this update, e.g. at an episode end), and returns ``(updates, state)`` with
      ``updates = α δ z`` to be added to the parameters.
    """

    def init_fn(params):
        return ObGDState(trace=jax.tree_util.tree_map(jnp.zeros_like, params), step_size=jnp.zeros((), jnp.float32))

    def update_fn(grads, state, params=None, *, td_error, reset):
        del params
        decay = gamma * lambda_
        trace = jax.tree_util.tree_map(lambda z, g: decay * z + g, state.trace, grads)
        alpha = _step_size(lr, kappa, td_error, trace_l1_norm(trace))
        scale = alpha * td_error
        updates = jax.tree_util.tree_map(lambda z: scale * z, trace)
        return updates, ObGDState(trace=_reset(trace, reset), step_size=jnp.asarray(alpha, jnp.float32))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adaptive_obgd(
    lr=1.0, gamma=0.99, lambda_=0.8, kappa=2.0, beta2=0.999, eps=1e-8
) -> optax.GradientTransformationExtraArgs:
    """AdaptiveObGD, paper Algorithm 4: ObGD with an Adam-style second-moment scaling.

    ``v ← β₂ v + (1 − β₂)(δ z)²``, ``v̂ = v / (1 − β₂ᵗ)`` with t the number of updates;
    the bound uses ‖z / √(v̂ + ε)‖₁ (ε inside the square root) and the update is
    ``α δ z / √(v̂ + ε)``. Arguments and ``update`` signature as :func:`obgd`, plus
    ``beta2`` in [0, 1) and ``eps`` > 0.
    """

    def init_fn(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return AdaptiveObGDState(
            trace=zeros, second_moment=zeros, count=jnp.zeros((), jnp.int32), step_size=jnp.zeros((), jnp.float32)
        )

    def update_fn(grads, state, params=None, *, td_error, reset):
        del params
        decay = gamma * lambda_
        count = state.count + 1
        trace = jax.tree_util.tree_map(lambda z, g: decay * z + g, state.trace, grads)
        second = jax.tree_util.tree_map(
            lambda v, z: beta2 * v + (1.0 - beta2) * jnp.square(td_error * z),
            state.second_moment,
            trace,
        )
        correction = 1.0 - beta2 ** count.astype(jnp.float32)
        scaled = jax.tree_util.tree_map(
            lambda z, v: z / jnp.sqrt(v / correction + eps), trace, second
        )
        alpha = _step_size(lr, kappa, td_error, trace_l1_norm(scaled))
        scale = alpha * td_error
        updates = jax.tree_util.tree_map(lambda s: scale * s, scaled)
        return updates, AdaptiveObGDState(
            trace=_reset(trace, reset), second_moment=second, count=count, step_size=jnp.asarray(alpha, jnp.float32)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def trace_sgd(lr=1e-3, gamma=0.99, lambda_=0.8) -> optax.GradientTransformationExtraArgs:
    """Classic semi-gradient TD(λ) / Q(λ) / AC(λ) steps: ``z ← γλ z + g``, ``update = lr δ z``,
    ``z ← 0`` if reset — ObGD without its overshooting bound (exactly :func:`obgd` with
    κ = 0). The classic baseline of the paper's stream-barrier comparison (Section 2;
    docs/algorithms.md "Ablations and classic baselines"). State :class:`ObGDState`;
    arguments and ``update`` signature as :func:`obgd`."""
    return obgd(lr, gamma, lambda_, kappa=0.0)


class TraceAdamState(NamedTuple):
    """State of :func:`trace_adam`.

    Attributes:
      trace: eligibility trace z, a tree shaped like the parameters.
      first_moment, second_moment: Adam's m and v of the ascent direction δz, same tree.
      count: int32 scalar, updates made so far (t in the bias corrections).
      step_size: float32 scalar, ``lr`` (a diagnostic, for the same TensorBoard tag).
    """

    trace: Any
    first_moment: Any
    second_moment: Any
    count: jax.Array
    step_size: Any = None


TRACE_ADAM_BETA1 = 0.9
"""β₁ of :func:`trace_adam` (Adam's default, as the classic baselines use)."""


def trace_adam(lr=1e-3, gamma=0.99, lambda_=0.8, beta1=TRACE_ADAM_BETA1, beta2=0.999, eps=1e-8) -> optax.GradientTransformationExtraArgs:
    """Adam on the eligibility-trace update, the paper's "classic" streaming baseline with a
    well-tuned Adam (Section 2): ``z ← γλ z + g``; with the ascent direction ``d = δ z``,
    ``m ← β₁ m + (1 − β₁) d``, ``v ← β₂ v + (1 − β₂) d²``, ``update = lr · m̂ / (√v̂ + ε)``
    with m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ) (Kingma & Ba 2015; ε outside the square
    root, as ``optax.adam``); ``z ← 0`` if reset. No overshooting bound. Arguments and
    ``update`` signature as :func:`obgd`, plus β₁, β₂ in [0, 1) and ε > 0.
    """

    def init_fn(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return TraceAdamState(trace=zeros, first_moment=zeros, second_moment=zeros,
                              count=jnp.zeros((), jnp.int32), step_size=jnp.zeros((), jnp.float32))

    def update_fn(grads, state, params=None, *, td_error, reset):
        del params
        decay = gamma * lambda_
        count = state.count + 1
        trace = jax.tree_util.tree_map(lambda z, g: decay * z + g, state.trace, grads)
        direction = jax.tree_util.tree_map(lambda z: td_error * z, trace)
        first = jax.tree_util.tree_map(lambda m, d: beta1 * m + (1.0 - beta1) * d, state.first_moment, direction)
        second = jax.tree_util.tree_map(lambda v, d: beta2 * v + (1.0 - beta2) * jnp.square(d), state.second_moment, direction)
        t = count.astype(jnp.float32)
        c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
        updates = jax.tree_util.tree_map(lambda m, v: lr * (m / c1) / (jnp.sqrt(v / c2) + eps), first, second)
        return updates, TraceAdamState(
            trace=_reset(trace, reset), first_moment=first, second_moment=second, count=count,
            step_size=jnp.asarray(lr, jnp.float32),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
