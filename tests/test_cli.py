"""The command line end to end: run directories, plots, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from streamrl.cli import main

TESTS = Path(__file__).parent


def _cli(*args, env_extra=None, code=None):
    env = dict(os.environ, PYTHONPATH=str(TESTS), **(env_extra or {}))
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "streamrl", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


START_LINES = ("run directory: ", "compiling the step of ")
"""What `streamrl train` says at the start of a run (on stderr, beside the progress bar)."""


def _one_line_error(capsys, argv, status=2):
    assert main(argv) == status
    err = "\n".join(line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith(START_LINES))
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_train_writes_a_valid_run_directory_and_plot(tmp_path):
    run = tmp_path / "run"
    out = _cli("train", "q", "--env", "CartPole-v1", "--total-steps", "3000", "--seed", "3",
               "--run-dir", str(run), "--lambda", "0.5", "--no-progress")
    assert out.returncode == 0, out.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["algo"] == "q" and config["env"] == "CartPole-v1" and config["seed"] == 3
    assert config["hparams"]["lambda_"] == 0.5 and config["hparams"]["kappa"] == 2.0
    assert config["total_steps"] == 3000
    assert config["agent"]["hidden"] == [32, 32] and config["agent"]["time_limit"] == 10_000
    assert config["versions"]["jax"] and config["versions"]["streamrl"]
    assert "git_commit" in config
    episodes = pd.read_csv(run / "episodes.csv")
    assert list(episodes.columns) == ["agent", "seed", "end_step", "episodic_return", "length"]
    assert len(episodes) > 10 and (episodes.seed == 3).all()
    # end steps are cumulative lengths: each episode ends where the previous one did + its length
    assert (episodes.end_step.diff().dropna() == episodes.length.iloc[1:].to_numpy()).all()
    assert (episodes.episodic_return == episodes.length).all()  # CartPole: +1 per step
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 3000
    assert summary["episodes"] == len(episodes) and summary["sps"] > 0
    tail = episodes.episodic_return.iloc[-max(1, -(-len(episodes) // 10)):]
    assert summary["mean_return_last10pct"] == pytest.approx(tail.mean())

    png = tmp_path / "curve.png"
    plot = _cli("plot", str(run), "--out", str(png))
    assert plot.returncode == 0, plot.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.parametrize("algo", ["ac", "sarsa", "td"])
def test_each_algorithm_runs_from_the_cli(tmp_path, algo, capsys):
    assert main(["train", algo, "--total-steps", "600", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 600 and summary["status"] == "completed"


def test_train_on_mujoco_box_actions(tmp_path):
    pytest.importorskip("mujoco")
    assert main(["train", "ac", "--env", "HalfCheetah-v5", "--total-steps", "1200", "--run-dir", str(tmp_path), "--no-progress"]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["agent"]["hidden"] == [128, 128] and config["agent"]["time_limit"] == 1000
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert list(episodes.length) == [1000]  # truncated at the v5 time limit


def test_plot_groups_seeds_into_one_curve_with_band(tmp_path):
    import numpy as np
    from streamrl.results import binned_curve, mean_and_ci

    edges = np.array([0.0, 10.0, 20.0])
    curve = binned_curve(np.array([1, 5, 12, 19, 25]), np.array([1.0, 3.0, 10.0, 20.0, 40.0]), edges)
    np.testing.assert_allclose(curve, [2.0, 70 / 3])  # 25 falls in the last bin (clipped)
    curves = np.array([[1.0, 2.0], [3.0, 6.0], [2.0, 4.0]])
    mean, half = mean_and_ci(curves)
    np.testing.assert_allclose(mean, [2.0, 4.0])
    # t(0.975, df=2) = 4.302653 ; sd = [1, 2] ; n = 3
    np.testing.assert_allclose(half, 4.302653 * np.array([1.0, 2.0]) / np.sqrt(3), rtol=1e-6)


def test_unknown_env_suggests_close_matches(capsys):
    err = _one_line_error(capsys, ["train", "--env", "CartPol-v1"])
    assert "unknown environment id 'CartPol-v1'" in err and "'CartPole-v1'" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lambda", "1.5"], "--lambda must be in [0, 1], got 1.5"),
        (["--kappa", "-1"], "--kappa must be >= 0"),
        (["--gamma", "-0.1"], "--gamma must be in [0, 1]"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--total-steps", "-5"], "--total-steps must be > 0"),
        (["--exploration-fraction", "0"], "--exploration-fraction must be in (0, 1]"),
        (["--hidden", "32", "0"], "--hidden must list positive layer widths"),
    ],
)
def test_invalid_hyperparameters_are_refused_before_running(tmp_path, capsys, flags, message):
    run = tmp_path / "run"
    err = _one_line_error(capsys, ["train", "--run-dir", str(run), *flags])
    assert message in err
    assert not run.exists()  # nothing written for a refused configuration


def test_value_based_algorithm_on_box_actions_names_the_fix(capsys):
    err = _one_line_error(capsys, ["train", "q", "--env", "Pendulum-v1"])
    assert "needs Discrete actions" in err and "streamrl train ac" in err


@pytest.mark.parametrize(
    "env_id, message",
    [("envs_for_tests:DictObs-v0", "Dict observations"), ("envs_for_tests:MultiDiscreteAct-v0", "MultiDiscrete")],
)
def test_unsupported_spaces(capsys, env_id, message):
    err = _one_line_error(capsys, ["train", "--env", env_id])
    assert message in err and "streamrl supports" in err


@pytest.mark.parametrize(
    "env_id, step, what, episodes_kept",
    [("envs_for_tests:NaNReward-v0", 7, "reward", 2), ("envs_for_tests:InfObs-v0", 5, "observation", 1)],
)
def test_non_finite_values_stop_the_run_and_keep_results(tmp_path, capsys, env_id, step, what, episodes_kept):
    err = _one_line_error(capsys, ["train", "--env", env_id, "--total-steps", "100", "--run-dir", str(tmp_path), "--no-progress"], status=1)
    assert f"non-finite {what}" in err and f"at step {step}" in err
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert len(episodes) == episodes_kept and list(episodes.end_step) == [3, 6][:episodes_kept]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["steps"] == step and f"step {step}" in summary["message"]


def test_missing_extra_names_the_pip_extra():
    # A fresh interpreter in which `import mujoco` fails, as on a machine without the extra.
    code = "import sys; sys.modules['mujoco'] = None; from streamrl.cli import main; sys.exit(main(sys.argv[1:]))"
    out = _cli("train", "ac", "--env", "HalfCheetah-v5", "--total-steps", "10", code=code)
    assert out.returncode == 2
    err = out.stderr.strip()
    assert err.startswith("error: HalfCheetah-v5 needs an optional dependency") and "\n" not in err
    assert "pip install 'streamrl[mujoco]'" in err


def test_python_dash_m_and_console_script_agree():
    out = _cli("train", "--help")
    assert out.returncode == 0 and "--lambda" in out.stdout and "{ac,q,sarsa,td,dqn1}" in out.stdout
