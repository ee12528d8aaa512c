"""`streamrl eval`: the final agent state kept in the run directory, evaluated greedily with
frozen normalisers, and the videos it writes."""

from __future__ import annotations

import json
import shutil

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from streamrl import checkpoint
from streamrl.agents import ALGORITHMS
from streamrl.cli import main
from streamrl.config import TrainConfig, resolve
from streamrl.envs.gym import make_env
from streamrl.errors import CheckpointError, ConfigError
from streamrl.evaluate import EVAL_SEED_OFFSET, evaluate
from streamrl.run import train


@pytest.fixture(scope="module")
def minatar_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    train(TrainConfig(algo="q", env="MinAtar/Breakout-v1", total_steps=1500, num_seeds=2, run_dir=run, progress=False))
    return run


def _restored(run):
    cfg = TrainConfig(algo="q", env="MinAtar/Breakout-v1", total_steps=1500, num_seeds=2, run_dir=run, progress=False)
    spec = make_env(cfg.env).spec
    resolved = resolve(cfg, spec)
    agent = ALGORITHMS["q"](resolved.agent)
    state, meta = checkpoint.restore_fleet(run, cfg, resolved, agent)
    return agent, state, meta


def test_run_directory_keeps_the_final_agent_state(minatar_run):
    agent, state, meta = _restored(minatar_run)
    assert meta["step"] == 1500 and meta["algo"] == "q" and meta["num_agents"] == 2
    np.testing.assert_array_equal(state.step, [1500, 1500])
    assert state.params["q"]["params"]["Dense_0"]["kernel"].shape == (2, 1024, 128)


def test_eval_replays_the_greedy_policy_with_frozen_normalisers(minatar_run):
    """The evaluation equals an independent loop: NumPy normalisation with the final
    statistics (never updated), argmax of q, the environment seeded as documented."""
    out = evaluate(minatar_run, episodes=2, agents=(1,))
    agent, state, _ = _restored(minatar_run)
    s = jax.tree_util.tree_map(lambda x: np.asarray(x[1]), state)
    mean, var = s.norm.obs.mean, s.norm.obs.m2 / np.maximum(s.norm.obs.count - 1, 1)
    env = make_env("MinAtar/Breakout-v1", seed=1 + EVAL_SEED_OFFSET)
    obs, episodes = env.reset(), []
    while len(episodes) < 2:
        x = ((obs - mean) / np.sqrt(var + 1e-8)).astype(np.float32)
        q = agent.apply("q", s.params["q"], jnp.asarray(x))[0]
        ts, episode = env.step(int(np.argmax(q)))
        obs = ts.obs
        if episode is not None:
            episodes.append({"episodic_return": episode[0], "length": episode[1]})
    assert out["agents"][0]["agent"] == 1 and out["agents"][0]["episodes"] == episodes
    written = json.loads((minatar_run / "eval.json").read_text())
    assert written["agents"][0]["episodes"] == episodes
    # what eval restores: the newest checkpoint, the run's final state (step 1,500)
    assert out["checkpoint_step"] == written["checkpoint_step"] == checkpoint.latest_step(minatar_run) == 1500


