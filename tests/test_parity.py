"""Differential tests of whole agent steps against an independent float64 NumPy
transcription (``reference_agent.py``), on real environment streams.

streamrl runs through its production path (family resolution, Gymnasium host adapter,
the jitted fleet step of ``HostStepper``) for 1,000 environment steps: episode ends,
resets, truncations and ε-greedy trace cuts included. The float64 reference steps its own
Gymnasium environment with the same seed and streamrl's actions. Before every step it is
given streamrl's state (weights, traces, normaliser statistics, the stored observation);
both then make the same step and everything that step produces is compared: δ, every
weight and trace, the ObGD step sizes, the normalised observation, the time feature
exactly and, for Q(λ), the non-greedy flag. The comparison is one step at a time because
two free-running learners, one in float32 and one in float64, drift apart (rounding is
amplified by the LayerNorm Jacobian near zero variance: measured on CartPole Q, relative
weight differences of 5e-6 after 100 steps, 2e-4 after 200, 3e-2 after 500); a separate
test checks the first 100 free-running steps. Two more streams run AdaptiveObGD with
truncations that bootstrap (episodes cut at 100 steps).

Tolerances: one float32 step reproduces the float64 result to a relative 1e-6 typically;
the worst measured over these streams is ~3e-5 (the normalised observation on the second
sample, where x − μ cancels, and deep trace entries). The tests allow 1e-4, which still
fails by four orders of magnitude on a rule difference: LeakyReLU's derivative at 0
(flax's convention is 1, PyTorch's 0.01) made first-layer weights differ by a relative
0.8-2.2 after the first step of every stream here, and the time feature's first-step
convention is caught by the exact check of τ.
"""

from __future__ import annotations

import gymnasium as gym
import jax
import numpy as np
import pytest

import reference_agent as ref
from streamrl.agents import ALGORITHMS
from streamrl.config import Member, TrainConfig, resolve
from streamrl.envs import make_env, make_envs
from streamrl.engine import HostStepper

RTOL = 1e-4


def _close(mine, theirs, what, t, scale_floor=1e-3):
    scale = max(scale_floor, float(np.max(np.abs(theirs))))
    err = float(np.max(np.abs(np.asarray(mine, np.float64) - theirs))) / scale
    assert err <= RTOL, f"step {t}: {what} differs by a relative {err:.2e}"
    return err


def _close_tree(mine_flax, theirs_pairs, what, t):
    worst = 0.0
    for i, ((w, b), (rw, rb)) in enumerate(zip(ref.pairs_of(mine_flax), theirs_pairs)):
        worst = max(worst, _close(w, rw, f"{what} layer {i} kernel", t), _close(b, rb, f"{what} layer {i} bias", t))
    return worst


def _sync_stream(stream: ref.Stream, norm):
    """Give the reference streamrl's normaliser statistics (not its counts or τ, which the
    reference keeps itself from the episode boundaries)."""
    stream.obs.mean = np.asarray(norm.obs.mean, np.float64)
    stream.obs.m2 = np.asarray(norm.obs.m2, np.float64)
    stream.ret.mean = float(norm.reward.stats.mean)
    stream.ret.m2 = float(norm.reward.stats.m2)
    stream.trace = float(norm.reward.trace)
    assert stream.obs.n == int(norm.obs.count) and stream.ret.n == int(norm.reward.stats.count)


def _sync_net(net_and_opt, params, opt_state):
    net, opt = net_and_opt
    opt.trace = ref.pairs_of(opt_state.trace)
    if opt.adaptive:  # AdaptiveObGD's second moments (its update count the reference keeps)
        opt.second = ref.pairs_of(opt_state.second_moment)
        assert opt.count == int(opt_state.count)
    return ref.from_flax(params, len(net[0]))


# The paper's setting per task, written out independently of streamrl's family table:
# (episode cap passed to gym.make or None for the environment's own, T of the time
# feature, hidden widths).
PAPER = {
    ("q", "CartPole-v1"): (10_000, 10_000, (32, 32)),
    ("q", "Acrobot-v1"): (10_000, 10_000, (32, 32)),
    ("ac", "CartPole-v1"): (10_000, 10_000, (32, 32)),
    ("ac", "Pendulum-v1"): (None, 200, (128, 128)),
    ("ac", "HalfCheetah-v5"): (None, 1000, (128, 128)),
}


