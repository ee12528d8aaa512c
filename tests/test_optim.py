"""ObGD and AdaptiveObGD against an independent plain-NumPy transcription of
docs/algorithms.md, section "ObGD".

The reference below is written from the text only (nothing from ``streamrl`` is used
to compute expected values):

    z ← γλ z + g
    δ̄ = max(|δ|, 1)
    M = lr · κ · δ̄ · ‖z‖₁            (‖·‖₁ over ALL tensors)
    α = lr / M if M > 1 else lr
    w ← w + α δ z
    if reset: z ← 0                    (after the update)

Adaptive: v ← β₂ v + (1 − β₂)(δ z)², v̂ = v / (1 − β₂ᵗ) (t counts updates from 1),
the norm is ‖z / √(v̂ + ε)‖₁ and the update is α δ z / √(v̂ + ε).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from streamrl.optim import adaptive_obgd, obgd

RTOL = 2e-5
ATOL = 1e-6

SHAPES = {
    "dense": {"kernel": (5, 4), "bias": (4,)},
    "conv": (3, 3, 2),
    "head": (4, 1),
}


# --------------------------------------------------------------------------------------
# Independent reference (float64 NumPy, flat dict of leaves keyed by path)
# --------------------------------------------------------------------------------------


def _flatten(tree, prefix=()):
    """Nested dict -> {path tuple: np.ndarray float64}."""
    out = {}
    for k in sorted(tree):
        v = tree[k]
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = np.asarray(v, dtype=np.float64)
    return out


def _unflatten(flat):
    out = {}
    for path, v in flat.items():
        d = out
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = v
    return out


class RefObGD:
    """ObGD / AdaptiveObGD transcribed from the paper (docs/algorithms.md)."""

    def __init__(self, shapes, lr, gamma, lam, kappa, adaptive=False, beta2=0.999, eps=1e-8):
        self.lr, self.gamma, self.lam, self.kappa = lr, gamma, lam, kappa
        self.adaptive, self.beta2, self.eps = adaptive, beta2, eps
        self.z = {p: np.zeros(s) for p, s in _flatten_shapes(shapes).items()}
        self.v = {p: np.zeros(s) for p, s in _flatten_shapes(shapes).items()}
        self.t = 0
        self.last_bound = None
        self.last_alpha = None

    def step(self, grads, delta, reset):
        g = _flatten(grads)
        delta = float(delta)
        # 1. z <- gamma*lambda*z + g
        for p in self.z:
            self.z[p] = self.gamma * self.lam * self.z[p] + g[p]
        if self.adaptive:
            self.t += 1
            for p in self.v:
                self.v[p] = self.beta2 * self.v[p] + (1.0 - self.beta2) * (delta * self.z[p]) ** 2
            scaled = {
                p: self.z[p] / np.sqrt(self.v[p] / (1.0 - self.beta2**self.t) + self.eps)
                for p in self.z
            }
        else:
            scaled = dict(self.z)
        # 2.-4. the bound, with the L1 norm over every tensor together
        delta_bar = max(abs(delta), 1.0)
        norm = sum(np.abs(s).sum() for s in scaled.values())
        bound = self.lr * self.kappa * delta_bar * norm
        alpha = self.lr / bound if bound > 1.0 else self.lr
        self.last_bound, self.last_alpha = bound, alpha
        # 5. the update to add
        update = {p: alpha * delta * scaled[p] for p in scaled}
        # 6. reset AFTER the update
        if reset:
            for p in self.z:
                self.z[p] = np.zeros_like(self.z[p])
        return update


def _flatten_shapes(shapes, prefix=()):
    out = {}
    for k in sorted(shapes):
        v = shapes[k]
        if isinstance(v, dict):
            out.update(_flatten_shapes(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = tuple(v)
    return out


def _random_tree(rng, shapes, scale=1.0):
    flat = {p: (scale * rng.standard_normal(s)).astype(np.float32) for p, s in _flatten_shapes(shapes).items()}
    return _unflatten(flat)


def _to_jax(tree):
    return jax.tree_util.tree_map(jnp.asarray, tree)


def _assert_tree_close(actual, expected_flat, rtol=RTOL, atol=ATOL, what=""):
    got = _flatten(jax.tree_util.tree_map(np.asarray, actual))
    assert set(got) == set(expected_flat), what
    for p in expected_flat:
        np.testing.assert_allclose(got[p], expected_flat[p], rtol=rtol, atol=atol, err_msg=f"{what} {p}")


def _random_deltas(rng, n):
    """δ of both signs, magnitudes both below and above 1, never ~0."""
    mags = rng.uniform(0.1, 3.0, size=n)
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rng.shuffle(signs)
    return (mags * signs).astype(np.float32)


def _run_sequence(opt, ref, rng, n_steps, grad_scale, reset_p=0.3, adaptive=False):
    params = _to_jax(_random_tree(rng, SHAPES))
    ref_params = _flatten(params)
    state = opt.init(params)
    deltas = _random_deltas(rng, n_steps)
    resets = rng.random(n_steps) < reset_p
    bounds = []
    for i in range(n_steps):
        grads = _random_tree(rng, SHAPES, grad_scale)
        expected = ref.step(grads, deltas[i], bool(resets[i]))
        bounds.append(ref.last_bound)
        updates, state = opt.update(
            _to_jax(grads), state, params, td_error=jnp.float32(deltas[i]), reset=jnp.bool_(resets[i])
        )
        _assert_tree_close(updates, expected, what=f"update step {i}")
        _assert_tree_close(state.trace, ref.z, what=f"trace step {i}")
        if adaptive:
            _assert_tree_close(state.second_moment, ref.v, rtol=1e-4, atol=1e-9, what=f"v step {i}")
            assert int(state.count) == i + 1
        params = optax.apply_updates(params, updates)
        for p in ref_params:
            ref_params[p] = ref_params[p] + expected[p]
    # updates are ADDED to the parameters
    _assert_tree_close(params, ref_params, rtol=1e-4, atol=1e-5, what="params")
    return np.array(bounds), resets


# --------------------------------------------------------------------------------------
# ObGD
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lr,gamma,lam,kappa,grad_scale,seed",
    [
        (1.0, 0.99, 0.8, 2.0, 1.0, 0),
        (1.0, 0.99, 0.8, 3.0, 0.05, 1),
        (0.3, 0.9, 0.5, 2.0, 0.2, 2),
        (0.01, 0.99, 0.0, 1.0, 0.5, 3),
    ],
)
def test_obgd_matches_reference_over_sequence(lr, gamma, lam, kappa, grad_scale, seed):
    rng = np.random.default_rng(seed)
    opt = obgd(lr=lr, gamma=gamma, lambda_=lam, kappa=kappa)
    ref = RefObGD(SHAPES, lr, gamma, lam, kappa)
    _run_sequence(opt, ref, rng, n_steps=12, grad_scale=grad_scale)


def test_obgd_bound_active_with_large_gradients():
    rng = np.random.default_rng(10)
    lr, gamma, lam, kappa = 1.0, 0.99, 0.8, 2.0
    opt = obgd(lr=lr, gamma=gamma, lambda_=lam, kappa=kappa)
    ref = RefObGD(SHAPES, lr, gamma, lam, kappa)
    bounds, _ = _run_sequence(opt, ref, rng, n_steps=8, grad_scale=10.0)
    assert np.all(bounds > 1.0), bounds  # every step was in the bounded regime (α = lr / M)


def test_obgd_bound_inactive_with_tiny_gradients():
    rng = np.random.default_rng(11)
    lr, gamma, lam, kappa = 0.1, 0.99, 0.8, 2.0
    opt = obgd(lr=lr, gamma=gamma, lambda_=lam, kappa=kappa)
    ref = RefObGD(SHAPES, lr, gamma, lam, kappa)
    bounds, _ = _run_sequence(opt, ref, rng, n_steps=8, grad_scale=1e-3)
    assert np.all(bounds < 1.0), bounds  # every step used α = lr


def test_obgd_bound_active_single_step_value():
    """One step from a zero trace: update = δ z / (κ δ̄ ‖z‖₁) when lr = 1 and M > 1."""
    g = {"a": np.full((2, 3), 2.0, np.float32), "b": np.array([-1.0, 3.0], np.float32)}
    delta = -4.0
    opt = obgd(lr=1.0, gamma=0.99, lambda_=0.8, kappa=2.0)
    state = opt.init(_to_jax(g))
    updates, _ = opt.update(_to_jax(g), state, None, td_error=jnp.float32(delta), reset=jnp.bool_(False))
    l1 = 6 * 2.0 + 1.0 + 3.0
    expected = {k: delta * v / (2.0 * 4.0 * l1) for k, v in g.items()}
    _assert_tree_close(updates, _flatten(expected))


def test_obgd_reset_happens_after_update():
    rng = np.random.default_rng(20)
    lr, gamma, lam, kappa = 0.5, 0.9, 0.8, 2.0
    opt = obgd(lr=lr, gamma=gamma, lambda_=lam, kappa=kappa)
    ref = RefObGD(SHAPES, lr, gamma, lam, kappa)
    params = _to_jax(_random_tree(rng, SHAPES))
    state = opt.init(params)
    g1, g2, g3 = (_random_tree(rng, SHAPES, 0.3) for _ in range(3))
    d1, d2, d3 = 1.5, -0.7, 2.0

    # step 1: no reset
    u1, state = opt.update(_to_jax(g1), state, params, td_error=jnp.float32(d1), reset=jnp.bool_(False))
    _assert_tree_close(u1, ref.step(g1, d1, False))

    # step 2: reset; the update must use the FULL trace γλ g1 + g2, not g2 alone
    expected2 = ref.step(g2, d2, True)
    u2, state = opt.update(_to_jax(g2), state, params, td_error=jnp.float32(d2), reset=jnp.bool_(True))
    _assert_tree_close(u2, expected2)
    full_trace = {p: gamma * lam * _flatten(g1)[p] + _flatten(g2)[p] for p in _flatten(g1)}
    alpha = ref.last_alpha
    _assert_tree_close(u2, {p: alpha * d2 * full_trace[p] for p in full_trace})
    # not the update of a trace reset before the step
    got2 = _flatten(jax.tree_util.tree_map(np.asarray, u2))
    assert any(np.max(np.abs(got2[p])) > 1e-4 for p in got2)
    g2_flat = _flatten(g2)
    norm_g2 = sum(np.abs(v).sum() for v in g2_flat.values())
    m_g2 = lr * kappa * max(abs(d2), 1.0) * norm_g2
    alpha_g2 = lr / m_g2 if m_g2 > 1 else lr
    wrong = {p: alpha_g2 * d2 * g2_flat[p] for p in g2_flat}
    assert max(np.max(np.abs(got2[p] - wrong[p])) for p in got2) > 1e-3
    # the returned trace is zero
    for leaf in jax.tree_util.tree_leaves(state.trace):
        assert np.all(np.asarray(leaf) == 0.0)

    # step 3 starts from z = 0: the update is α δ g3
    expected3 = ref.step(g3, d3, False)
    u3, state = opt.update(_to_jax(g3), state, params, td_error=jnp.float32(d3), reset=jnp.bool_(False))
    _assert_tree_close(u3, expected3)
    g3_flat = _flatten(g3)
    _assert_tree_close(u3, {p: ref.last_alpha * d3 * g3_flat[p] for p in g3_flat})
    _assert_tree_close(state.trace, g3_flat)


def test_obgd_norm_is_over_whole_tree():
    """Each tensor alone gives M < 1 (α = lr), the whole tree M > 1 (α = lr / M)."""
    lr, kappa, delta = 1.0, 2.0, 1.0
    g = {
        "a": np.array([0.1, -0.1, 0.1, -0.1], np.float32),  # ‖·‖₁ = 0.4
        "b": np.array([[0.2], [-0.2]], np.float32),  # ‖·‖₁ = 0.4
    }
    per_tensor_m = [lr * kappa * 1.0 * np.abs(v).sum() for v in g.values()]
    assert all(m < 1.0 for m in per_tensor_m)
    whole_m = lr * kappa * 1.0 * sum(np.abs(v).sum() for v in g.values())
    assert whole_m > 1.0

    opt = obgd(lr=lr, gamma=0.99, lambda_=0.8, kappa=kappa)
    state = opt.init(_to_jax(g))
    updates, _ = opt.update(_to_jax(g), state, None, td_error=jnp.float32(delta), reset=jnp.bool_(False))
    ref = RefObGD({"a": (4,), "b": (2, 1)}, lr, 0.99, 0.8, kappa)
    expected = ref.step(g, delta, False)
    assert ref.last_bound == pytest.approx(whole_m)
    _assert_tree_close(updates, expected)
    # explicitly: α = lr / 1.6 for both tensors, not lr (which per-tensor norms would give)
    _assert_tree_close(updates, {("a",): g["a"] / 1.6, ("b",): g["b"] / 1.6})
    got = _flatten(jax.tree_util.tree_map(np.asarray, updates))
    assert not np.allclose(got[("a",)], lr * delta * g["a"])


def test_obgd_kappa_zero_disables_bound():
    rng = np.random.default_rng(30)
    lr, gamma, lam = 0.5, 0.99, 0.8
    opt = obgd(lr=lr, gamma=gamma, lambda_=lam, kappa=0.0)
    params = _to_jax(_random_tree(rng, SHAPES))
    state = opt.init(params)
    z = {p: np.zeros(s) for p, s in _flatten_shapes(SHAPES).items()}
    for i in range(5):
        grads = _random_tree(rng, SHAPES, 50.0)  # huge: would be bounded for any κ > 0
        delta = float(_random_deltas(rng, 1)[0]) * 10
        for p in z:
            z[p] = gamma * lam * z[p] + _flatten(grads)[p]
        updates, state = opt.update(_to_jax(grads), state, params, td_error=jnp.float32(delta), reset=jnp.bool_(False))
        # plain TD(λ): α = lr exactly
        _assert_tree_close(updates, {p: lr * delta * z[p] for p in z}, rtol=5e-5, atol=1e-4)


def test_obgd_under_jit_with_traced_hyperparameters():
    rng = np.random.default_rng(40)
    n_traces = []

    @jax.jit
    def step(hp, grads, state, delta, reset):
        n_traces.append(1)
        opt = obgd(lr=hp["lr"], gamma=hp["gamma"], lambda_=hp["lambda_"], kappa=hp["kappa"])
        return opt.update(grads, state, None, td_error=delta, reset=reset)

    params = _to_jax(_random_tree(rng, SHAPES))
    for hp_vals, grad_scale in [
        ((1.0, 0.99, 0.8, 2.0), 1.0),
        ((0.1, 0.9, 0.5, 2.0), 1e-3),
        ((0.5, 0.95, 0.7, 0.0), 0.5),
    ]:
        lr, gamma, lam, kappa = hp_vals
        hp = {k: jnp.float32(v) for k, v in zip(("lr", "gamma", "lambda_", "kappa"), hp_vals)}
        ref = RefObGD(SHAPES, lr, gamma, lam, kappa)
        state = obgd().init(params)
        deltas = _random_deltas(rng, 6)
        resets = [False, True, False, False, True, False]
        for i in range(6):
            grads = _random_tree(rng, SHAPES, grad_scale)
            expected = ref.step(grads, deltas[i], resets[i])
            updates, state = step(hp, _to_jax(grads), state, jnp.float32(deltas[i]), jnp.bool_(resets[i]))
            _assert_tree_close(updates, expected, what=f"{hp_vals} step {i}")
            _assert_tree_close(state.trace, ref.z)
            for leaf in jax.tree_util.tree_leaves(updates):
                assert leaf.dtype == jnp.float32
    # hyper-parameters, δ and reset are traced: one compilation serves every value
    assert len(n_traces) == 1


# --------------------------------------------------------------------------------------
# AdaptiveObGD
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lr,gamma,lam,kappa,beta2,eps,grad_scale,seed",
    [
        (1.0, 0.99, 0.8, 2.0, 0.999, 1e-8, 1.0, 0),
        (1.0, 0.99, 0.8, 3.0, 0.9, 1e-8, 0.1, 1),
        (0.01, 0.9, 0.5, 1.0, 0.99, 1e-4, 0.5, 2),
        (0.001, 0.99, 0.8, 0.0, 0.9, 1e-2, 0.5, 3),
    ],
)
def test_adaptive_obgd_matches_reference_over_sequence(lr, gamma, lam, kappa, beta2, eps, grad_scale, seed):
    rng = np.random.default_rng(100 + seed)
    opt = adaptive_obgd(lr=lr, gamma=gamma, lambda_=lam, kappa=kappa, beta2=beta2, eps=eps)
    ref = RefObGD(SHAPES, lr, gamma, lam, kappa, adaptive=True, beta2=beta2, eps=eps)
    _run_sequence(opt, ref, rng, n_steps=12, grad_scale=grad_scale, adaptive=True)


def test_adaptive_obgd_count_and_bias_correction_t1_t2():
    beta2, eps, lr, kappa, gamma, lam = 0.9, 1e-3, 0.01, 2.0, 0.9, 0.5
    opt = adaptive_obgd(lr=lr, gamma=gamma, lambda_=lam, kappa=kappa, beta2=beta2, eps=eps)
    g1 = {"w": np.array([[0.5, -1.0], [2.0, 0.25]], np.float32), "b": np.array([1.0], np.float32)}
    g2 = {"w": np.array([[-0.5, 0.5], [1.0, -2.0]], np.float32), "b": np.array([0.3], np.float32)}
    d1, d2 = 2.0, -0.5
    state = opt.init(_to_jax(g1))
    assert int(state.count) == 0
    for leaf in jax.tree_util.tree_leaves(state.second_moment):
        assert np.all(np.asarray(leaf) == 0.0)

    # t = 1: v = (1-β₂)(δz)², v̂ = v / (1-β₂) = (δz)²
    u1, state = opt.update(_to_jax(g1), state, None, td_error=jnp.float32(d1), reset=jnp.bool_(False))
    assert int(state.count) == 1
    z1 = _flatten(g1)
    v1 = {p: (1 - beta2) * (d1 * z1[p]) ** 2 for p in z1}
    _assert_tree_close(state.second_moment, v1, rtol=1e-5, atol=1e-9)
    s1 = {p: z1[p] / np.sqrt((d1 * z1[p]) ** 2 + eps) for p in z1}
    m1 = lr * kappa * max(abs(d1), 1.0) * sum(np.abs(s).sum() for s in s1.values())
    a1 = lr / m1 if m1 > 1 else lr
    _assert_tree_close(u1, {p: a1 * d1 * s1[p] for p in s1})
    # without bias correction v̂ would be 10× smaller at t = 1: make sure it matters here
    s1_uncorrected = {p: z1[p] / np.sqrt(v1[p] + eps) for p in z1}
    got1 = _flatten(jax.tree_util.tree_map(np.asarray, u1))
    assert not np.allclose(got1[("w",)], a1 * d1 * s1_uncorrected[("w",)], rtol=1e-2)

    # t = 2: v = β₂ v1 + (1-β₂)(δ z2)², v̂ = v / (1-β₂²)
    u2, state = opt.update(_to_jax(g2), state, None, td_error=jnp.float32(d2), reset=jnp.bool_(True))
    assert int(state.count) == 2
    z2 = {p: gamma * lam * z1[p] + _flatten(g2)[p] for p in z1}
    v2 = {p: beta2 * v1[p] + (1 - beta2) * (d2 * z2[p]) ** 2 for p in z1}
    _assert_tree_close(state.second_moment, v2, rtol=1e-5, atol=1e-9)
    s2 = {p: z2[p] / np.sqrt(v2[p] / (1 - beta2**2) + eps) for p in z2}
    m2 = lr * kappa * max(abs(d2), 1.0) * sum(np.abs(s).sum() for s in s2.values())
    a2 = lr / m2 if m2 > 1 else lr
    _assert_tree_close(u2, {p: a2 * d2 * s2[p] for p in s2})
    # reset zeroes the trace but neither v nor the count
    for leaf in jax.tree_util.tree_leaves(state.trace):
        assert np.all(np.asarray(leaf) == 0.0)

    # t = 3 continues counting after a reset
    _, state = opt.update(_to_jax(g1), state, None, td_error=jnp.float32(d1), reset=jnp.bool_(False))
    assert int(state.count) == 3


def test_adaptive_obgd_under_jit_with_traced_hyperparameters():
    rng = np.random.default_rng(50)
    n_traces = []

    @jax.jit
    def run(hp, grads_seq, deltas, resets, state):
        n_traces.append(1)
        opt = adaptive_obgd(
            lr=hp["lr"], gamma=hp["gamma"], lambda_=hp["lambda_"], kappa=hp["kappa"], beta2=hp["beta2"], eps=hp["eps"]
        )

        def body(st, xs):
            g, d, r = xs
            u, st = opt.update(g, st, None, td_error=d, reset=r)
            return st, u

        return jax.lax.scan(body, state, (grads_seq, deltas, resets))

    params = _to_jax(_random_tree(rng, SHAPES))
    n = 8
    for hp_vals in [(1.0, 0.99, 0.8, 2.0, 0.999, 1e-8), (0.01, 0.9, 0.5, 1.0, 0.9, 1e-4)]:
        hp = {k: jnp.float32(v) for k, v in zip(("lr", "gamma", "lambda_", "kappa", "beta2", "eps"), hp_vals)}
        lr, gamma, lam, kappa, beta2, eps = hp_vals
        ref = RefObGD(SHAPES, lr, gamma, lam, kappa, adaptive=True, beta2=beta2, eps=eps)
        grads = [_random_tree(rng, SHAPES, 0.5) for _ in range(n)]
        deltas = _random_deltas(rng, n)
        resets = rng.random(n) < 0.3
        expected = [ref.step(grads[i], deltas[i], bool(resets[i])) for i in range(n)]
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[_to_jax(g) for g in grads])
        state, updates = run(hp, stacked, jnp.asarray(deltas), jnp.asarray(resets), adaptive_obgd().init(params))
        for i in range(n):
            _assert_tree_close(jax.tree_util.tree_map(lambda x: x[i], updates), expected[i], rtol=5e-5, what=f"step {i}")
        _assert_tree_close(state.trace, ref.z, rtol=5e-5)
        assert int(state.count) == n
    assert len(n_traces) == 1
