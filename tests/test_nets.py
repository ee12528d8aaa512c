"""Networks and sparse initialisation (docs/algorithms.md, "Networks").

Expected values come from the architectures stated in the paper (docs/algorithms.md): parameter counts are
computed from the layer sizes, the forward pass is recomputed by hand in NumPy (VALID
convolution, LayerNorm over the whole layer output with ε = 1e-5 and no affine, leaky
ReLU 0.01, plain linear heads), and zero counts use exact integer ceilings.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from streamrl.nets import StreamNet, num_sparse_zeros, sparse_init, torso_for_shape


def _ceil_09(fan_in: int) -> int:
    """⌈0.9 · fan_in⌉ in exact integer arithmetic: ⌈9n / 10⌉."""
    return -(-9 * fan_in // 10)


# --------------------------------------------------------------------------------------
# sparse_init
# --------------------------------------------------------------------------------------


def test_num_sparse_zeros_exact_ceiling():
    assert num_sparse_zeros(70, 0.9) == 63
    for fan_in in [1, 2, 4, 5, 10, 17, 36, 70, 128, 256, 1024, 3136]:
        assert num_sparse_zeros(fan_in, 0.9) == _ceil_09(fan_in), fan_in
    assert _ceil_09(4) == 4 and _ceil_09(5) == 5 and _ceil_09(17) == 16 and _ceil_09(70) == 63
    # exact decimal ceiling for other sparsities too: ⌈k · n / 100⌉
    for pct in (50, 75, 95, 99):
        for fan_in in (1, 4, 20, 70, 100, 256, 1000):
            assert num_sparse_zeros(fan_in, pct / 100) == -(-pct * fan_in // 100), (pct, fan_in)


def _columns(w):
    """Kernel (…, out) → (fan_in, out)."""
    return np.asarray(w).reshape(-1, w.shape[-1])


@pytest.mark.parametrize(
    "shape",
    [
        (4, 8),  # dense, fan_in 4
        (5, 8),  # dense, fan_in 5
        (17, 128),  # dense, fan_in 17 (the MLP's first layer)
        (70, 16),  # dense, fan_in 70
        (128, 6),  # dense head
        (3, 3, 4, 16),  # conv, fan_in 36
        (8, 8, 4, 32),  # conv, fan_in 256
        (1, 1, 70, 16),  # conv, fan_in 70
    ],
)
def test_sparse_init_zero_count_and_bounds(shape):
    init = sparse_init(0.9)
    w = init(jax.random.PRNGKey(sum(shape)), shape)
    assert w.shape == shape
    assert w.dtype == jnp.float32
    fan_in = int(np.prod(shape[:-1]))
    cols = _columns(w)
    assert cols.shape == (fan_in, shape[-1])
    zeros_per_unit = (cols == 0.0).sum(axis=0)
    np.testing.assert_array_equal(zeros_per_unit, np.full(shape[-1], _ceil_09(fan_in)))
    bound = 1.0 / np.sqrt(fan_in)
    assert np.all(np.abs(cols) <= bound * (1 + 1e-6))


@pytest.mark.parametrize("shape", [(70, 16), (3, 3, 8, 16), (256, 6)])
def test_sparse_init_patterns_differ_between_units(shape):
    w = _columns(sparse_init(0.9)(jax.random.PRNGKey(3), shape))
    masks = [tuple(col) for col in (w == 0.0).T]
    # C(70, 7), C(72, 7), C(256, 25) patterns: all distinct with overwhelming probability
    assert len(set(masks)) == len(masks)
    # and different keys give different masks
    w2 = _columns(sparse_init(0.9)(jax.random.PRNGKey(4), shape))
    assert not np.array_equal(w == 0.0, w2 == 0.0)


def test_sparse_init_zero_positions_uniform_and_values_uniform():
    fan_in, out = 10, 3000
    w = _columns(sparse_init(0.9)(jax.random.PRNGKey(0), (fan_in, out)))
    zero_freq = (w == 0.0).mean(axis=1)  # each input zeroed in ~90% of the units
    assert np.all(np.abs(zero_freq - 0.9) < 0.04), zero_freq
    nz = w[w != 0.0]
    assert nz.size == out  # exactly one non-zero per unit
    bound = 1.0 / np.sqrt(fan_in)
    assert nz.max() > 0.9 * bound and nz.min() < -0.9 * bound
    assert abs(nz.mean()) < 0.05 * bound * 3


def test_sparse_init_other_sparsities():
    w = _columns(sparse_init(0.0)(jax.random.PRNGKey(1), (20, 7)))
    assert np.all(w != 0.0)
    w = _columns(sparse_init(0.5)(jax.random.PRNGKey(1), (21, 7)))
    np.testing.assert_array_equal((w == 0.0).sum(axis=0), np.full(7, 11))  # ⌈10.5⌉
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError):
            sparse_init(bad)


# --------------------------------------------------------------------------------------
# Architectures from the paper (docs/algorithms.md)
# --------------------------------------------------------------------------------------


def _conv_out(n, k, s):
    return (n - k) // s + 1


def _expected_layers(torso, obs_shape, hidden, heads):
    """List of (kind, kernel shape) from docs/algorithms.md's description."""
    layers = []
    if torso == "mlp":
        n = obs_shape[0]
        for h in hidden:
            layers.append(("dense", (n, h)))
            n = h
    else:
        convs = [(16, 3, 1)] if torso == "minatar" else [(32, 8, 5), (64, 4, 3), (64, 3, 2)]
        h, w, c = obs_shape
        for out_c, k, s in convs:
            layers.append(("conv", (k, k, c, out_c)))
            h, w, c = _conv_out(h, k, s), _conv_out(w, k, s), out_c
        n = h * w * c
        layers.append(("dense", (n, hidden[-1])))
        n = hidden[-1]
    for m in heads:
        layers.append(("dense", (n, m)))
    return layers