def test_eval_restores_the_newest_checkpoint_not_an_older_one(tmp_path):
    """With two checkpoints kept, eval uses the newest: its episodes equal an independent
    replay of the newest state's policy, and differ from the older state's."""
    run = tmp_path / "two"
    train(TrainConfig(algo="q", env="CartPole-v1", total_steps=4000, checkpoint_every=2000, run_dir=run, progress=False))
    cfg = TrainConfig(algo="q", env="CartPole-v1", total_steps=4000, checkpoint_every=2000, run_dir=run, progress=False)
    resolved = resolve(cfg, make_env(cfg.env).spec)
    agent = ALGORITHMS["q"](resolved.agent)
    out = evaluate(run, episodes=3)
    assert out["checkpoint_step"] == 4000

    def replay(step):
        state, _ = checkpoint.restore_fleet(run, cfg, resolved, agent, step=step)
        s = jax.tree_util.tree_map(lambda x: np.asarray(x[0]), state)
        mean, var = s.norm.obs.mean, s.norm.obs.m2 / np.maximum(s.norm.obs.count - 1, 1)
        env = make_env(cfg.env, seed=EVAL_SEED_OFFSET)
        obs, lengths, t = env.reset(), [], 0
        while len(lengths) < 3:
            x = np.append((obs - mean) / np.sqrt(var + 1e-8), -0.5 + max(t - 1, 0) / 10_000).astype(np.float32)
            ts, episode = env.step(int(np.argmax(agent.apply("q", s.params["q"], jnp.asarray(x))[0])))
            obs, t = ts.obs, 0 if ts.new_episode else t + 1
            if episode is not None:
                lengths.append(episode[1])
        return lengths

    assert [e["length"] for e in out["agents"][0]["episodes"]] == replay(4000) != replay(2000)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_eval_writes_a_playable_video_of_the_first_episode(minatar_run, tmp_path, suffix):
    path = tmp_path / f"agent0{suffix}"
    out = evaluate(minatar_run, episodes=1, agents=(0,), video=True, video_file=path)
    assert out["video"] == str(path)
    # (list() would ask the FFMPEG reader for its length, which it reports as inf)
    frames = imageio.mimread(path) if suffix == ".gif" else [frame for frame in imageio.get_reader(path)]
    assert len(frames) == out["agents"][0]["episodes"][0]["length"] + 1  # the reset frame and one per step
    assert frames[0].shape[:2] == (160, 160) and frames[0].dtype == np.uint8  # 10×10 scaled ×16


def test_eval_cli_prints_returns_and_default_video_path(minatar_run, capsys):
    assert main(["eval", str(minatar_run), "--episodes", "1", "--video"]) == 0
    out = capsys.readouterr().out
    assert "agent 0 (seed 0): mean return" in out and "agent 1 (seed 1)" in out
    assert (minatar_run / "videos" / "eval_agent0.mp4").is_file()


def test_eval_refusals(minatar_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match="no config.json"):
        evaluate(tmp_path)
    with pytest.raises(ConfigError, match="not an agent of this run"):
        evaluate(minatar_run, agents=(5,))
    with pytest.raises(ConfigError, match=".mp4 or .gif"):
        evaluate(minatar_run, episodes=1, video=True, video_file=tmp_path / "v.avi")
    broken = tmp_path / "broken"
    shutil.copytree(minatar_run, broken)
    shutil.rmtree(broken / "checkpoints")
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        evaluate(broken)
    # another network than the checkpoint's
    config = json.loads((minatar_run / "config.json").read_text())
    config["options"]["hidden"] = [64]
    shutil.copytree(minatar_run / "checkpoints", broken / "checkpoints")
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="belongs to another run: its agent"):
        evaluate(broken)
    assert main(["eval", str(broken)]) == 2
    assert capsys.readouterr().err.startswith("error: checkpoint")


def test_td_has_no_policy_to_evaluate(tmp_path):
    run = train(TrainConfig(algo="td", env="CartPole-v1", total_steps=300, run_dir=tmp_path / "td", progress=False))
    with pytest.raises(ConfigError, match="no policy to evaluate"):
        evaluate(run)


def test_eval_cuts_endless_episodes_of_environments_without_a_time_limit(minatar_run, monkeypatch):
    import streamrl.evaluate as ev

    monkeypatch.setattr(ev, "EVAL_EPISODE_CAP", 3)  # MinAtar has no time limit of its own
    out = ev.evaluate(minatar_run, episodes=2, agents=(0,))
    assert [e["length"] for e in out["agents"][0]["episodes"]] == [3, 3]
    assert all(e["cut"] for e in out["agents"][0]["episodes"])
