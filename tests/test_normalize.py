"""Stream normalisation (docs/algorithms.md, "Normalisation of the stream") against NumPy.

Expected values are computed independently: running statistics with ``np.mean`` /
``np.var(ddof=1)`` over the samples seen so far, the reward trace with a plain Python
loop, the time feature from its definition τ = −0.5 + t / T.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from streamrl.normalize import (
    reward_scaler_init,
    reward_scaler_update,
    time_feature,
    welford_init,
    welford_normalize,
    welford_update,
    welford_variance,
)

EPS = 1e-8


def _stream(seed, n, shape):
    rng = np.random.default_rng(seed)
    loc = rng.uniform(-5, 5, size=shape)
    scale = rng.uniform(0.1, 4.0, size=shape)
    return (loc + scale * rng.standard_normal((n,) + shape)).astype(np.float32)


@pytest.mark.parametrize("shape,seed", [((5,), 0), ((3, 2), 1), ((), 2)])
def test_welford_matches_numpy_mean_and_sample_variance(shape, seed):
    xs = _stream(seed, 40, shape)
    stats = welford_init(shape)
    assert int(stats.count) == 0
    for k, x in enumerate(xs, start=1):
        stats = welford_update(stats, jnp.asarray(x))
        seen = xs[:k].astype(np.float64)
        assert int(stats.count) == k
        np.testing.assert_allclose(np.asarray(stats.mean), seen.mean(axis=0), rtol=1e-5, atol=1e-5)
        var = np.asarray(welford_variance(stats))
        assert var.shape == shape
        if k < 2:
            np.testing.assert_array_equal(var, np.ones(shape))  # σ² = 1 until two samples
        else:
            np.testing.assert_allclose(var, seen.var(axis=0, ddof=1), rtol=1e-4, atol=1e-5)


def test_welford_empty_and_single_sample():
    shape = (4,)
    stats = welford_init(shape)
    np.testing.assert_array_equal(np.asarray(welford_variance(stats)), np.ones(shape))
    x0 = np.array([3.0, -2.0, 0.5, 100.0], np.float32)
    stats = welford_update(stats, jnp.asarray(x0))
    # the first sample sets the mean
    np.testing.assert_array_equal(np.asarray(stats.mean), x0)
    np.testing.assert_array_equal(np.asarray(welford_variance(stats)), np.ones(shape))
    # and the first normalised sample is 0
    np.testing.assert_array_equal(np.asarray(welford_normalize(stats, jnp.asarray(x0))), np.zeros(shape))
    # a different value against the one-sample statistics: (x − x0) / √(1 + 1e-8)
    x1 = np.array([4.0, -1.0, 0.0, 90.0], np.float32)
    np.testing.assert_allclose(
        np.asarray(welford_normalize(stats, jnp.asarray(x1))), (x1 - x0) / np.sqrt(1.0 + EPS), rtol=1e-6
    )


def test_normalise_after_update_over_stream():
    """x̂ₖ = (xₖ − mean(x₁..xₖ)) / √(var(x₁..xₖ, ddof=1) + 1e-8), var = 1 for k = 1."""
    xs = _stream(7, 30, (6,))
    stats = welford_init((6,))
    stale_differs = False
    for k, x in enumerate(xs, start=1):
        before = stats
        stats = welford_update(stats, jnp.asarray(x))
        got = np.asarray(welford_normalize(stats, jnp.asarray(x)))
        seen = xs[:k].astype(np.float64)
        var = seen.var(axis=0, ddof=1) if k >= 2 else np.ones(6)
        expected = (x - seen.mean(axis=0)) / np.sqrt(var + EPS)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        if k == 1:
            np.testing.assert_array_equal(got, np.zeros(6))
        # normalising with the statistics from BEFORE the update gives something else
        stale = np.asarray(welford_normalize(before, jnp.asarray(x)))
        stale_differs |= not np.allclose(stale, expected, rtol=1e-3, atol=1e-3)
    assert stale_differs


def test_welford_is_jittable_and_scannable():
    xs = _stream(8, 25, (3,))

    @jax.jit
    def run(xs):
        def body(s, x):
            s = welford_update(s, x)
            return s, welford_normalize(s, x)

        return jax.lax.scan(body, welford_init((3,)), xs)

    stats, normed = run(jnp.asarray(xs))
    xs64 = xs.astype(np.float64)
    np.testing.assert_allclose(np.asarray(stats.mean), xs64.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(welford_variance(stats)), xs64.var(0, ddof=1), rtol=1e-4)
    for k in range(1, 26):
        var = xs64[:k].var(0, ddof=1) if k >= 2 else np.ones(3)
        exp = (xs64[k - 1] - xs64[:k].mean(0)) / np.sqrt(var + EPS)
        np.testing.assert_allclose(np.asarray(normed[k - 1]), exp, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------
# Reward scaling
# --------------------------------------------------------------------------------------


def _reference_reward_scaling(rewards, dones, gamma):
    """Independent loop: u ← γ(1 − done)u + r; r̂ = r / √(Var[u₁..uₖ] + 1e-8), Var = 1 for k < 2."""
    u = 0.0
    us, traces, scaled = [], [], []
    for r, d in zip(rewards, dones):
        u = gamma * (1.0 - float(d)) * u + float(r)
        us.append(u)
        traces.append(u)
        var = np.var(np.array(us), ddof=1) if len(us) >= 2 else 1.0
        scaled.append(float(r) / np.sqrt(var + EPS))
    return np.array(traces), np.array(scaled)


@pytest.mark.parametrize("gamma", [0.99, 0.9])
def test_reward_scaler_matches_reference_loop(gamma):
    rng = np.random.default_rng(3)
    n = 40
    rewards = rng.normal(0.5, 2.0, size=n).astype(np.float32)
    dones = np.zeros(n, bool)
    dones[[6, 7, 19, 33]] = True  # several episode ends, two in a row
    exp_trace, exp_scaled = _reference_reward_scaling(rewards, dones, gamma)

    scaler = reward_scaler_init()
    for i in range(n):
        scaler, scaled = reward_scaler_update(scaler, jnp.float32(rewards[i]), jnp.bool_(dones[i]), jnp.float32(gamma))
        np.testing.assert_allclose(float(scaler.trace), exp_trace[i], rtol=1e-5, atol=1e-5, err_msg=f"trace {i}")
        np.testing.assert_allclose(float(scaled), exp_scaled[i], rtol=1e-4, atol=1e-5, err_msg=f"scaled {i}")
        assert int(scaler.stats.count) == i + 1

    # statistics of u match NumPy over all trace values
    np.testing.assert_allclose(float(scaler.stats.mean), exp_trace.mean(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(welford_variance(scaler.stats)), exp_trace.var(ddof=1), rtol=1e-4)


def test_reward_scaler_trace_at_and_after_episode_end():
    gamma = 0.9
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    dones = np.array([False, False, True, False, False])
    scaler = reward_scaler_init()
    traces = []
    for r, d in zip(rewards, dones):
        scaler, _ = reward_scaler_update(scaler, jnp.float32(r), jnp.bool_(d), jnp.float32(gamma))
        traces.append(float(scaler.trace))
    u1 = 1.0
    u2 = gamma * u1 + 2.0
    u3 = 3.0  # done at this step: γ(1 − 1)u2 + r = r
    u4 = gamma * u3 + 4.0  # the next step builds on u3
    u5 = gamma * u4 + 5.0
    np.testing.assert_allclose(traces, [u1, u2, u3, u4, u5], rtol=1e-6)


def test_reward_scaler_first_two_samples_and_no_mean_subtraction():
    gamma = 0.99
    scaler = reward_scaler_init()
    # first reward: Var[u] = 1 → scaled = r / √(1 + 1e-8)
    scaler, s1 = reward_scaler_update(scaler, jnp.float32(3.0), jnp.bool_(False), jnp.float32(gamma))
    np.testing.assert_allclose(float(s1), 3.0 / np.sqrt(1.0 + EPS), rtol=1e-6)
    # second reward: u = [3, 0.99·3 + 5], sample variance of those two
    scaler, s2 = reward_scaler_update(scaler, jnp.float32(5.0), jnp.bool_(False), jnp.float32(gamma))
    u = np.array([3.0, gamma * 3.0 + 5.0])
    np.testing.assert_allclose(float(s2), 5.0 / np.sqrt(np.var(u, ddof=1) + EPS), rtol=1e-5)
    # zero reward scales to exactly zero (no mean subtraction)
    scaler, s3 = reward_scaler_update(scaler, jnp.float32(0.0), jnp.bool_(False), jnp.float32(gamma))
    assert float(s3) == 0.0


def test_reward_scaler_under_jit_scan():
    gamma = 0.95
    rng = np.random.default_rng(5)
    n = 30
    rewards = rng.normal(size=n).astype(np.float32)
    dones = rng.random(n) < 0.15
    exp_trace, exp_scaled = _reference_reward_scaling(rewards, dones, gamma)

    @jax.jit
    def run(rewards, dones, gamma):
        def body(s, xs):
            r, d = xs
            s, out = reward_scaler_update(s, r, d, gamma)
            return s, (s.trace, out)

        return jax.lax.scan(body, reward_scaler_init(), (rewards, dones))

    _, (traces, scaled) = run(jnp.asarray(rewards), jnp.asarray(dones), jnp.float32(gamma))
    np.testing.assert_allclose(np.asarray(traces), exp_trace, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scaled), exp_scaled, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------
# Time feature
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("time_limit", [1000, 200, 7])
def test_time_feature_values(time_limit):
    tau = time_feature(jnp.int32(0), time_limit)
    assert tau.shape == (1,)
    assert tau.dtype == jnp.float32
    assert float(tau[0]) == -0.5
    # the first s′ of an episode repeats −0.5 (the official AddTimeInfo appends, then grows)
    assert float(time_feature(jnp.int32(1), time_limit)[0]) == -0.5
    # then grows by 1/T per step
    expected = -0.5
    for t in range(2, min(time_limit, 25) + 1):
        expected += 1.0 / time_limit
        tau = time_feature(jnp.int32(t), time_limit)
        assert tau.shape == (1,)
        np.testing.assert_allclose(float(tau[0]), expected, rtol=0, atol=1e-6)
    # the s′ of the last step of an episode of T steps: 0.5 − 1/T
    np.testing.assert_allclose(float(time_feature(jnp.int32(time_limit), time_limit)[0]), 0.5 - 1 / time_limit, atol=1e-6)


def test_time_feature_vmapped_over_steps():
    t = jnp.arange(0, 11, dtype=jnp.int32)
    taus = jax.jit(jax.vmap(lambda s: time_feature(s, 10)))(t)
    assert taus.shape == (11, 1)
    np.testing.assert_allclose(np.asarray(taus)[:, 0], -0.5 + np.maximum(np.arange(11) - 1, 0) / 10.0, atol=1e-6)