CASES = {
    "mlp": dict(torso="mlp", obs_shape=(17,), hidden=(128, 128), heads=(1,)),
    "minatar": dict(torso="minatar", obs_shape=(10, 10, 4), hidden=(128,), heads=(6,)),
    "atari": dict(torso="atari", obs_shape=(84, 84, 4), hidden=(256,), heads=(6,)),
}


def test_flatten_sizes_from_reference():
    # the reference states flatten(1024) for MinAtar and flatten(256) for Atari
    assert _expected_layers(**CASES["minatar"])[1][1][0] == 1024
    assert _expected_layers(**CASES["atari"])[3][1][0] == 256


@pytest.fixture(scope="module")
def inited():
    out = {}
    for name, case in CASES.items():
        net = StreamNet(torso=case["torso"], hidden=case["hidden"], heads=case["heads"])
        params = net.init(jax.random.PRNGKey(0), jnp.zeros(case["obs_shape"], jnp.float32))
        out[name] = (net, params)
    return out


def _leaves_with_path(params):
    return [
        (tuple(getattr(k, "key", str(k)) for k in path), np.asarray(v))
        for path, v in jax.tree_util.tree_flatten_with_path(params)[0]
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_param_count_and_shapes(inited, name):
    net, params = inited[name]
    layers = _expected_layers(**CASES[name])
    expected_count = sum(int(np.prod(shape)) + shape[-1] for _, shape in layers)
    leaves = _leaves_with_path(params)
    assert sum(v.size for _, v in leaves) == expected_count
    kernels = sorted(v.shape for p, v in leaves if p[-1] == "kernel")
    assert kernels == sorted(shape for _, shape in layers)
    biases = sorted(v.shape for p, v in leaves if p[-1] == "bias")
    assert biases == sorted((shape[-1],) for _, shape in layers)


def test_param_counts_by_hand():
    # the three torsos written out from the paper
    mlp = (17 * 128 + 128) + (128 * 128 + 128) + (128 * 1 + 1)
    minatar = (3 * 3 * 4 * 16 + 16) + (1024 * 128 + 128) + (128 * 6 + 6)
    atari = (8 * 8 * 4 * 32 + 32) + (4 * 4 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64) + (256 * 256 + 256) + (256 * 6 + 6)
    for name, count in [("mlp", mlp), ("minatar", minatar), ("atari", atari)]:
        case = CASES[name]
        net = StreamNet(torso=case["torso"], hidden=case["hidden"], heads=case["heads"])
        shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros(case["obs_shape"]))
        assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes)) == count, name


