"""streamrl.Agent, the online agent for loops streamrl does not own (issue 13): it learns
exactly as `streamrl train` does (same parameters, same episodes), saves run directories
the CLI reads, loads them back, and refuses misuse with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import streamrl
from streamrl import checkpoint
from streamrl.agents import ALGORITHMS
from streamrl.cli import main
from streamrl.config import TrainConfig, load_run_config, resolve
from streamrl.envs.gym import make_env
from streamrl.errors import ConfigError, NonFiniteError, StreamRLError
from streamrl.run import train

STEPS = 400


def _trained(tmp_path, algo: str, env_id: str, num_seeds: int = 1):
    run = tmp_path / "cli"
    train(TrainConfig(algo=algo, env=env_id, num_seeds=num_seeds, total_steps=STEPS, checkpoint_every=0,
                      run_dir=run, progress=False, tensorboard=False))
    cfg, recorded = load_run_config(run)
    spec = streamrl.Agent.load(run).spec
    resolved = resolve(cfg, spec)
    states, _ = checkpoint.restore_fleet(run, cfg, resolved, ALGORITHMS[algo](resolved.agent))
    returns = [float(line.split(",")[3]) for line in (run / "episodes.csv").read_text().splitlines()[1:]]
    return states, returns


def _drive(agent, envs, steps: int, same_call: bool):
    """Drive ``agent`` on streamrl's own Gymnasium adapters (what the CLI's host driver
    steps), the user's way: s′ to step(), the next episode's first observation to reset()
    (or, ``same_call``, to step(reset_obs=…))."""
    batched = len(envs) > 1
    obs = np.stack([e.reset() for e in envs])
    actions = agent.reset(obs if batched else obs[0])
    returns = []
    for _ in range(steps):
        acts = np.asarray(actions).reshape(len(envs), -1)
        out = [e.step(a if not e.spec.discrete else int(a[0])) for e, a in zip(envs, acts)]
        ts = [t for t, _ in out]
        returns += [ep[0] for _, ep in out if ep is not None]
        pick = lambda f: np.stack([np.asarray(getattr(t, f)) for t in ts])  # noqa: E731
        reward, final, term, trunc, nxt = pick("reward"), pick("final_obs"), pick("terminated"), pick("truncated"), pick("obs")
        if not batched:
            reward, final, term, trunc, nxt = reward[0], final[0], bool(term[0]), bool(trunc[0]), nxt[0]
        done = np.any(term | trunc)
        if same_call or batched:
            actions = agent.step(reward, final, term, trunc, reset_obs=nxt if done else None)
        else:
            actions = agent.step(reward, final, term, trunc)
            if done:
                assert actions is None
                actions = agent.reset(nxt)
    return returns


@pytest.mark.parametrize("same_call", [False, True], ids=["reset-after-done", "reset_obs"])
def test_the_online_agent_learns_exactly_as_streamrl_train(tmp_path, same_call):
    states, cli_returns = _trained(tmp_path, "q", "CartPole-v1")
    agent = streamrl.Agent.create("q", env_id="CartPole-v1", seed=0, total_steps=STEPS)  # ε decays over the run, as in train
    returns = _drive(agent, [make_env("CartPole-v1", 0)], STEPS, same_call)
    assert returns == cli_returns and len(returns) > 5
    got = agent._stepper.state
    import jax

    leaves_cli, leaves_api = jax.tree_util.tree_leaves(states.params), jax.tree_util.tree_leaves(got.params)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_cli, leaves_api))
    assert int(np.asarray(got.step)[0]) == STEPS


def test_a_fleet_of_online_agents_learns_as_a_cli_fleet(tmp_path):
    import jax

    states, cli_returns = _trained(tmp_path, "ac", "Pendulum-v1", num_seeds=3)
    agent = streamrl.Agent.create("ac", env_id="Pendulum-v1", num_agents=3)
    _drive(agent, [make_env("Pendulum-v1", s) for s in range(3)], STEPS, same_call=True)
    for x, y in zip(jax.tree_util.tree_leaves(states.params), jax.tree_util.tree_leaves(agent._stepper.state.params)):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_an_agent_from_spaces_learns_cartpole(tmp_path):
    """The README's loop: spaces in, actions out, plain Gymnasium; learning within 20k steps
    (threshold: every one of seeds 0-3 reached an episode ≥ 150 by 20k steps, measured)."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    agent = streamrl.Agent.create("q", env.observation_space, env.action_space, seed=0, time_limit=500)
    obs, _ = env.reset(seed=0)
    action, total, best = agent.reset(obs), 0.0, 0.0
    for _ in range(20_000):
        obs, reward, terminated, truncated, _ = env.step(action)
        total += reward
        action = agent.step(reward, obs, terminated, truncated)
        if terminated or truncated:
            best, total = max(best, total), 0.0
            action = agent.reset(env.reset()[0])
    assert best >= 150
    assert isinstance(agent.act(obs), int) and agent.act(obs) in (0, 1)


