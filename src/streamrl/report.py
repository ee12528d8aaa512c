"""Reports over runs, seeds and tasks with rliable: ``streamrl report RUN_DIR...``.

Follows Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS 2021) and its library rliable: per method, the IQM, mean, median and
optimality gap of the scores with stratified-bootstrap 95% confidence intervals,
performance profiles, and the probability of improvement between every pair of methods.

* A **score** is one agent's (one seed's) mean episodic return over its last 10% of
  episodes (the run summary's figure), from ``episodes.csv``.
* A **task** is an environment id; a **method** is an algorithm with its hyper-parameter
  setting, labelled by the hyper-parameters that differ between the agents reported
  (e.g. ``Q λ=0.8``). Seeds of the same method and task from several run directories are
  pooled.
* **Normalisation** (``--normalize``): ``human`` for Atari (``(score − random)/(human −
  random)``, :mod:`streamrl.envs.atari_scores`), ``minmax`` per task over every score
  reported, ``none``; ``auto`` = human when every task is an Atari game with reference
  scores, else none. The optimality gap (γ = 1) is only defined on normalised scores.

Outputs in ``--out``: ``report.md`` (the tables), ``aggregate.png``, ``profiles.png`` and,
with two or more methods, ``improvement.png``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from streamrl.errors import ConfigError, MissingExtraError, StreamRLError

__all__ = ["load_scores", "score_matrices", "aggregate", "probability_of_improvement", "report", "METRICS"]

METRICS = ("IQM", "Mean", "Median", "Optimality gap")


def _rliable():
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        raise MissingExtraError("streamrl report needs rliable: pip install 'streamrl[report]'") from None
    return rly, metrics


def load_scores(run_dirs) -> list[dict]:
    """One record per agent of every run: ``run, agent, seed, algo, env, hparams, score``
    (score = mean return of the agent's last 10% of episodes; agents without an episode
    are skipped).

    Raises:
      ConfigError: a path that is not a run directory, or damaged records.
    """
    from streamrl.results import load_config, read_episodes, tail_mean

    records = []
    for run in map(Path, run_dirs):
        try:
            config = load_config(run)
        except (OSError, ValueError, StreamRLError) as exc:
            raise ConfigError(f"{run} is not a readable run directory ({type(exc).__name__}); pass directories `streamrl train` wrote") from None
        episodes = read_episodes(run)
        for member in config["members"]:
            agent = int(member["agent"])
            score = tail_mean(episodes.loc[episodes.agent == agent, "episodic_return"].to_numpy(np.float64))
            if score is None:
                continue
            hparams = {k: v for k, v in member.items() if k not in ("agent", "seed")}
            records.append(dict(run=str(run), agent=agent, seed=int(member["seed"]), algo=config["algo"],
                                env=config["env"], hparams=hparams, score=score))
    if not records:
        raise ConfigError("no finished episodes in the given run directories: nothing to report")
    return records


def _method_labels(records: list[dict]) -> list[str]:
    from streamrl.results import SYMBOLS

    varying = sorted(
        name for name in records[0]["hparams"]
        if len({json.dumps(r["hparams"].get(name)) for r in records}) > 1
    )
    labels = []
    for r in records:
        setting = " ".join(f"{SYMBOLS.get(n, n)}={r['hparams'].get(n):g}" for n in varying if n in r["hparams"])
        labels.append(f"{r['algo'].upper()}{' ' + setting if setting else ''}")
    return labels


def _normalizer(mode: str, tasks: list[str], records: list[dict]):
    from streamrl.envs.atari_scores import human_normalized
    from streamrl.families import human_game

    games = {t: human_game(t) for t in tasks}
    if mode == "auto":
        mode = "human" if all(games.values()) else "none"
    if mode == "human":
        missing = [t for t, g in games.items() if g is None]
        if missing:
            raise ConfigError(f"--normalize human needs Atari games with reference scores; not: {', '.join(missing)}")
        return mode, lambda task, s: human_normalized(games[task], s)
    if mode == "minmax":
        bounds = {}
        for t in tasks:
            values = [r["score"] for r in records if r["env"] == t]
            bounds[t] = (min(values), max(values))
        return mode, lambda task, s: (s - bounds[task][0]) / (bounds[task][1] - bounds[task][0]) if bounds[task][1] > bounds[task][0] else 0.0
    if mode == "none":
        return mode, lambda task, s: s
    raise ConfigError(f"--normalize must be auto, none, human or minmax, got {mode!r}")


def score_matrices(records: list[dict], normalize: str = "auto") -> tuple[dict[str, np.ndarray], list[str], str, dict]:
    """Method → scores [runs, tasks] (rliable's layout), the task list, the normalisation
    used, and notes. Methods with unequal seed counts across tasks keep the first n seeds
    of each task, n the smallest count (noted)."""
    labels = _method_labels(records)
    tasks = sorted({r["env"] for r in records})
    mode, norm = _normalizer(normalize, tasks, records)
    cells: dict[str, dict[str, list[float]]] = {}
    for label, r in zip(labels, records):
        cells.setdefault(label, {}).setdefault(r["env"], []).append(norm(r["env"], r["score"]))
    matrices, notes = {}, {}
    for label, by_task in cells.items():
        missing = [t for t in tasks if t not in by_task]
        if missing:
            notes[label] = f"no runs on {', '.join(missing)}: left out"
            continue
        n = min(len(v) for v in by_task.values())
        if any(len(v) != n for v in by_task.values()):
            notes[label] = f"unequal seeds per task: the first {n} of each task are used"
        matrices[label] = np.array([by_task[t][:n] for t in tasks], np.float64).T
    if not matrices:
        raise ConfigError("no method has runs on every task; report tasks separately")
    return matrices, tasks, mode, notes


def _metric_funcs(metrics, normalized: bool):
    funcs = {"IQM": metrics.aggregate_iqm, "Mean": metrics.aggregate_mean, "Median": metrics.aggregate_median}
    if normalized:
        funcs["Optimality gap"] = metrics.aggregate_optimality_gap
    return funcs


def _quiet_arch():
    import warnings

    # arch (rliable's bootstrap) deprecates the RandomState rliable hands it
    warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)


class _seeded:
    """rliable 1.2's stratified bootstrap draws from NumPy's global RNG (its random_state
    argument is not used for the resampling), so the bootstrap seeds the global RNG and
    puts its state back afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._state = np.random.get_state()
        np.random.seed(self.seed)

    def __exit__(self, *exc):
        np.random.set_state(self._state)


def aggregate(matrices: dict[str, np.ndarray], normalized: bool, reps: int = 2000, seed: int = 0):
    """Point estimates and stratified-bootstrap 95% CIs: ``(names, points, cis)`` with
    ``points[method]`` [len(names)] and ``cis[method]`` [2, len(names)]."""
    rly, metrics = _rliable()
    _quiet_arch()
    funcs = _metric_funcs(metrics, normalized)
    names = list(funcs)
    with _seeded(seed):
        points, cis = rly.get_interval_estimates(
            matrices, lambda x: np.array([f(x) for f in funcs.values()]), reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return names, points, cis


def probability_of_improvement(matrices: dict[str, np.ndarray], reps: int = 2000, seed: int = 0):
    """P(X > Y) for every ordered pair of methods, with stratified-bootstrap 95% CIs:
    ``(points, cis)`` keyed by ``"X,Y"``."""
    rly, metrics = _rliable()
    _quiet_arch()
    pairs = {f"{x},{y}": (matrices[x], matrices[y]) for x, y in itertools.permutations(matrices, 2)}
    if not pairs:
        return {}, {}
    with _seeded(seed):
        return rly.get_interval_estimates(
            pairs, metrics.probability_of_improvement, reps=reps, random_state=np.random.RandomState(seed)
        )


def _fmt(x: float) -> str:
    return f"{x:,.3f}" if abs(x) < 1000 else f"{x:,.0f}"


def report(run_dirs, out: Path, *, normalize: str = "auto", reps: int = 2000, seed: int = 0) -> dict:
    """Write the report of ``run_dirs`` into ``out``; returns its numbers (JSON-able).

    Raises:
      ConfigError: unreadable run directories, no episodes, an impossible normalisation.
      MissingExtraError: rliable is not installed.
    """
    rly, _ = _rliable()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    records = load_scores(run_dirs)
    matrices, tasks, mode, notes = score_matrices(records, normalize)
    normalized = mode != "none"
    names, points, cis = aggregate(matrices, normalized, reps, seed)
    poi_points, poi_cis = probability_of_improvement(matrices, reps, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    score_name = {"human": "human-normalised score", "minmax": "min-max normalised score", "none": "episodic return"}[mode]
    lines = [
        "# streamrl report",
        "",
        f"Tasks: {', '.join(tasks)}. Score: each seed's mean {score_name} over its last 10% of episodes. "
        f"Point estimates with stratified-bootstrap 95% CIs ({reps} resamples, rliable).",
        "",
        "| method | seeds × tasks | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for method, matrix in matrices.items():
        cells = [f"{_fmt(points[method][k])} [{_fmt(cis[method][0][k])}, {_fmt(cis[method][1][k])}]" for k in range(len(names))]
        lines.append(f"| {method} | {matrix.shape[0]} × {matrix.shape[1]} | " + " | ".join(cells) + " |")
    if not normalized:
        lines += ["", "The optimality gap needs normalised scores (--normalize human or minmax)."]
    if poi_points:
        lines += ["", "Probability of improvement P(X > Y):", "", "| X | Y | P(X > Y) |", "|---|---|---|"]
        for pair, p in poi_points.items():
            x, y = pair.split(",")
            lo, hi = np.ravel(poi_cis[pair])
            lines.append(f"| {x} | {y} | {float(p):.3f} [{lo:.3f}, {hi:.3f}] |")
    for method, note in notes.items():
        lines.append(f"\nNote: {method}: {note}.")
    (out / "report.md").write_text("\n".join(lines) + "\n")

    figures = []
    axes = plot_utils.plot_interval_estimates(points, cis, metric_names=names, algorithms=list(matrices), xlabel=score_name)
    fig = axes[0].get_figure() if hasattr(axes, "__len__") else axes.get_figure()
    fig.savefig(out / "aggregate.png", bbox_inches="tight", dpi=120)
    plt.close(fig)
    figures.append("aggregate.png")

    all_scores = np.concatenate([m.ravel() for m in matrices.values()])
    taus = np.linspace(all_scores.min(), all_scores.max(), 101)
    with _seeded(seed):
        profiles, profile_cis = rly.create_performance_profile(matrices, taus, reps=min(reps, 2000))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=profile_cis, ax=ax, xlabel=f"{score_name} (τ)")
    ax.legend(ax.get_lines()[: len(matrices)], list(matrices), loc="lower left")
    fig.savefig(out / "profiles.png", bbox_inches="tight", dpi=120)
    plt.close(fig)
    figures.append("profiles.png")

    if poi_points:
        ax = plot_utils.plot_probability_of_improvement(poi_points, poi_cis)
        fig = ax.get_figure()
        fig.savefig(out / "improvement.png", bbox_inches="tight", dpi=120)
        plt.close(fig)
        figures.append("improvement.png")

    result = {
        "tasks": tasks,
        "normalization": mode,
        "metrics": names,
        "methods": {
            m: {"scores": matrices[m].tolist(), "point": [float(v) for v in points[m]],
                "ci": [[float(v) for v in row] for row in np.asarray(cis[m])]}
            for m in matrices
        },
        "probability_of_improvement": {
            k: {"point": float(v), "ci": [float(c) for c in np.ravel(poi_cis[k])]} for k, v in poi_points.items()
        },
        "figures": figures,
        "notes": notes,
    }
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