@pytest.mark.parametrize("name", list(CASES))
def test_only_kernels_and_biases_biases_zero_kernels_sparse(inited, name):
    _, params = inited[name]
    assert set(params) == {"params"}
    leaves = _leaves_with_path(params)
    n_layers = len(_expected_layers(**CASES[name]))
    assert len(leaves) == 2 * n_layers  # no LayerNorm scale/bias anywhere
    for path, v in leaves:
        assert path[-1] in ("kernel", "bias"), path
        assert not any("LayerNorm" in str(p) for p in path), path
        if path[-1] == "bias":
            assert np.all(v == 0.0), path
        else:  # every kernel, heads included, is sparse-initialised
            fan_in = int(np.prod(v.shape[:-1]))
            np.testing.assert_array_equal((_columns(v) == 0.0).sum(0), np.full(v.shape[-1], _ceil_09(fan_in)))
            assert np.all(np.abs(v) <= 1.0 / np.sqrt(fan_in) * (1 + 1e-6))


# --------------------------------------------------------------------------------------
# Forward pass recomputed by hand in NumPy
# --------------------------------------------------------------------------------------


def _np_conv_valid(x, k, b, stride):
    kh, kw, _, cout = k.shape
    ho, wo = _conv_out(x.shape[0], kh, stride), _conv_out(x.shape[1], kw, stride)
    out = np.empty((ho, wo, cout))
    for i, j in itertools.product(range(ho), range(wo)):
        patch = x[i * stride : i * stride + kh, j * stride : j * stride + kw, :]
        out[i, j] = np.tensordot(patch, k, axes=3) + b
    return out


def _np_layer_norm_all(x):
    mu = x.mean()
    var = ((x - mu) ** 2).mean()
    return (x - mu) / np.sqrt(var + 1e-5)


def _np_layer_norm_last(x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5)


def _np_leaky(x):
    return np.where(x > 0, x, 0.01 * x)


def _np_forward(torso, params, x, n_hidden_dense, n_heads, layer_norm=_np_layer_norm_all):
    p = {k: {kk: np.asarray(vv, np.float64) for kk, vv in v.items()} for k, v in params["params"].items()}
    x = np.asarray(x, np.float64)
    dense_i = 0
    if torso == "mlp":
        x = x.reshape(-1)
    else:
        strides = [1] if torso == "minatar" else [5, 3, 2]
        for ci, s in enumerate(strides):
            c = p[f"Conv_{ci}"]
            x = _np_leaky(layer_norm(_np_conv_valid(x, c["kernel"], c["bias"], s)))
        x = x.reshape(-1)  # H, W, C order
    for _ in range(n_hidden_dense):
        d = p[f"Dense_{dense_i}"]
        x = _np_leaky(_np_layer_norm_all(x @ d["kernel"] + d["bias"]))
        dense_i += 1
    outs = []
    for _ in range(n_heads):
        d = p[f"Dense_{dense_i}"]
        outs.append(x @ d["kernel"] + d["bias"])  # no normalisation on the output layer
        dense_i += 1
    return outs


