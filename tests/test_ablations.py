"""The stream-x ablation switches and classic optimisers (issue 14, part 1): each switch
changes exactly what it names, against independent NumPy computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from streamrl import checkpoint
from streamrl.nets import LAYER_NORM_EPS, StreamNet, sparse_init
from streamrl.optim import obgd, trace_adam, trace_sgd


def _numpy_mlp(params, x, layer_norm: bool):
    layers = params["params"]
    names = sorted(layers, key=lambda n: int(n.split("_")[1]))
    h = np.asarray(x, np.float64)
    for name in names[:-1]:
        h = h @ np.asarray(layers[name]["kernel"], np.float64) + np.asarray(layers[name]["bias"], np.float64)
        if layer_norm:
            h = (h - h.mean()) / np.sqrt(h.var() + LAYER_NORM_EPS)
        h = np.where(h > 0, h, 0.01 * h)
    last = layers[names[-1]]
    return h @ np.asarray(last["kernel"], np.float64) + np.asarray(last["bias"], np.float64)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_layer_norm_switch_matches_a_numpy_mlp_with_and_without_it(layer_norm):
    net = StreamNet(torso="mlp", hidden=(16, 8), heads=(3,), sparsity=0.5, layer_norm=layer_norm)
    x = jax.random.normal(jax.random.PRNGKey(1), (5,)) * 3.0 + 2.0
    params = net.init(jax.random.PRNGKey(0), x)
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    (out,) = net.apply(params, x)
    np.testing.assert_allclose(np.asarray(out), _numpy_mlp(params, x, layer_norm), rtol=2e-4, atol=2e-5)
    other = StreamNet(torso="mlp", hidden=(16, 8), heads=(3,), sparsity=0.5, layer_norm=not layer_norm)
    assert not np.allclose(np.asarray(other.apply(params, x)[0]), np.asarray(out))  # the switch changes the output


def test_conv_torso_without_layer_norm_has_the_same_parameters():
    x = jnp.ones((10, 10, 4))
    on = StreamNet(torso="minatar", hidden=(128,), heads=(6,)).init(jax.random.PRNGKey(0), x)
    off = StreamNet(torso="minatar", hidden=(128,), heads=(6,), layer_norm=False).init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_structure(on) == jax.tree_util.tree_structure(off)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(on), jax.tree_util.tree_leaves(off)))


def test_sparsity_zero_is_a_dense_init_with_the_same_bound():
    w = np.asarray(sparse_init(0.0)(jax.random.PRNGKey(0), (64, 32)))
    assert (w != 0).all() and np.abs(w).max() <= 1 / np.sqrt(64)
    sparse = np.asarray(sparse_init(0.9)(jax.random.PRNGKey(0), (64, 32)))
    assert ((sparse == 0).sum(axis=0) == 58).all()


def _tree(seed):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"w": jax.random.normal(k1, (3, 2)), "b": jax.random.normal(k2, (2,))}


def test_trace_sgd_is_the_unbounded_trace_update():
    opt = trace_sgd(lr=0.01, gamma=0.9, lambda_=0.5)
    params, g1, g2 = _tree(0), _tree(1), _tree(2)
    state = opt.init(params)
    u1, state = opt.update(g1, state, td_error=2.0, reset=False)
    u2, state = opt.update(g2, state, td_error=-1.5, reset=True)
    for k in params:
        z1 = np.asarray(g1[k])
        z2 = 0.45 * z1 + np.asarray(g2[k])
        np.testing.assert_allclose(np.asarray(u1[k]), 0.01 * 2.0 * z1, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(u2[k]), 0.01 * -1.5 * z2, rtol=1e-6)
        assert not np.asarray(state.trace[k]).any()  # reset after the update
    # ObGD with κ = 0 is the same update; with κ = 2 the bound makes it smaller here.
    big = {k: 100.0 * v for k, v in g1.items()}
    bounded, _ = obgd(lr=0.01, kappa=2.0).update(big, obgd(lr=0.01).init(params), td_error=2.0, reset=False)
    plain, _ = trace_sgd(lr=0.01).update(big, trace_sgd(lr=0.01).init(params), td_error=2.0, reset=False)
    assert np.abs(np.asarray(bounded["w"])).sum() < np.abs(np.asarray(plain["w"])).sum()


def test_trace_adam_matches_a_numpy_adam_on_delta_z():
    lr, gamma, lam, b1, b2, eps = 1e-3, 0.99, 0.8, 0.9, 0.999, 1e-8
    opt = trace_adam(lr, gamma, lam, beta1=b1, beta2=b2, eps=eps)
    params = _tree(0)
    grads = [_tree(s) for s in (1, 2, 3)]
    deltas, resets = [0.5, -2.0, 1.0], [False, True, False]
    state = opt.init(params)
    z = {k: np.zeros(np.shape(v)) for k, v in params.items()}
    m = {k: np.zeros(np.shape(v)) for k, v in params.items()}
    v = {k: np.zeros(np.shape(v)) for k, v in params.items()}
    for t, (g, d, r) in enumerate(zip(grads, deltas, resets), start=1):
        updates, state = opt.update(g, state, td_error=jnp.float32(d), reset=jnp.bool_(r))
        for k in params:
            z[k] = gamma * lam * z[k] + np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * d * z[k]
            v[k] = b2 * v[k] + (1 - b2) * (d * z[k]) ** 2
            expected = lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
            np.testing.assert_allclose(np.asarray(updates[k]), expected, rtol=2e-4, atol=1e-9)
            if r:
                z[k] = np.zeros_like(z[k])
        assert int(state.count) == t


def test_ablations_train_from_the_cli_and_resume(tmp_path):
    from streamrl.cli import main
    from streamrl.config import load_run_config

    base = ["train", "q", "--total-steps", "600", "--checkpoint-every", "300", "--no-progress", "--no-tensorboard"]
    assert main(base + ["--run-dir", str(tmp_path / "paper")]) == 0
    ablated = base + ["--no-layer-norm", "--sparsity", "0", "--optimizer", "adam", "--lr", "1e-3"]
    assert main(ablated + ["--run-dir", str(tmp_path / "ablated")]) == 0
    cfg, recorded = load_run_config(tmp_path / "ablated")
    assert recorded["agent"]["layer_norm"] is False and recorded["agent"]["optimizer"] == "adam" and recorded["agent"]["sparsity"] == 0
    assert main(["train", "--resume", str(tmp_path / "ablated"), "--total-steps", "900", "--no-progress"]) == 0


def test_a_checkpoint_from_before_the_layer_norm_switch_still_matches(tmp_path):
    meta_then = {"algo": "q", "env": "CartPole-v1", "agent": {"hidden": [32, 32], "optimizer": "obgd"}, "num_agents": 1, "streamrl": None}
    checkpoint.save(tmp_path, 10, {"agents": {"x": jnp.zeros(3)}}, meta_then)
    now = dict(meta_then, agent={"hidden": [32, 32], "optimizer": "obgd", "layer_norm": True})
    assert checkpoint.read_meta(tmp_path, now)[0] == 10
    from streamrl.errors import CheckpointError

    with pytest.raises(CheckpointError, match="belongs to another run"):
        checkpoint.read_meta(tmp_path, dict(meta_then, agent={"hidden": [32, 32], "optimizer": "obgd", "layer_norm": False}))
