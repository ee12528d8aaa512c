"""`streamrl barrier` (issue 14, part 1): variants with their switches, the same seeds, one
directory with figures and a table; an ablation fleet member learns as the single run."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from streamrl import checkpoint
from streamrl.agents import ALGORITHMS
from streamrl.cli import main
from streamrl.config import TrainConfig, load_run_config, resolve
from streamrl.report import load_scores
from streamrl.run import train


def _params(run):
    cfg, recorded = load_run_config(run)
    from streamrl.types import EnvSpec

    spec = EnvSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded["env_spec"].items()})
    resolved = resolve(cfg, spec)
    states, _ = checkpoint.restore_fleet(run, cfg, resolved, ALGORITHMS[cfg.algo](resolved.agent))
    return states.params


def test_barrier_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    out = tmp_path / "bar"
    argv = ["barrier", "q", "--env", "CartPole-v1", "--total-steps", "2000", "--num-seeds", "2", "--run-dir", str(out),
            "--variants", "stream-x", "no-layer-norm", "classic-adam", "dqn1", "--reps", "100", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| classic-adam | optimizer=adam, lr=0.001, layer-norm=False, sparsity=0.0" in printed
    for name in ("barrier.md", "barrier.json", "barrier.png", "curves.png"):
        assert (out / name).stat().st_size > 0
    table = json.loads((out / "barrier.json").read_text())
    assert list(table["variants"]) == ["stream-x", "no-layer-norm", "classic-adam", "dqn1"] and table["seeds"] == 2
    assert load_run_config(out / "dqn1")[0].algo == "dqn1"
    for name, v in table["variants"].items():
        cfg, recorded = load_run_config(out / name)
        assert cfg.num_seeds == 2 and cfg.seed == 0 and cfg.total_steps == 2000  # the same seeds and budget
        assert recorded["agent"]["layer_norm"] is (name == "stream-x")
        scores = {str(r["seed"]): r["score"] for r in load_scores([out / name])}
        assert v["seed_scores"] == pytest.approx(scores)
        assert v["IQM"]["ci95"][0] <= v["IQM"]["point"] <= v["IQM"]["ci95"][1]
    # Run again: every variant is finished, nothing is trained again.
    before = {p: p.stat().st_mtime for p in out.glob("*/episodes.csv")}
    assert main(argv) == 0
    assert before == {p: p.stat().st_mtime for p in out.glob("*/episodes.csv")}


def test_an_ablation_fleet_member_learns_as_the_single_run(tmp_path):
    flags = dict(algo="q", total_steps=1500, checkpoint_every=0, progress=False, tensorboard=False, layer_norm=False,
                 sparsity=0.0, optimizer="adam", lr=(1e-3,))
    train(TrainConfig(num_seeds=2, run_dir=tmp_path / "fleet", **flags))
    train(TrainConfig(seed=1, run_dir=tmp_path / "single", **flags))
    fleet, single = _params(tmp_path / "fleet"), _params(tmp_path / "single")
    for x, y in zip(jax.tree_util.tree_leaves(fleet), jax.tree_util.tree_leaves(single)):
        np.testing.assert_allclose(np.asarray(x)[1], np.asarray(y)[0], rtol=1e-5, atol=1e-6)


def test_barrier_refuses_td(tmp_path, capsys):
    assert main(["barrier", "td", "--run-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: streamrl barrier compares returns") and "\n" not in err


def test_a_diverging_variant_is_a_result_not_an_error(tmp_path, capsys):
    # SGD on the trace with a step size of 1e6 diverges within a few steps: the comparison
    # still finishes, and the variant scores 0, the paper's convention for a diverged run.
    out = tmp_path / "bar"
    argv = ["barrier", "q", "--env", "CartPole-v1", "--total-steps", "600", "--num-seeds", "2", "--run-dir", str(out),
            "--variants", "stream-x", "sgd", "--classic-lr", "1e6", "--reps", "50", "--no-progress"]
    assert main(argv) == 0
    table = json.loads((out / "barrier.json").read_text())
    assert list(table["variants"]) == ["stream-x", "sgd"]
    sgd = table["variants"]["sgd"]
    assert "non-finite at step" in sgd["diverged"] and sgd["seed_scores"] == {"0": 0.0, "1": 0.0}
    assert sgd["IQM"] == {"point": 0.0, "ci95": [0.0, 0.0]} and table["variants"]["stream-x"]["diverged"] is None
    assert json.loads((out / "sgd" / "summary.json").read_text())["status"] == "failed"
    assert "| sgd | optimizer=sgd, lr=1000000.0 | 0.0 [0.0, 0.0]" in (out / "barrier.md").read_text()
    # Run again: the diverged variant is not trained again.
    before = (out / "sgd" / "summary.json").stat().st_mtime
    assert main(argv) == 0
    assert (out / "sgd" / "summary.json").stat().st_mtime == before
