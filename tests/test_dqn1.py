"""DQN1 (issue 14): one update against a hand computation in NumPy, the target network's
schedule, the classic defaults, and a fleet member equal to the single run."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from streamrl.agents import ALGORITHMS, TimeStep
from streamrl.config import TrainConfig, apply_preset, check_options, resolve
from streamrl.errors import ConfigError
from streamrl.types import EnvSpec

SPEC = EnvSpec(env_id="CartPole-v1", family="classic_control", obs_shape=(4,), discrete=True, action_dim=2, time_limit=500)


def _agent(**options):
    cfg = apply_preset(TrainConfig(algo="dqn1", hidden=(8,), time_feature="off", **options))
    resolved = resolve(cfg, SPEC)
    return ALGORITHMS["dqn1"](resolved.agent), resolved.members[0].hparams.as_arrays()


def _numpy_q(params, x):
    layers = params["params"]
    names = sorted(layers, key=lambda n: int(n.split("_")[1]))
    h = np.asarray(x, np.float64) @ np.asarray(layers[names[0]]["kernel"], np.float64) + np.asarray(layers[names[0]]["bias"], np.float64)
    pre = h
    h = np.where(h > 0, h, 0.01 * h)
    last = layers[names[1]]
    return h @ np.asarray(last["kernel"], np.float64) + np.asarray(last["bias"], np.float64), pre, h


def _numpy_grad(params, x, a):
    """∂q(x, a)/∂θ of the one-hidden-layer net, by hand."""
    layers = params["params"]
    names = sorted(layers, key=lambda n: int(n.split("_")[1]))
    w2 = np.asarray(layers[names[1]]["kernel"], np.float64)
    _, pre, h = _numpy_q(params, x)
    g_last_kernel = np.zeros_like(w2)
    g_last_kernel[:, a] = h
    g_last_bias = np.zeros(w2.shape[1])
    g_last_bias[a] = 1.0
    dh = w2[:, a] * np.where(pre > 0, 1.0, 0.01)
    return {names[0]: {"kernel": np.outer(np.asarray(x, np.float64), dh), "bias": dh},
            names[1]: {"kernel": g_last_kernel, "bias": g_last_bias}}


def test_the_classic_defaults_and_refusals():
    agent, hp = _agent()
    c = agent.config
    assert (c.optimizer, c.layer_norm, c.sparsity) == ("adam", False, 0.0)
    assert float(hp.lr) == pytest.approx(1e-4) and float(hp.lambda_) == 0.0
    assert float(hp.normalize_obs) == 0.0 and float(hp.scale_reward) == 0.0 and float(hp.target_update_every) == 1000.0
    with pytest.raises(ConfigError, match="--lambda must be 0"):
        check_options(TrainConfig(algo="dqn1", lambda_=(0.5,)))
    with pytest.raises(ConfigError, match="has no target network"):
        check_options(TrainConfig(algo="q", target_update_every=(10.0,)))
    # --preset classic: the same switches for Stream Q(λ), an explicit --lr wins
    q = apply_preset(TrainConfig(algo="q", preset="classic", lr=(3e-4,)))
    assert (q.optimizer, q.layer_norm, q.sparsity, q.normalize_obs, q.scale_reward, q.lr, q.lambda_) == (
        "adam", False, 0.0, False, False, (3e-4,), (0.8,))


def test_one_update_matches_a_hand_computation_and_the_target_follows_its_schedule():
    agent, hp = _agent(target_update_every=(3.0,), gamma=(0.9,))
    rng = np.random.default_rng(0)
    obs0 = jnp.asarray(rng.normal(size=4), jnp.float32)
    state = agent.init(jax.random.PRNGKey(0), obs0, hp)
    # perturb the target so that it differs from the online network before the first sync
    target = jax.tree_util.tree_map(lambda p: p + 0.05, state.params["q_target"])
    state = state._replace(params={"q": state.params["q"], "q_target": target})
    online0 = jax.tree_util.tree_map(np.asarray, state.params["q"])
    m = jax.tree_util.tree_map(lambda p: np.zeros(p.shape), online0)
    v = jax.tree_util.tree_map(lambda p: np.zeros(p.shape), online0)
    lr, b1, b2, eps = 1e-4, 0.9, 0.999, 1e-8
    theta = online0
    for t in range(1, 7):
        s, a = np.asarray(state.obs, np.float64), int(state.action)
        s_next = rng.normal(size=4)
        reward, terminated = float(rng.normal()), t == 5
        tgt_before = jax.tree_util.tree_map(np.asarray, state.params["q_target"])
        q_sa = _numpy_q({"params": theta["params"]}, s)[0][a]
        q_next = _numpy_q({"params": tgt_before["params"]}, s_next)[0].max()
        td_error = reward + 0.9 * (0.0 if terminated else 1.0) * q_next - q_sa
        grad = _numpy_grad({"params": theta["params"]}, s, a)
        new_theta = {"params": {}}
        for layer, g in grad.items():
            new_theta["params"][layer] = {}
            for k in g:
                ascent = td_error * g[k]  # Adam on δ∇q (λ = 0: the trace is the gradient)
                m["params"][layer][k] = b1 * m["params"][layer][k] + (1 - b1) * ascent
                v["params"][layer][k] = b2 * v["params"][layer][k] + (1 - b2) * ascent**2
                m_hat, v_hat = m["params"][layer][k] / (1 - b1**t), v["params"][layer][k] / (1 - b2**t)
                new_theta["params"][layer][k] = theta["params"][layer][k] + lr * m_hat / (np.sqrt(v_hat) + eps)
        ts = TimeStep(obs=jnp.asarray(s_next, jnp.float32), reward=jnp.float32(reward), terminated=jnp.asarray(terminated),
                      truncated=jnp.asarray(False), final_obs=jnp.asarray(s_next, jnp.float32))
        state, _ = agent.step(state, ts, hp)
        assert float(state.td_error) == pytest.approx(td_error, rel=1e-4, abs=1e-5)
        for got, want in zip(jax.tree_util.tree_leaves(state.params["q"]), jax.tree_util.tree_leaves(new_theta)):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-7)
        synced = t % 3 == 0
        for got_t, online, before in zip(jax.tree_util.tree_leaves(state.params["q_target"]),
                                         jax.tree_util.tree_leaves(state.params["q"]), jax.tree_util.tree_leaves(tgt_before)):
            np.testing.assert_array_equal(np.asarray(got_t), np.asarray(online) if synced else before)
        theta = new_theta


def test_a_dqn1_fleet_member_learns_as_the_single_run(tmp_path):
    from test_barrier import _params as params  # the fleet's parameters from its checkpoint

    from streamrl.run import train

    flags = dict(algo="dqn1", total_steps=1500, checkpoint_every=0, progress=False, tensorboard=False, target_update_every=(100.0,))
    train(TrainConfig(num_seeds=2, run_dir=tmp_path / "fleet", **flags))
    train(dataclasses.replace(TrainConfig(seed=1, run_dir=tmp_path / "single", **flags)))
    fleet, single = params(tmp_path / "fleet"), params(tmp_path / "single")
    assert set(fleet) == {"q", "q_target"}
    for x, y in zip(jax.tree_util.tree_leaves(fleet), jax.tree_util.tree_leaves(single)):
        np.testing.assert_allclose(np.asarray(x)[1], np.asarray(y)[0], rtol=1e-5, atol=1e-6)