def _make(kind, env_id, seed, optimizer="obgd", truncation="terminate", cap=None):
    """streamrl through its production path (family resolution, host adapter, jitted
    fleet step) and the reference on its own Gymnasium environment with the same seed.
    ``cap`` overrides the episode cap (and so T) on both sides."""
    paper_cap, time_limit, hidden = PAPER[(kind, env_id)]
    if cap is not None:
        paper_cap = time_limit = cap
    cap = paper_cap
    cfg = TrainConfig(algo=kind, env=env_id, total_steps=12_000, optimizer=optimizer, truncation=truncation, max_episode_steps=cap)
    resolved = resolve(cfg, make_env(env_id, max_episode_steps=cap).spec)
    assert resolved.agent.hidden == hidden and resolved.agent.time_limit == time_limit  # paper's sizes and T
    agent = ALGORITHMS[kind](resolved.agent)
    envs = make_envs(env_id, [seed], max_episode_steps=cap)
    stepper = HostStepper(agent, [Member(seed, resolved.members[0].hparams)])  # ε over 600 steps
    action = stepper.start(envs.reset())[0]
    state = _unbatch(stepper.state)

    env = gym.make(env_id, **({"max_episode_steps": cap} if cap else {}))
    obs, _ = env.reset(seed=seed)
    box = isinstance(env.action_space, gym.spaces.Box)
    flags = dict(adaptive=optimizer == "adaptive", bootstrap_truncated=truncation == "bootstrap")
    if kind == "q":
        reference = ref.ReferenceQ(state.params["q"], len(hidden), obs.shape, time_limit, **flags)
    else:
        reference = ref.ReferenceAC(state.params["actor"], state.params["critic"], len(hidden), obs.shape, time_limit, not box, **flags)
    reference.reset(obs, action)
    return envs, stepper, state, action, env, box, reference


def _unbatch(state):
    return jax.tree_util.tree_map(lambda x: x[0], state)


def _step_both(envs, stepper, action, env, box, reference):
    """One environment step of both; returns (streamrl state, next action, reference δ,
    whether the episode ended)."""
    actions, _ = stepper.step(envs.step(np.asarray(action)[None]))
    a = np.asarray(action)
    final, reward, terminated, truncated, _ = env.step(np.clip(a, env.action_space.low, env.action_space.high) if box else int(a))
    obs = env.reset()[0] if (terminated or truncated) else final
    td_error = reference.step(final, reward, terminated, truncated, obs, actions[0])
    return _unbatch(stepper.state), actions[0], td_error, bool(terminated or truncated)


CASES = [
    # kind, env, seed, episode ends the 1,000 steps must contain (Acrobot's first
    # episodes outlast them under the 10,000-step cap), options of _make
    pytest.param("q", "CartPole-v1", 0, 10, {}, id="q-cartpole"),
    pytest.param("q", "Acrobot-v1", 1, 0, {}, id="q-acrobot"),
    pytest.param("ac", "CartPole-v1", 2, 10, {}, id="ac-discrete-cartpole"),
    pytest.param("ac", "Pendulum-v1", 3, 5, {}, id="ac-gaussian-pendulum"),
    pytest.param("ac", "HalfCheetah-v5", 4, 1, {}, id="ac-gaussian-halfcheetah"),
    # AdaptiveObGD, and bootstrapping at truncations (episodes cut at 100 steps)
    pytest.param("q", "Acrobot-v1", 5, 9, {"optimizer": "adaptive", "truncation": "bootstrap", "cap": 100}, id="q-acrobot-adaptive-bootstrap"),
    pytest.param("ac", "Pendulum-v1", 6, 9, {"optimizer": "adaptive", "truncation": "bootstrap", "cap": 100}, id="ac-pendulum-adaptive-bootstrap"),
]


