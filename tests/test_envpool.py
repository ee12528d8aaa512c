"""EnvPool feeds a fleet without any agent learning from EnvPool's inserted reset step."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

pytest.importorskip("envpool")

from streamrl.agents import ALGORITHMS  # noqa: E402
from streamrl.cli import main  # noqa: E402
from streamrl.config import TrainConfig, resolve  # noqa: E402
from streamrl.envs.pool import make_envpool  # noqa: E402
from streamrl.engine import HostStepper  # noqa: E402


def test_adapter_hides_the_reset_step_and_holds_the_final_transition():
    envs = make_envpool("envpool:CartPole-v1", [0, 1, 2, 3], max_episode_steps=40)
    envs.reset()
    rng = np.random.default_rng(0)
    prev_active = np.ones(4, bool)
    lengths = np.zeros(4, int)
    ended = {"terminated": 0, "truncated": 0}
    for _ in range(600):
        obs, rewards, term, trunc, final_obs, _, active, episodes = envs.step(rng.integers(0, 2, 4))
        # every transition an agent learns from is a real CartPole step: reward 1
        assert (rewards[active] == 1.0).all()
        lengths[active] += 1
        for i, ret, length in episodes:
            assert not active[i] and ret == length and length <= 40
        for i in np.flatnonzero(~prev_active):  # the call after an episode end: EnvPool's reset step
            assert active[i] and (term[i] or trunc[i])  # the held transition is delivered now …
            assert not np.allclose(obs[i], final_obs[i])  # … with the reset observation to act on
            ended["terminated" if term[i] else "truncated"] += 1
        assert not (term[active & prev_active] | trunc[active & prev_active]).any()
        prev_active = active
    assert ended["terminated"] > 0 and ended["truncated"] > 0, ended


def test_no_agent_learns_from_the_inserted_reset_step():
    cfg = TrainConfig(algo="td", env="envpool:CartPole-v1", total_steps=1000, num_seeds=3, scale_reward=False, max_episode_steps=30)
    envs = make_envpool(cfg.env, [0, 1, 2], max_episode_steps=30)
    resolved = resolve(cfg, envs.spec)
    stepper = HostStepper(ALGORITHMS["td"](resolved.agent), resolved.members, pausing=envs.masks_agents)
    actions = stepper.start(envs.reset())
    learned = np.zeros(3, int)
    waited = 0
    for _ in range(300):
        before_actions = np.array(actions)
        before = jax.tree_util.tree_map(np.asarray, stepper.state.params)
        batch = envs.step(actions)
        active = batch.active
        assert (batch.reward[active] == 1.0).all()  # what the agents may learn from: real steps only
        actions, _ = stepper.step(batch)
        learned += active
        after = stepper.state.params
        for i in np.flatnonzero(~active):  # a waiting agent neither learns nor acts
            waited += 1
            assert actions[i] == before_actions[i]
            for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
                np.testing.assert_array_equal(a[i], np.asarray(b)[i])
    # each agent made exactly one update per real transition, none on EnvPool's reset steps
    np.testing.assert_array_equal(np.asarray(stepper.state.step), learned)
    assert (np.asarray(stepper.state.norm.reward.stats.count) == learned).all()
    assert waited > 10


def test_envpool_fleet_trains_from_the_cli(tmp_path):
    assert main(["train", "q", "--env", "envpool:CartPole-v1", "--total-steps", "2000", "--num-seeds", "2",
                 "--run-dir", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["agents"] == 2 and summary["episodes"] > 10


def test_unknown_envpool_task(capsys):
    assert main(["train", "--env", "envpool:CartPol-v1"]) == 2
    assert "did you mean 'envpool:CartPole-v1'" in capsys.readouterr().err
