"""Behaviour of the four stream-x agents against independent computations (docs/algorithms.md
"The four algorithms"): Q(λ) trace cut, SARSA's next action, AC's entropy sign and update,
TD(λ) convergence on a Markov chain with known values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from streamrl.agents import AgentConfig, HParams, StreamAC, StreamQ, StreamSARSA, StreamTD, TimeStep
from streamrl.agents.base import action_key

OBS = 4


def _ts(obs, reward=0.0, terminated=False, truncated=False, final_obs=None):
    obs = jnp.asarray(obs, jnp.float32)
    return TimeStep(
        obs=obs,
        reward=jnp.float32(reward),
        terminated=jnp.bool_(terminated),
        truncated=jnp.bool_(truncated),
        final_obs=obs if final_obs is None else jnp.asarray(final_obs, jnp.float32),
    )


def _random_stream(rng, n, p_done=0.1):
    for _ in range(n):
        done = rng.random() < p_done
        final = rng.normal(size=OBS)
        obs = rng.normal(size=OBS) if done else final
        yield _ts(obs, rng.normal(), terminated=done and rng.random() < 0.5, truncated=done, final_obs=final)


def test_q_lambda_trace_cut_exactly_on_nongreedy_actions():
    cfg = AgentConfig(obs_shape=(OBS,), discrete=True, action_dim=3, hidden=(16, 16), time_limit=100)
    agent = StreamQ(cfg)
    hp = HParams(eps_start=0.5, eps_end=0.5).as_arrays()
    rng = np.random.default_rng(0)
    state = agent.init(jax.random.PRNGKey(0), jnp.asarray(rng.normal(size=OBS), jnp.float32), hp)
    step = jax.jit(agent.step)
    saw = {"cut_nongreedy": 0, "cut_done": 0, "kept": 0, "random_but_greedy": 0}
    for ts in _random_stream(rng, 300):
        old = state
        state, action = step(old, ts, hp)
        done = bool(ts.terminated | ts.truncated)
        # Independent trace: z ← γλ z + ∇q(s, a), then zero iff done or a was non-greedy.
        grad = jax.grad(lambda p: agent.apply("q", p, old.obs)[0][old.action])(old.params["q"])
        expected = jax.tree_util.tree_map(lambda z, g: 0.99 * 0.8 * z + g, old.opt_state["q"].trace, grad)
        cut = done or bool(old.nongreedy)
        trace = state.opt_state["q"].trace
        if cut:
            assert all(np.all(np.asarray(z) == 0.0) for z in jax.tree_util.tree_leaves(trace))
            saw["cut_done" if done else "cut_nongreedy"] += 1
        else:
            for z, e in zip(jax.tree_util.tree_leaves(trace), jax.tree_util.tree_leaves(expected)):
                np.testing.assert_allclose(z, e, rtol=1e-4, atol=1e-5)
            saw["kept"] += 1
        # The flag is "the action differs from the greedy action", judged by the new params.
        greedy = int(jnp.argmax(agent.apply("q", state.params["q"], state.obs)[0]))
        assert bool(state.nongreedy) == (int(action) != greedy)
        if int(action) == greedy and float(jax.random.uniform(action_key(state.key, state.step))) < 0.5:
            saw["random_but_greedy"] += 1  # explored, drew the greedy action: not a cut
    assert all(v > 0 for v in saw.values()), saw


def test_sarsa_next_action_after_episode_end_comes_from_reset_observation():
    cfg = AgentConfig(obs_shape=(OBS,), discrete=True, action_dim=4, hidden=(16, 16), time_limit=None)
    agent = StreamSARSA(cfg)
    hp = HParams(eps_start=0.0, eps_end=0.0, normalize_obs=0.0).as_arrays()  # greedy, raw obs
    rng = np.random.default_rng(1)
    state = agent.init(jax.random.PRNGKey(3), jnp.asarray(rng.normal(size=OBS), jnp.float32), hp)
    step = jax.jit(agent.step)
    q = lambda params, x: np.asarray(agent.apply("q", params["q"], jnp.asarray(x, jnp.float32))[0])  # noqa: E731
    checked_differ = 0
    for i in range(200):
        final = rng.normal(size=OBS) * 3
        done = i % 4 == 3
        reset = rng.normal(size=OBS) * 3 if done else final
        before = state
        # rewards of both signs, so that the greedy action changes (with a constant positive
        # reward greedy SARSA keeps raising the q of the action it takes and never switches)
        state, action = step(before, _ts(reset, rng.choice([-1.0, 1.0]), terminated=done, final_obs=final), hp)
        if done:
            # a from the reset observation with the updated parameters …
            assert int(action) == int(np.argmax(q(state.params, reset)))
            np.testing.assert_allclose(state.obs, reset, rtol=1e-6)
            # … not the a′ that the terminal observation would have given.
            if int(np.argmax(q(before.params, final))) != int(action):
                checked_differ += 1
        else:
            # a′ chosen at s′ with the pre-update parameters is the action taken.
            assert int(action) == int(np.argmax(q(before.params, final)))
    assert checked_differ > 0


def test_sarsa_bootstraps_from_next_action_and_q_from_max():
    cfg = AgentConfig(obs_shape=(OBS,), discrete=True, action_dim=3, hidden=(16, 16))
    hp = HParams(eps_start=1.0, eps_end=1.0, normalize_obs=0.0, scale_reward=0.0).as_arrays()
    rng = np.random.default_rng(2)
    for cls in (StreamQ, StreamSARSA):
        agent = cls(cfg)
        state = agent.init(jax.random.PRNGKey(0), jnp.asarray(rng.normal(size=OBS), jnp.float32), hp)
        for _ in range(20):
            nxt = rng.normal(size=OBS)
            new, action = agent.step(state, _ts(nxt, 0.5), hp)
            q_s = agent.apply("q", state.params["q"], state.obs)[0][state.action]
            q_next = agent.apply("q", state.params["q"], jnp.asarray(nxt, jnp.float32))[0]
            boot = q_next[action] if cls is StreamSARSA else jnp.max(q_next)
            np.testing.assert_allclose(new.td_error, 0.5 + 0.99 * boot - q_s, rtol=1e-5, atol=1e-6)
            state = new


def _entropy_gaussian(agent, actor, obs):
    mu, std = agent.policy({"actor": actor}, obs)
    return jnp.sum(0.5 * jnp.log(2 * jnp.pi * jnp.e * std**2))


def _entropy_categorical(agent, actor, obs):
    (logits,) = agent.policy({"actor": actor}, obs)
    p = jax.nn.softmax(logits)
    return -jnp.sum(p * jnp.log(p))


@pytest.mark.parametrize("discrete", [False, True])
def test_ac_entropy_is_pushed_up_for_both_signs_of_td_error(discrete):
    cfg = AgentConfig(obs_shape=(OBS,), discrete=discrete, action_dim=3, hidden=(16, 16))
    agent = StreamAC(cfg)
    hp = HParams().as_arrays()
    obs = jnp.asarray(np.random.default_rng(0).normal(size=OBS), jnp.float32)
    state = agent.init(jax.random.PRNGKey(0), obs, hp)
    # Move away from the initial policy (uniform for a categorical: entropy at its maximum).
    flat, unravel = ravel_pytree(state.params["actor"])
    actor = unravel(flat + 0.3 * jax.random.normal(jax.random.PRNGKey(1), flat.shape))
    action = state.action
    entropy = _entropy_categorical if discrete else _entropy_gaussian
    grad_logp = jax.grad(lambda p: agent.log_prob_and_entropy(p, obs, action)[0])(actor)
    grad_h = jax.grad(lambda p: entropy(agent, p, obs))(actor)
    for td_error in (2.0, -2.0):
        g = jax.grad(agent.actor_objective)(actor, obs, action, jnp.float32(td_error), 0.01)
        # Independent: ∇log π + c · sign(δ) · ∇H with the textbook entropy formula.
        expected = jax.tree_util.tree_map(lambda a, b: a + 0.01 * np.sign(td_error) * b, grad_logp, grad_h)
        np.testing.assert_allclose(ravel_pytree(g)[0], ravel_pytree(expected)[0], rtol=1e-4, atol=1e-7)
        # The ObGD step moves along δ·g; its entropy part c·|δ|·∇H raises the entropy.
        moved = jax.tree_util.tree_map(lambda p, a, b: p + 1e-2 * td_error * (a - b), actor, g, grad_logp)
        assert entropy(agent, moved, obs) > entropy(agent, actor, obs)


def test_ac_first_update_matches_obgd_by_hand():
    cfg = AgentConfig(obs_shape=(OBS,), discrete=False, action_dim=2, hidden=(16, 16))
    agent = StreamAC(cfg)
    hp = HParams(normalize_obs=0.0, scale_reward=0.0).as_arrays()
    rng = np.random.default_rng(4)
    s = jnp.asarray(rng.normal(size=OBS), jnp.float32)
    s2 = jnp.asarray(rng.normal(size=OBS), jnp.float32)
    state = agent.init(jax.random.PRNGKey(1), s, hp)
    new, _ = agent.step(state, _ts(s2, 1.5), hp)
    v = lambda p, x: agent.apply("critic", p, x)[0][0]  # noqa: E731
    delta = 1.5 + 0.99 * v(state.params["critic"], s2) - v(state.params["critic"], s)
    np.testing.assert_allclose(new.td_error, delta, rtol=1e-5)
    for name, kappa, grad in (
        ("critic", 2.0, jax.grad(v)(state.params["critic"], s)),
        ("actor", 3.0, jax.grad(agent.actor_objective)(state.params["actor"], s, state.action, delta, 0.01)),
    ):
        z = np.asarray(ravel_pytree(grad)[0], np.float64)  # first step: z = g, over the whole network
        m = 1.0 * kappa * max(abs(float(delta)), 1.0) * np.abs(z).sum()
        alpha = 1.0 / m if m > 1 else 1.0
        np.testing.assert_allclose(
            ravel_pytree(new.params[name])[0],
            np.asarray(ravel_pytree(state.params[name])[0]) + alpha * float(delta) * z,
            rtol=1e-4,
            atol=1e-6,
        )


def test_td_lambda_converges_on_random_walk_with_known_values():
    """5-state random walk (Sutton & Barto, Example 6.2) with γ = 0.9: reward 1 on the
    right exit, 0 on the left; true values from the Bellman linear system."""
    n, gamma = 5, 0.9
    P = np.zeros((n, n))
    r = np.zeros(n)
    for i in range(n):
        if i > 0:
            P[i, i - 1] = 0.5
        if i < n - 1:
            P[i, i + 1] = 0.5
        else:
            r[i] = 0.5
    v_true = np.linalg.solve(np.eye(n) - gamma * P, r)

    cfg = AgentConfig(obs_shape=(n,), discrete=True, action_dim=2, hidden=(32, 32))
    agent = StreamTD(cfg)
    hp = HParams(gamma=gamma, lambda_=0.8, normalize_obs=0.0, scale_reward=0.0).as_arrays()
    onehot = np.eye(n, dtype=np.float32)

    def run(state, key):
        def body(carry, k):
            state, pos = carry
            move = jnp.where(jax.random.bernoulli(k), 1, -1)
            nxt = pos + move
            done = (nxt < 0) | (nxt >= n)
            reward = jnp.where(nxt >= n, 1.0, 0.0)
            start = n // 2
            obs = jnp.asarray(onehot)[jnp.where(done, start, nxt)]
            final = jnp.asarray(onehot)[jnp.clip(nxt, 0, n - 1)]
            state, _ = agent.step(state, TimeStep(obs, reward, done, jnp.bool_(False), final), hp)
            return (state, jnp.where(done, start, nxt)), None

        (state, _), _ = jax.lax.scan(body, (state, jnp.int32(n // 2)), jax.random.split(key, 30_000))
        return state

    state = agent.init(jax.random.PRNGKey(0), jnp.asarray(onehot[n // 2]), hp)
    state = jax.jit(run)(state, jax.random.PRNGKey(1))
    v = np.array([float(agent.value(state.params, jnp.asarray(onehot[i]))) for i in range(n)])
    np.testing.assert_allclose(v, v_true, atol=0.05)


@pytest.mark.parametrize("cls", [StreamQ, StreamSARSA, StreamAC, StreamTD])
@pytest.mark.parametrize("bootstrap_truncated", [0.0, 1.0])
def test_td_error_at_a_truncation_by_hand(cls, bootstrap_truncated):
    """At a truncated (not terminated) episode end, δ = r + γ·v(s′) − v(s) with
    ``--truncation bootstrap`` and r − v(s) without (the paper's default); at a termination
    always r − v(s). v(s′) comes from the final observation, never the reset one."""
    discrete = cls is not StreamAC
    cfg = AgentConfig(obs_shape=(OBS,), discrete=discrete, action_dim=3, hidden=(16, 16),
                      action_low=() if discrete else (-1.0,) * 3, action_high=() if discrete else (1.0,) * 3)
    agent = cls(cfg)
    hp = HParams(gamma=0.9, bootstrap_truncated=bootstrap_truncated, normalize_obs=0.0, scale_reward=0.0,
                 eps_start=0.0, eps_end=0.0).as_arrays()
    rng = np.random.default_rng(7)
    s, final, reset = (jnp.asarray(rng.normal(size=OBS), jnp.float32) for _ in range(3))
    state = agent.init(jax.random.PRNGKey(3), s, hp)
    name = {StreamQ: "q", StreamSARSA: "q", StreamAC: "critic", StreamTD: "v"}[cls]
    out_s = agent.apply(name, state.params[name], s)[0]
    out_final = agent.apply(name, state.params[name], final)[0]
    if name == "q":  # ε = 0: the next action is greedy, so SARSA's q(s′, a′) is the max too
        v_s, v_final = out_s[state.action], jnp.max(out_final)
    else:
        v_s, v_final = out_s[0], out_final[0]
    for terminated, truncated in ((False, True), (True, False)):
        new, _ = agent.step(state, _ts(reset, 2.0, terminated, truncated, final_obs=final), hp)
        boot = 0.9 * float(v_final) if (truncated and bootstrap_truncated) else 0.0
        np.testing.assert_allclose(float(new.td_error), 2.0 + boot - float(v_s), rtol=1e-5, atol=1e-6)