def _randomise(params, seed):
    """Dense random values for every parameter (biases included) in the same tree."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda v: jnp.asarray(rng.normal(0, 0.3, v.shape), jnp.float32), params)


FORWARD_CASES = [
    ("mlp", (17,), (128, 128), (1,)),
    ("mlp", (6,), (32, 32), (2, 2)),
    ("minatar", (10, 10, 4), (128,), (6,)),
    ("atari", (84, 84, 4), (256,), (6,)),
]


@pytest.mark.parametrize("torso,obs_shape,hidden,heads", FORWARD_CASES)
def test_forward_matches_numpy(torso, obs_shape, hidden, heads):
    net = StreamNet(torso=torso, hidden=hidden, heads=heads)
    x = jnp.asarray(np.random.default_rng(1).normal(1.0, 2.0, obs_shape), jnp.float32)
    init_params = net.init(jax.random.PRNGKey(2), x)
    n_hidden_dense = len(hidden) if torso == "mlp" else 1
    for params in (init_params, _randomise(init_params, 3)):
        out = net.apply(params, x)
        assert isinstance(out, tuple) and len(out) == len(heads)
        expected = _np_forward(torso, params, x, n_hidden_dense, len(heads))
        for o, e, m in zip(out, expected, heads):
            assert o.shape == (m,)
            scale = max(1.0, np.abs(e).max())
            np.testing.assert_allclose(np.asarray(o), e, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("torso,obs_shape", [("minatar", (10, 10, 4)), ("atari", (84, 84, 4))])
def test_conv_layer_norm_over_whole_output(torso, obs_shape):
    hidden = (128,) if torso == "minatar" else (256,)
    net = StreamNet(torso=torso, hidden=hidden, heads=(6,))
    x = jnp.asarray(np.random.default_rng(4).normal(0.0, 1.0, obs_shape), jnp.float32)
    params = _randomise(net.init(jax.random.PRNGKey(0), x), 5)
    _, state = net.apply(params, x, capture_intermediates=True)
    inter = state["intermediates"]
    stride = 1 if torso == "minatar" else 5
    p0 = {k: np.asarray(v, np.float64) for k, v in params["params"]["Conv_0"].items()}
    pre = _np_conv_valid(np.asarray(x, np.float64), p0["kernel"], p0["bias"], stride)
    np.testing.assert_allclose(np.asarray(inter["Conv_0"]["__call__"][0]), pre, rtol=1e-4, atol=1e-4)
    normed = np.asarray(inter["LayerNorm_0"]["__call__"][0], np.float64)
    # normalised over all of H·W·C together ...
    np.testing.assert_allclose(normed, _np_layer_norm_all(pre), rtol=1e-4, atol=1e-4)
    assert abs(normed.mean()) < 1e-4 and abs(normed.var() - 1.0) < 1e-3
    # ... not per position over channels only
    assert not np.allclose(normed, _np_layer_norm_last(pre), atol=1e-2)
    # and the whole network agrees with the hand computation, and not with per-channel LN
    out = np.asarray(net.apply(params, x)[0])
    np.testing.assert_allclose(out, _np_forward(torso, params, x, 1, 1)[0], rtol=1e-4, atol=1e-4)
    wrong = _np_forward(torso, params, x, 1, 1, layer_norm=_np_layer_norm_last)[0]
    assert not np.allclose(out, wrong, atol=1e-2)


# --------------------------------------------------------------------------------------
# torso_for_shape and vmap
# --------------------------------------------------------------------------------------


def test_torso_for_shape():
    assert torso_for_shape((17,)) == "mlp"
    assert torso_for_shape((10, 10, 4)) == "minatar"
    assert torso_for_shape((84, 84, 4)) == "atari"
    with pytest.raises(ValueError):
        torso_for_shape((3, 3))


@pytest.mark.parametrize(
    "torso,obs_shape,hidden,heads,batch",
    [
        ("mlp", (17,), (128, 128), (1,), 5),
        ("mlp", (6,), (32, 32), (2, 2), 4),
        ("minatar", (10, 10, 4), (128,), (6,), 4),
        ("atari", (84, 84, 4), (256,), (6,), 2),
    ],
)
def test_vmap_matches_per_sample(torso, obs_shape, hidden, heads, batch):
    net = StreamNet(torso=torso, hidden=hidden, heads=heads)
    xs = jnp.asarray(np.random.default_rng(6).normal(0.0, 1.0, (batch,) + obs_shape), jnp.float32)
    params = _randomise(net.init(jax.random.PRNGKey(1), xs[0]), 7)
    batched = jax.jit(jax.vmap(lambda o: net.apply(params, o)))(xs)
    assert len(batched) == len(heads)
    for h, m in enumerate(heads):
        assert batched[h].shape == (batch, m)
        for i in range(batch):
            single = net.apply(params, xs[i])[h]
            np.testing.assert_allclose(np.asarray(batched[h][i]), np.asarray(single), rtol=1e-5, atol=1e-5)