@pytest.mark.parametrize("kind, env_id, seed, min_ends, variant", CASES)
def test_every_step_matches_float64_reference(kind, env_id, seed, min_ends, variant):
    if env_id.startswith("HalfCheetah"):
        pytest.importorskip("mujoco")
    envs, stepper, state, action, env, box, reference = _make(kind, env_id, seed, **variant)
    ends = cuts = 0
    for t in range(1000):
        # The reference starts this step from streamrl's state.
        _sync_stream(reference.stream, state.norm)
        reference.s = np.asarray(state.obs, np.float64)
        if kind == "q":
            reference.net = _sync_net((reference.net, reference.opt), state.params["q"], state.opt_state["q"])
            reference.nongreedy = bool(state.nongreedy)
        else:
            reference.actor = _sync_net((reference.actor, reference.actor_opt), state.params["actor"], state.opt_state["actor"])
            reference.critic = _sync_net((reference.critic, reference.critic_opt), state.params["critic"], state.opt_state["critic"])
        cuts += kind == "q" and bool(state.nongreedy)

        state, action, td_error, done = _step_both(envs, stepper, action, env, box, reference)
        ends += done

        assert abs(float(state.td_error) - td_error) <= RTOL * max(1.0, abs(td_error)), (t, float(state.td_error), td_error)
        _close(state.obs, reference.s, "normalised observation", t, scale_floor=1.0)
        # the time feature exactly (float32 represents −0.5 + k/T to ~3e-8)
        assert abs(float(state.obs[-1]) - reference.s[-1]) <= 1e-6, (t, float(state.obs[-1]), reference.s[-1])
        if kind == "q":
            _close_tree(state.params["q"], ref.params_of(reference.net), "q weights", t)
            _close_tree(state.opt_state["q"].trace, reference.opt.trace, "q trace", t)
            _close(state.opt_state["q"].step_size, reference.alpha, "step size", t)
            q = reference.q(reference.s)
            greedy_gap = np.sort(q)[-1] - np.sort(q)[-2]
            if greedy_gap > 1e-5 * max(1.0, np.abs(q).max()):  # not a float32 near-tie
                assert bool(state.nongreedy) == reference.nongreedy, t
        else:
            _close_tree(state.params["actor"], ref.params_of(reference.actor), "actor weights", t)
            _close_tree(state.params["critic"], ref.params_of(reference.critic), "critic weights", t)
            _close_tree(state.opt_state["actor"].trace, reference.actor_opt.trace, "actor trace", t)
            _close(state.opt_state["critic"].step_size, reference.alpha, "critic step size", t)
            _close(state.opt_state["actor"].step_size, reference.actor_alpha, "actor step size", t)
    env.close()
    envs.close()
    assert ends >= min_ends, "the stream must cross episode boundaries"
    if kind == "q":
        assert cuts >= 10, "the stream must contain non-greedy trace cuts"


def test_first_100_steps_free_running_match_float64_reference():
    """No re-synchronisation: 100 steps of CartPole Q(λ) from the same initial weights."""
    envs, stepper, state, action, env, box, reference = _make("q", "CartPole-v1", 0)
    for t in range(100):
        state, action, td_error, _ = _step_both(envs, stepper, action, env, box, reference)
        assert abs(float(state.td_error) - td_error) <= 1e-3 * max(1.0, abs(td_error)), (t, float(state.td_error), td_error)
    worst = _close_tree(state.params["q"], ref.params_of(reference.net), "q weights after 100 steps", 100)
    assert worst <= 1e-4
    env.close()
    envs.close()


def test_reference_backward_pass_matches_finite_differences():
    """The reference's hand-written gradients are themselves checked (central differences,
    float64), so the differential tests compare against a verified computation."""
    rng = np.random.default_rng(0)
    net = ([(rng.normal(size=(5, 7)), rng.normal(size=7) * 0.1), (rng.normal(size=(7, 6)), rng.normal(size=6) * 0.1)],
           [(rng.normal(size=(6, 3)), np.zeros(3)), (rng.normal(size=(6, 3)), np.zeros(3))])
    x = rng.normal(size=5)
    d_heads = [rng.normal(size=3), rng.normal(size=3)]
    heads, cache = ref.forward(net, x)
    grads = ref.backward(net, cache, d_heads)
    f = lambda n: sum(h @ d for h, d in zip(ref.forward(n, x)[0], d_heads))  # noqa: E731
    flat = ref.params_of(net)
    for i, (w, b) in enumerate(flat):
        for arr, g in ((w, grads[i][0]), (b, grads[i][1])):
            for idx in list(np.ndindex(arr.shape))[:12]:
                old = arr[idx]
                arr[idx] = old + 1e-6
                up = f(net)
                arr[idx] = old - 1e-6
                down = f(net)
                arr[idx] = old
                assert abs((up - down) / 2e-6 - g[idx]) <= 1e-5 * max(1.0, abs(g[idx])), (i, idx)
