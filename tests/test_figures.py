"""Run-directory names, learning curves of runs of different lengths, and the figures of
`streamrl plot` and `streamrl report` (their arrays and sizes, not their pixels)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from streamrl.config import TrainConfig
from streamrl.results import learning_curves, load_episodes, plot_runs, run_curve, run_name

STAMP = "20250101-120000"


@pytest.mark.parametrize(
    "options, name",
    [
        ({}, "CartPole-v1_q_s0_" + STAMP),
        ({"seed": 3}, "CartPole-v1_q_s3_" + STAMP),
        ({"num_seeds": 4}, "CartPole-v1_q_s0-3_" + STAMP),
        ({"num_seeds": 4, "seed": 10}, "CartPole-v1_q_s10-13_" + STAMP),
        ({"lambda_": (0.0, 0.8)}, "CartPole-v1_q_s0_lambda0,0.8_" + STAMP),
        ({"lambda_": (0.0, 0.8), "kappa": (1.0, 2.0), "num_seeds": 5}, "CartPole-v1_q_s0-4_lambda0,0.8_kappa1,2_" + STAMP),
        ({"lambda_": (0.8,), "kappa": (2.0,)}, "CartPole-v1_q_s0_" + STAMP),  # one value: not a sweep
        (  # too long to list the values: only the flags
            {"lambda_": (0.0, 0.8, 0.95), "kappa": (1.0, 2.0, 3.0), "exploration_fraction": (0.05, 0.1), "num_seeds": 2},
            "CartPole-v1_q_s0-1_sweep-lambda-kappa-exploration-fraction_" + STAMP,
        ),
        ({"env": "MinAtar/Breakout-v1", "algo": "ac"}, "MinAtar-Breakout-v1_ac_s0_" + STAMP),
        ({"env": "gymnax:CartPole-v1", "num_seeds": 64}, "gymnax-CartPole-v1_q_s0-63_" + STAMP),
    ],
)
def test_run_names_tell_single_runs_fleets_and_sweeps_apart(options, name):
    got = run_name(TrainConfig(**options), STAMP)
    assert got == name
    assert re.fullmatch(r"[A-Za-z0-9._,-]+", got) and len(got) < 100  # filesystem-safe, no spaces


def test_default_run_path_uses_the_name(tmp_path, monkeypatch):
    from streamrl.results import new_run_path

    monkeypatch.chdir(tmp_path)
    path = new_run_path(TrainConfig(num_seeds=3))
    assert path.parent == Path("runs") and re.fullmatch(r"CartPole-v1_q_s0-2_\d{8}-\d{6}", path.name)
    assert new_run_path(TrainConfig(run_dir=tmp_path / "x")) == tmp_path / "x"


def _write(path: Path, *, algo="q", env="CartPole-v1", steps: int, episodes: list[list[tuple[int, float]]], lambdas=None):
    """A run directory: agent i's episodes ``(end_step, return)``, run length ``steps``."""
    path.mkdir(parents=True)
    members = [{"agent": i, "seed": i, "lambda_": (lambdas or [0.8] * len(episodes))[i], "kappa": 2.0}
               for i in range(len(episodes))]
    (path / "config.json").write_text(json.dumps({"algo": algo, "env": env, "total_steps": steps, "members": members}))
    (path / "summary.json").write_text(json.dumps({"status": "completed", "steps": steps}))
    rows = ["agent,seed,end_step,episodic_return,length"]
    for i, eps in enumerate(episodes):
        rows += [f"{i},{i},{end},{ret},10" for end, ret in eps]
    (path / "episodes.csv").write_text("\n".join(rows) + "\n")
    return path


def test_run_curve_stops_at_the_runs_last_step():
    edges = np.linspace(0, 1000, 11)  # bins of 100 steps
    curve = run_curve(np.array([50, 150, 420]), np.array([1.0, 2.0, 5.0]), edges, last_step=480)
    # bins 0..4 reached (forward filled over bins 2 and 3, where no episode ended); nothing beyond
    np.testing.assert_array_equal(curve[:5], [1.0, 2.0, 2.0, 2.0, 5.0])
    assert np.isnan(curve[5:]).all()
    # the whole range when the run reached its end
    assert np.isfinite(run_curve(np.array([50]), np.array([1.0]), edges, last_step=1000)).all()


def test_a_shorter_run_ends_where_it_stopped_in_the_plotted_curves(tmp_path):
    long = _write(tmp_path / "long", steps=3000, episodes=[[(k, 10.0 + k / 100) for k in range(100, 3001, 100)]])
    short = _write(tmp_path / "short", steps=1000, episodes=[[(k, 1.0) for k in range(100, 1001, 100)]], lambdas=[0.0])
    df = load_episodes([long, short])
    assert sorted(df["method"].unique()) == ["Q lambda=0", "Q lambda=0.8"]  # flag names, only what differs
    edges, curves = learning_curves(df, bins=30)
    assert edges[-1] == pytest.approx(3001)
    short_curve = curves["Q lambda=0"][1]
    reached = edges[:-1] < 1000
    assert np.isfinite(short_curve[reached]).all() and np.isnan(short_curve[~reached]).all()
    assert np.isfinite(curves["Q lambda=0.8"][1]).all()  # the long run: to the end
    # pooled seeds of unequal length: the mean beyond the short one's end is the long one's alone
    pooled = load_episodes([long, _write(tmp_path / "short2", steps=1000, episodes=[[(k, 1.0) for k in range(100, 1001, 100)]])])
    _, pooled_curves = learning_curves(pooled, bins=30)
    (agents, mean, half), = pooled_curves.values()
    late = ~reached
    np.testing.assert_allclose(mean[late], agents[0][late])
    assert (half[late] == 0).all()
    out = plot_runs([long, short], tmp_path / "curve.png", bins=30)
    assert out.stat().st_size > 5000


def test_plot_y_range_holds_the_bands():
    from streamrl.results import curve_ylim

    agents = np.array([[0.0, 10.0, 20.0], [2.0, 14.0, 30.0], [1.0, 12.0, 25.0]])
    mean = agents.mean(0)
    half = np.array([1.0, 2.0, 3.0])
    (lo, hi), clipped = curve_ylim([(agents, mean, half)])
    assert lo <= (mean - half).min() and hi >= (mean + half).max() and not clipped
    # a band wider than the seeds' own curves (two seeds: t = 12.7) is cut there, and said
    (lo, hi), clipped = curve_ylim([(agents, mean, np.array([100.0, 100.0, 100.0]))])
    assert clipped and lo >= -0.1 * 30 - 1e-9 and hi <= 30 * 1.1


def test_report_figures_have_a_readable_aspect(tmp_path):
    pytest.importorskip("rliable")
    from PIL import Image

    from streamrl.report import report

    runs = [
        _write(tmp_path / "q", steps=1000, episodes=[[(100, float(s)), (200, float(s))] for s in (10, 20, 30)]),
        _write(tmp_path / "ac", algo="ac", steps=1000, episodes=[[(100, 50.0), (200, 50.0)]]),  # one seed: a zero-width CI
    ]
    out = report(runs, tmp_path / "r", reps=100)
    assert out["methods"]["AC"]["ci"][0][0] == out["methods"]["AC"]["ci"][1][0]
    for name in ("aggregate.png", "profiles.png", "improvement.png"):
        width, height = Image.open(tmp_path / "r" / name).size
        assert height >= 0.3 * width, (name, width, height)