def test_save_load_and_the_cli_read_an_online_agent(tmp_path, capsys):
    agent = streamrl.Agent.create("ac", env_id="Pendulum-v1", seed=2, hidden=(32, 32))
    returns = _drive(agent, [make_env("Pendulum-v1", 2)], 450, same_call=True)
    run = agent.save(tmp_path / "agent")
    rows = [line.split(",") for line in (run / "episodes.csv").read_text().splitlines()[1:]]
    assert len(returns) == 2 and [float(r[3]) for r in rows] == pytest.approx(returns) and [int(r[2]) for r in rows] == [200, 400]
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert main(["eval", str(run), "--episodes", "1"]) == 0
    assert json.loads((run / "eval.json").read_text())["agents"][0]["seed"] == 2
    loaded = streamrl.Agent.load(run)
    import jax

    for x, y in zip(jax.tree_util.tree_leaves(agent._stepper.state.params), jax.tree_util.tree_leaves(loaded._loaded.params)):
        assert np.array_equal(np.asarray(x)[None] if np.ndim(x) == np.ndim(y) - 1 else np.asarray(x), np.asarray(y))
    obs = make_env("Pendulum-v1", 5).reset()
    action = loaded.reset(obs)
    assert action.shape == (1,) and action.dtype == np.float32 and -2.0 <= action[0] <= 2.0  # clipped to Pendulum's bounds
    assert main(["train", "--resume", str(run), "--total-steps", "700", "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 700


def test_predict_and_a_frozen_agent(tmp_path):
    agent = streamrl.Agent.create("td", env_id="CartPole-v1")
    _drive(agent, [make_env("CartPole-v1", 0)], 200, same_call=False)
    obs = make_env("CartPole-v1", 1).reset()
    v = agent.predict(obs)
    assert isinstance(v, float) and np.isfinite(v)
    frozen = streamrl.Agent.load(agent.save(tmp_path / "td"), learn=False)
    with pytest.raises(ConfigError, match="predict\\(\\) is for td and ac"):
        streamrl.Agent.create("q", env_id="CartPole-v1").predict(obs)
    assert frozen.reset(obs) is None  # TD has no policy: a frozen one only predicts
    before = frozen._stepper.state.params
    with pytest.raises(ConfigError, match="use predict"):
        frozen.step(1.0, obs, False, False)
    assert np.isfinite(frozen.predict(obs))
    import jax

    assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(frozen._stepper.state.params)))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: streamrl.Agent.create("q", env_id="CartPole-v1", lamda=0.5), ConfigError, "did you mean lambda_"),
        (lambda: streamrl.Agent.create("q", env_id="CartPole-v1", lambda_=2.0), StreamRLError, "--lambda must be in [0, 1]"),
        (lambda: streamrl.Agent.create("q", env_id="CartPol-v1"), StreamRLError, "CartPole-v1"),
        (lambda: streamrl.Agent.create("q"), ConfigError, "give observation_space and action_space, or env_id"),
        (lambda: streamrl.Agent.create("q", env_id="Pendulum-v1"), StreamRLError, "Discrete"),
    ],
)
def test_bad_input_to_create_is_one_line(call, error, match):
    with pytest.raises(error, match=match.replace("[", "\\[").replace("]", "\\]")) as info:
        call()
    assert "\n" not in str(info.value)


def test_misuse_of_the_loop_is_one_line():
    agent = streamrl.Agent.create("q", env_id="CartPole-v1", num_agents=2)
    obs = np.zeros((2, 4), np.float32)
    with pytest.raises(ConfigError, match="before Agent.reset"):
        agent.step([1.0, 1.0], obs, [False, False], [False, False])
    agent.reset(obs)
    with pytest.raises(ConfigError, match="takes \\(2, 4\\)"):
        agent.step([1.0, 1.0], np.zeros((3, 4)), [False, False], [False, False])
    with pytest.raises(ConfigError, match="pass reset_obs"):
        agent.step([1.0, 1.0], obs, [True, False], [False, False])
    with pytest.raises(NonFiniteError, match="non-finite observation"):
        agent.step([1.0, 1.0], np.full((2, 4), np.nan), [False, False], [False, False])
    with pytest.raises(NonFiniteError, match="non-finite reward"):
        agent.step([np.inf, 1.0], obs, [False, False], [False, False])
    assert agent.step([1.0, 1.0], obs, [False, False], [False, False]).shape == (2,)  # nothing was lost


def test_a_frozen_agent_changes_nothing_and_a_loaded_agent_keeps_its_history(tmp_path):
    import jax

    agent = streamrl.Agent.create("ac", env_id="Pendulum-v1", seed=1)
    returns = _drive(agent, [make_env("Pendulum-v1", 1)], 250, same_call=False)
    run = agent.save(tmp_path / "a")
    frozen = streamrl.Agent.load(run, learn=False)
    env = make_env("Pendulum-v1", 9)
    frozen.reset(env.reset())
    snapshot = [np.asarray(x).copy() for x in jax.tree_util.tree_leaves(frozen._stepper.state)]
    for _ in range(3):  # episodes and steps: the normalisers stay frozen, nothing is recorded
        frozen.reset(env.reset())
        for _ in range(5):
            frozen.step(-1.0, env.reset(), False, False)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(snapshot, jax.tree_util.tree_leaves(frozen._stepper.state)))
    assert frozen.episodes == agent.episodes  # the run's history, nothing added
    # A loaded learning agent goes on from the checkpoint's step and keeps the run's episodes.
    again = streamrl.Agent.load(run)
    _drive(again, [make_env("Pendulum-v1", 4)], 200, same_call=True)
    ends = [e[1] for e in again.episodes]
    assert ends[: len(returns)] == [e[1] for e in agent.episodes] and ends[len(returns)] > 250
    # A step after an ended episode, before reset, would learn out of order: refused.
    single = streamrl.Agent.create("q", env_id="CartPole-v1")
    single.reset(np.zeros(4))
    assert single.step(1.0, np.zeros(4), True, False) is None
    with pytest.raises(ConfigError, match="call reset"):
        single.step(1.0, np.zeros(4), False, False)
