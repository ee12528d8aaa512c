"""Fleets: agent i of a vmapped fleet learns exactly as a single run with the same seed and
hyper-parameters would (the fleet invariant of the README, "Fleets"), and the CLI's grids and records."""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pytest

from streamrl.agents import ALGORITHMS
from streamrl.cli import main
from streamrl.config import Member, TrainConfig, resolve
from streamrl.envs import make_env, make_envs
from streamrl.engine import HostStepper

STEPS = 300


@pytest.mark.parametrize("algo, env_id", [("q", "CartPole-v1"), ("sarsa", "CartPole-v1"), ("ac", "CartPole-v1"), ("td", "CartPole-v1"), ("ac", "Pendulum-v1")])
def test_fleet_member_learns_exactly_as_a_single_run(algo, env_id):
    cfg = TrainConfig(algo=algo, env=env_id, total_steps=1000, seed=5, num_seeds=2, lambda_=(0.0, 0.8), kappa=(2.0, 3.0))
    resolved = resolve(cfg, make_env(env_id).spec)
    members = resolved.members
    assert len(members) == 8 and sorted({m.seed for m in members}) == [5, 6]
    chosen = [members[0], members[3], members[6]]  # different seeds and settings
    agent = ALGORITHMS[algo](resolved.agent)

    fleet_envs = make_envs(env_id, [m.seed for m in chosen])
    fleet = HostStepper(agent, chosen)
    fleet_actions = [fleet.start(fleet_envs.reset())]
    singles = [(make_envs(env_id, [m.seed]), HostStepper(agent, [m])) for m in chosen]
    single_actions = [[s.start(e.reset())] for e, s in singles]
    for _ in range(STEPS):
        fleet_actions.append(fleet.step(fleet_envs.step(fleet_actions[-1]))[0])
        for (env, stepper), actions in zip(singles, single_actions):
            actions.append(stepper.step(env.step(actions[-1]))[0])
    fleet_state = fleet.state
    for i, ((_, stepper), actions) in enumerate(zip(singles, single_actions)):
        # same actions at every step (hence the same stream) …
        np.testing.assert_allclose(np.stack([a[i] for a in fleet_actions]), np.concatenate(actions), rtol=1e-5, atol=1e-5)
        # … and the same learner state, to float tolerance
        single_state = stepper.state
        for a, b in zip(jax.tree_util.tree_leaves(fleet_state.params), jax.tree_util.tree_leaves(single_state.params)):
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b)[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(fleet_state.norm.obs.mean)[i], np.asarray(single_state.norm.obs.mean)[0], rtol=1e-5, atol=1e-6)
        assert int(fleet_state.step[i]) == int(single_state.step[0]) == STEPS


def test_grid_and_seeds_on_the_cli_write_grouped_records(tmp_path):
    assert main(["train", "q", "--total-steps", "3000", "--num-seeds", "2", "--lambda", "0.0,0.8", "--kappa", "1,2",
                 "--run-dir", str(tmp_path), "--no-progress"]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_agents"] == 8 and config["swept"] == ["lambda_", "kappa"]
    settings = {(m["lambda_"], m["kappa"], m["seed"]) for m in config["members"]}
    assert settings == {(lam, k, s) for lam in (0.0, 0.8) for k in (1.0, 2.0) for s in (0, 1)}
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert list(episodes.columns) == ["agent", "seed", "end_step", "episodic_return", "length", "lambda_", "kappa"]
    assert set(episodes.agent) == set(range(8))
    for m in config["members"]:  # each agent's rows carry its own seed and settings
        rows = episodes[episodes.agent == m["agent"]]
        assert (rows.seed == m["seed"]).all() and (rows.lambda_ == m["lambda_"]).all() and (rows.kappa == m["kappa"]).all()
        assert rows.length.sum() <= 3000 and rows.end_step.is_monotonic_increasing
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["agents"] == 8 and summary["agent_sps"] == pytest.approx(8 * summary["sps"], rel=1e-3)
    assert len(summary["groups"]) == 4 and all(g["seeds"] == [0, 1] for g in summary["groups"])
    # a group's score is the mean over its seeds of each agent's last-10% mean
    g = summary["groups"][0]
    idx = [m["agent"] for m in config["members"] if (m["lambda_"], m["kappa"]) == (g["lambda_"], g["kappa"])]
    tails = []
    for i in idx:
        r = episodes[episodes.agent == i].episodic_return.to_numpy()
        tails.append(r[-max(1, -(-len(r) // 10)):].mean())
    assert g["mean_return_last10pct"] == pytest.approx(np.mean(tails))
    png = tmp_path / "c.png"
    assert main(["plot", str(tmp_path), "--out", str(png)]) == 0 and png.stat().st_size > 5000


def test_bad_grid_values_are_refused(capsys, tmp_path):
    assert main(["train", "--lambda", "0.5,1.5", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--lambda must be in [0, 1], got 1.5" in capsys.readouterr().err
    assert main(["train", "--num-seeds", "0", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--num-seeds must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("separate_from", [None, 1, 64])
def test_flat_codec_round_trips_bit_exactly(separate_from):
    """The host driver's state packing: small leaves in one uint32 buffer, weight-sized
    leaves separate; every bit survives (NaN payloads, -0.0, bools, int32 extremes)."""
    import jax.numpy as jnp
    import numpy as np

    from streamrl.engine import FlatCodec

    rng = np.random.default_rng(0)
    weird = np.array([np.nan, -0.0, np.inf, 1e-45], np.float32)
    tree = {
        "w": jnp.asarray(rng.standard_normal((16, 8)), jnp.float32),
        "b": jnp.asarray(weird),
        "n": jnp.asarray([np.iinfo(np.int32).min, 7], jnp.int32),
        "flag": jnp.asarray([True, False, True]),
        "key": jnp.asarray([1, 2**32 - 1], jnp.uint32),
    }
    codec = FlatCodec(tree, separate_from=separate_from)
    packed = codec.pack(tree)
    if separate_from == 64:
        flat, big = packed
        assert len(big) == 1 and big[0].shape == (16, 8) and flat.dtype == jnp.uint32
    back = codec.unpack(packed)
    for name in tree:
        assert back[name].dtype == tree[name].dtype
        np.testing.assert_array_equal(np.asarray(back[name]).view(np.uint8), np.asarray(tree[name]).view(np.uint8))
