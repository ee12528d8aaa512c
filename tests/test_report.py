"""`streamrl report`: rliable aggregates against a direct computation on a small synthetic
score table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from streamrl.cli import main
from streamrl.errors import ConfigError
from streamrl.report import load_scores, report

# method → task → per-seed scores (each seed's episodes all score this, so its last-10% mean is it)
TABLE = {
    "q": {"ALE/Breakout-v5": [1.7, 16.1, 30.5, 45.0, 8.0], "ALE/Pong-v5": [-20.7, 14.6, -3.05, 0.0, 20.0]},
    "ac": {"ALE/Breakout-v5": [10.0, 12.0, 1.0, 2.0, 60.0], "ALE/Pong-v5": [-21.0, -20.0, 5.0, 5.0, 7.0]},
}
REFERENCE = {"ALE/Breakout-v5": (1.7, 30.5), "ALE/Pong-v5": (-20.7, 14.6)}  # (random, human), Mnih et al. 2015


def _write_run(path: Path, algo: str, env: str, scores: list[float]):
    """A run directory as `streamrl train` writes it: one agent per seed, 20 episodes each,
    the first 18 at 0 (not in the last 10%), the last 2 at the seed's score."""
    path.mkdir(parents=True)
    members = [{"agent": i, "seed": i, "lr": 1.0, "lambda_": 0.8} for i in range(len(scores))]
    (path / "config.json").write_text(json.dumps({"algo": algo, "env": env, "members": members}))
    rows = ["agent,seed,end_step,episodic_return,length"]
    for i, score in enumerate(scores):
        for k in range(20):
            rows.append(f"{i},{i},{100 * (k + 1)},{score if k >= 18 else 0.0},100")
    (path / "episodes.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def runs(tmp_path):
    dirs = []
    for algo, tasks in TABLE.items():
        for env, scores in tasks.items():
            d = tmp_path / f"{algo}_{env.replace('/', '_')}"
            _write_run(d, algo, env, scores)
            dirs.append(d)
    return dirs


def _normalised(algo):
    cols = []
    for env, scores in TABLE[algo].items():
        r, h = REFERENCE[env]
        cols.append((np.array(scores) - r) / (h - r))
    return np.stack(cols, axis=1)  # [seeds, tasks]


def _poi(x, y):
    """P(X > Y) averaged over tasks, counting ties as one half (Mann-Whitney U / nm)."""
    per_task = []
    for t in range(x.shape[1]):
        a, b = x[:, t][:, None], y[:, t][None, :]
        per_task.append(((a > b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size))
    return float(np.mean(per_task))


def test_scores_are_each_seeds_last_ten_percent(runs):
    records = load_scores(runs)
    assert len(records) == 20
    got = sorted((r["algo"], r["env"], r["seed"], r["score"]) for r in records)
    want = sorted((a, e, i, s) for a, tasks in TABLE.items() for e, ss in tasks.items() for i, s in enumerate(ss))
    assert got == [pytest.approx(w) for w in want]


def test_report_matches_a_direct_computation(runs, tmp_path):
    out = report(runs, tmp_path / "report", reps=500, seed=1)
    assert out["normalization"] == "human" and out["tasks"] == ["ALE/Breakout-v5", "ALE/Pong-v5"]
    assert out["metrics"] == ["IQM", "Mean", "Median", "Optimality gap"]
    for algo in ("q", "ac"):
        scores = _normalised(algo)
        method = out["methods"][algo.upper()]
        np.testing.assert_allclose(np.array(method["scores"]), scores, rtol=1e-12)
        expected = [
            scipy.stats.trim_mean(scores.ravel(), 0.25),  # IQM: mean of the middle 50% of all runs
            scores.mean(),
            np.median(scores.mean(axis=0)),  # median over tasks of the mean over seeds
            1.0 - np.minimum(scores, 1.0).mean(),  # optimality gap at γ = 1
        ]
        np.testing.assert_allclose(method["point"], expected, rtol=1e-9)
        lo, hi = np.array(method["ci"])
        assert np.all(lo <= np.array(expected) + 1e-12) and np.all(np.array(expected) <= hi + 1e-12)
        assert np.all(hi - lo > 0)
    poi = out["probability_of_improvement"]
    assert poi["Q,AC"]["point"] == pytest.approx(_poi(_normalised("q"), _normalised("ac")))
    assert poi["AC,Q"]["point"] == pytest.approx(_poi(_normalised("ac"), _normalised("q")))
    assert poi["Q,AC"]["point"] + poi["AC,Q"]["point"] == pytest.approx(1.0)
    for name in ("report.md", "report.json", "aggregate.png", "profiles.png", "improvement.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert "| Q | 5 × 2 |" in table and "| AC | 5 × 2 |" in table and "P(X > Y)" in table


def test_bootstrap_is_reproducible_and_raw_scores_have_no_gap(runs, tmp_path):
    a = report(runs, tmp_path / "a", normalize="none", reps=300, seed=3)
    b = report(runs, tmp_path / "b", normalize="none", reps=300, seed=3)
    assert a["methods"] == b["methods"] and a["metrics"] == ["IQM", "Mean", "Median"]
    raw = np.stack([TABLE["q"][t] for t in sorted(TABLE["q"])], axis=1)
    assert a["methods"]["Q"]["point"][1] == pytest.approx(raw.mean())
    assert "optimality gap needs normalised scores" in (tmp_path / "a" / "report.md").read_text()


def test_report_refusals_and_cli(runs, tmp_path, capsys):
    with pytest.raises(ConfigError, match="not a readable run directory"):
        report([tmp_path / "nope"], tmp_path / "x")
    cartpole = tmp_path / "cartpole"
    _write_run(cartpole, "q", "CartPole-v1", [100.0, 200.0])
    with pytest.raises(ConfigError, match="--normalize human needs Atari games"):
        report([cartpole], tmp_path / "x", normalize="human")
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "cli"), "--reps", "200"]) == 0
    printed = capsys.readouterr().out
    assert "human-normalised score" in printed and "| Q |" in printed


@pytest.mark.parametrize(
    "env_id, game",
    [
        ("ALE/Breakout-v5", "breakout"),
        ("BreakoutNoFrameskip-v4", "breakout"),
        ("ALE/MontezumaRevenge-v5", "montezuma_revenge"),
        ("Breakout-v5", "breakout"),  # EnvPool's Atari ids, after the envpool: prefix
        *((f"MinAtar/{g}-v1", None) for g in ("Breakout", "Asterix", "Freeway", "Seaquest", "SpaceInvaders")),
        ("Breakout-MinAtar", None),  # gymnax
        ("dm_control/cheetah-run-v0", None),
        ("CartPole-v1", None),
        ("HalfCheetah-v5", None),
    ],
)
def test_only_atari_ids_are_human_normalised(env_id, game, tmp_path):
    """MinAtar's games share names with Atari's; their returns must never be put on the
    Atari human-normalised scale (run summaries, eval and `report --normalize auto`)."""
    from streamrl.envs.atari_scores import game_of
    from streamrl.results import RunWriter

    assert game_of(env_id) == game
    assert RunWriter(tmp_path, env_id=env_id).game == game
