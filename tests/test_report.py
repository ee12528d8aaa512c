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


def _run(path: Path, algo: str, env: str, scores: list[float], *, steps: int = 2000, lambdas=None, options=None):
    """A run directory with a summary (steps per agent) and per-agent λ (the members'
    recorded hyper-parameters, as a sweep writes them)."""
    _write_run(path, algo, env, scores)
    config = json.loads((path / "config.json").read_text())
    for m, lam in zip(config["members"], lambdas or [0.8] * len(scores)):
        m["lambda_"] = lam
    config["total_steps"] = steps
    if options is not None:
        config["options"] = options
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps({"status": "completed", "steps": steps}))
    return path


def test_methods_on_different_tasks_are_reported_per_task(tmp_path, capsys):
    """`streamrl report runs/*q* runs/*ac*` with Q on two tasks and AC on one: per-task
    results, the missing task named, no failure."""
    runs = [
        _run(tmp_path / "q_cart", "q", "CartPole-v1", [100.0, 120.0, 140.0]),
        _run(tmp_path / "q_acro", "q", "Acrobot-v1", [-300.0, -250.0]),
        _run(tmp_path / "ac_cart", "ac", "CartPole-v1", [300.0, 310.0]),
    ]
    out = report(runs, tmp_path / "r", reps=200)
    assert out["missing"] == {"AC": ["Acrobot-v1"]}
    by_title = {s["title"]: s for s in out["sections"]}
    assert set(by_title) == {"Acrobot-v1", "CartPole-v1"}
    assert set(by_title["CartPole-v1"]["methods"]) == {"Q", "AC"}
    assert set(by_title["Acrobot-v1"]["methods"]) == {"Q"}
    assert np.array(by_title["CartPole-v1"]["methods"]["AC"]["scores"]).shape == (2, 1)
    assert by_title["CartPole-v1"]["methods"]["Q"]["point"][1] == pytest.approx(120.0)  # mean
    assert by_title["Acrobot-v1"]["methods"]["Q"]["point"][1] == pytest.approx(-275.0)
    assert "Q,AC" in by_title["CartPole-v1"]["probability_of_improvement"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "AC has no runs on Acrobot-v1" in md and "## Acrobot-v1" in md and "## CartPole-v1" in md
    for name in by_title["CartPole-v1"]["figures"] + by_title["Acrobot-v1"]["figures"]:
        assert (tmp_path / "r" / name).stat().st_size > 0
    assert "improvement_CartPole-v1.png" in out["figures"]
    # the command line: exit 0, the missing task on stdout
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "cli"), "--reps", "100"]) == 0
    printed = capsys.readouterr().out
    assert "AC has no runs on Acrobot-v1" in printed and "aggregate_Acrobot-v1.png" in printed


def test_methods_are_compared_across_the_tasks_they_share(tmp_path):
    runs = []
    for algo, envs in {"q": ("A-v0", "B-v0", "C-v0"), "ac": ("A-v0", "B-v0", "C-v0"), "sarsa": ("A-v0", "B-v0")}.items():
        for env in envs:
            runs.append(_run(tmp_path / f"{algo}_{env}", algo, env, [1.0, 2.0, 3.0]))
    out = report(runs, tmp_path / "r", reps=100)
    shared = out["sections"][0]
    assert shared["tasks"] == ["A-v0", "B-v0"] and set(shared["methods"]) == {"Q", "AC", "SARSA"}
    assert np.array(shared["methods"]["SARSA"]["scores"]).shape == (3, 2)
    assert [s["title"] for s in out["sections"][1:]] == ["A-v0", "B-v0", "C-v0"]
    assert out["missing"] == {"SARSA": ["C-v0"]}
    assert shared["figures"] == ["aggregate.png", "profiles.png", "improvement.png"]
    assert "across the tasks every method has (A-v0, B-v0)" in (tmp_path / "r" / "report.md").read_text()


def test_nothing_to_report_is_one_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"algo": "q", "env": "CartPole-v1", "members": [{"agent": 0, "seed": 0}]}))
    (empty / "episodes.csv").write_text("agent,seed,end_step,episodic_return,length\n")
    with pytest.raises(ConfigError, match="nothing to report"):
        report([empty], tmp_path / "r")


def test_unequal_budgets_are_compared_with_a_warning(tmp_path, capsys):
    short = _run(tmp_path / "short", "q", "CartPole-v1", [10.0, 20.0], steps=1500, lambdas=[0.0, 0.0])
    long = _run(tmp_path / "long", "q", "CartPole-v1", [100.0, 200.0], steps=3000)
    out = report([short, long], tmp_path / "r", reps=100)
    assert len(out["warnings"]) == 1
    warning = out["warnings"][0]
    assert "unequal budgets" in warning and "CartPole-v1" in warning
    assert "Q lambda=0: 1,500" in warning and "Q lambda=0.8: 3,000" in warning
    assert warning in (tmp_path / "r" / "report.md").read_text()
    assert main(["report", str(short), str(long), "--out", str(tmp_path / "cli"), "--reps", "50"]) == 0
    assert "unequal budgets" in capsys.readouterr().out
    # equal budgets: no warning
    same = _run(tmp_path / "same", "q", "CartPole-v1", [5.0, 6.0], steps=3000, lambdas=[0.0, 0.0])
    assert report([same, long], tmp_path / "r2", reps=50)["warnings"] == []


def test_methods_are_labelled_by_their_cli_flags(tmp_path):
    """Labels name what the user typed (--lambda, --exploration-fraction), only the settings
    that differ, never HParams field names (lambda_, eps_decay_steps)."""
    options = {"exploration_fraction": None, "optimizer": "obgd", "hidden": None}
    sweep = _run(tmp_path / "sweep", "q", "CartPole-v1", [1.0, 2.0, 3.0, 4.0], lambdas=[0.0, 0.0, 0.8, 0.8], options=options)
    config = json.loads((sweep / "config.json").read_text())
    for m in config["members"]:
        m.update(kappa=2.0, eps_decay_steps=100.0)  # the resolved ε schedule: 0.05 × 2000 steps
    (sweep / "config.json").write_text(json.dumps(config))
    frac = _run(tmp_path / "frac", "q", "CartPole-v1", [5.0, 6.0], options={**options, "exploration_fraction": [0.1]})
    config = json.loads((frac / "config.json").read_text())
    for m in config["members"]:
        m.update(kappa=3.0, eps_decay_steps=200.0)
    (frac / "config.json").write_text(json.dumps(config))
    out = report([sweep, frac], tmp_path / "r", reps=50)
    assert sorted(out["methods"]) == [
        "Q lambda=0 kappa=2 exploration-fraction=default",
        "Q lambda=0.8 kappa=2 exploration-fraction=default",
        "Q lambda=0.8 kappa=3 exploration-fraction=0.1",
    ]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "lambda_" not in md and "eps_decay_steps" not in md and "lr=" not in md
