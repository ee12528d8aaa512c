"""Normalisation of the stream, as pure state (no mutable wrappers).

Source: arXiv:2410.14606, Section 3 ("sample mean and variance" normalisation, Welford's
algorithm) and docs/algorithms.md section "Normalisation of the stream":

* observations: per-element running mean and sample variance; each sample updates the
  statistics BEFORE it is normalised, x̂ = (x − μ) / √(σ² + 1e-8), σ² = 1 until two
  samples have been seen (so the first normalised observation is 0);
* rewards: a discounted-return trace u ← γ(1 − done)u + r, with ``done`` the episode end
  of the current step (Gymnasium's ``NormalizeReward`` convention); its running variance
  scales the reward, r̂ = r / √(Var[u] + 1e-8) (no mean subtraction);
* time feature: τ = −0.5 + max(t − 1, 0) / T appended after normalisation, t the number of
  steps taken in the current episode (0 at reset) and T the episode time limit (the
  official code repeats −0.5 on the first step of an episode; :func:`time_feature`).

All functions are pure and jit/vmap friendly; statistics are float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Welford",
    "welford_init",
    "welford_update",
    "welford_variance",
    "welford_normalize",
    "RewardScaler",
    "reward_scaler_init",
    "reward_scaler_update",
    "time_feature",
    "NORM_EPS",
]

NORM_EPS = 1e-8


class Welford(NamedTuple):
    """Running mean and sum of squared deviations of a stream of arrays.

    Attributes:
      count: int32 scalar, samples seen.
      mean: float32, the sample shape.
      m2: float32, the sample shape: Σ (x − mean_old)(x − mean_new).
    """

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


def welford_init(shape=()) -> Welford:
    """Empty statistics for samples of ``shape``."""
    return Welford(jnp.zeros((), jnp.int32), jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))


def welford_update(stats: Welford, x: jax.Array) -> Welford:
    """Add one sample ``x`` (the sample shape) with Welford's update."""
    count = stats.count + 1
    delta = x - stats.mean
    mean = stats.mean + delta / count.astype(jnp.float32)
    return Welford(count, mean, stats.m2 + delta * (x - mean))


def welford_variance(stats: Welford) -> jax.Array:
    """Sample variance m2 / (n − 1), or 1 while fewer than two samples have been seen."""
    n = stats.count.astype(jnp.float32)
    return jnp.where(stats.count < 2, jnp.ones_like(stats.m2), stats.m2 / jnp.maximum(n - 1.0, 1.0))


def welford_normalize(stats: Welford, x: jax.Array) -> jax.Array:
    """(x − μ) / √(σ² + 1e-8) with the current statistics."""
    return (x - stats.mean) / jnp.sqrt(welford_variance(stats) + NORM_EPS)


class RewardScaler(NamedTuple):
    """Reward scaling state: the discounted-return trace u and Welford statistics of u."""

    trace: jax.Array
    stats: Welford


def reward_scaler_init() -> RewardScaler:
    return RewardScaler(jnp.zeros((), jnp.float32), welford_init(()))


def reward_scaler_update(scaler: RewardScaler, reward, done, gamma):
    """Update with one reward and return ``(scaler, scaled_reward)``.

    Args:
      reward: float32 scalar, the raw reward r of this step.
      done: bool scalar, whether this step ended the episode (terminated or truncated).
      gamma: discount γ of the trace.
    """
    trace = gamma * (1.0 - jnp.asarray(done, jnp.float32)) * scaler.trace + reward
    stats = welford_update(scaler.stats, trace)
    scaled = reward / jnp.sqrt(welford_variance(stats) + NORM_EPS)
    return RewardScaler(trace, stats), scaled


def time_feature(episode_step, time_limit) -> jax.Array:
    """τ = −0.5 + max(t − 1, 0) / T as a float32 vector of length 1, t the steps taken in
    the episode (0 at the reset observation).

    The official code's ``AddTimeInfo`` appends τ to an observation and then grows it by
    1/T, so the reset observation and the first s′ of an episode both carry −0.5 and the
    s′ of step t carries −0.5 + (t − 1)/T; streamrl follows it (the reference behaviour).
    """
    t = jnp.maximum(jnp.asarray(episode_step, jnp.float32) - 1.0, 0.0)
    return jnp.reshape(-0.5 + t / time_limit, (1,))
