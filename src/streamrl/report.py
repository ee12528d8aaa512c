"""Reports over runs, seeds and tasks with rliable: ``streamrl report RUN_DIR...``.

Follows Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS 2021) and its library rliable: per method, the IQM, mean, median and
optimality gap of the scores with stratified-bootstrap 95% confidence intervals,
performance profiles, and the probability of improvement between every pair of methods.

* A **score** is one agent's (one seed's) mean episodic return over its last 10% of
  episodes (the run summary's figure), from ``episodes.csv``.
* A **task** is an environment id; a **method** is an algorithm with its settings,
  labelled by the CLI flags whose values differ between the methods reported (e.g.
  ``Q lambda=0.8``, ``AC kappa=2``). Seeds of the same method and task from several run
  directories are pooled.
* **Sections**: when every method has runs on every task, one comparison over all tasks.
  Otherwise the report says which method lacks which task and compares per task (the
  methods with runs on it), and across the tasks every method has when there are two or
  more. Runs of unequal budgets (steps per run, ``summary.json`` / ``config.json``) on a
  task are compared with a warning. Only a report with no score at all is refused.
* **Normalisation** (``--normalize``): ``human`` for Atari (``(score − random)/(human −
  random)``, :mod:`streamrl.envs.atari_scores`), ``minmax`` per task over every score
  reported, ``none``; ``auto`` = human when every task is an Atari game with reference
  scores, else none. The optimality gap (γ = 1) is only defined on normalised scores.

Outputs in ``--out``: ``report.md`` (the tables), ``report.json``, and per section
``aggregate.png``, ``profiles.png`` and, with two or more methods, ``improvement.png``
(the comparison over all or the shared tasks; per-task sections add ``_<task>`` to the
names).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from streamrl.errors import ConfigError, MissingExtraError, StreamRLError

__all__ = ["load_scores", "score_matrices", "plan", "aggregate", "probability_of_improvement", "report", "METRICS"]

METRICS = ("IQM", "Mean", "Median", "Optimality gap")


def _rliable():
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        raise MissingExtraError("streamrl report needs rliable: pip install 'streamrl[report]'") from None
    return rly, metrics


def load_scores(run_dirs) -> list[dict]:
    """One record per agent of every run: ``run, agent, seed, algo, env, hparams, settings,
    steps, score`` (settings: ``{flag: value}``, :func:`streamrl.results.member_settings`;
    steps: the run's steps per agent; score = mean return of the agent's last 10% of
    episodes; agents without an episode are skipped).

    Raises:
      ConfigError: a path that is not a run directory, or damaged records.
    """
    from streamrl.results import load_config, member_settings, read_episodes, run_steps, tail_mean

    records = []
    for run in map(Path, run_dirs):
        try:
            config = load_config(run)
        except (OSError, ValueError, StreamRLError) as exc:
            raise ConfigError(f"{run} is not a readable run directory ({type(exc).__name__}); pass directories `streamrl train` wrote") from None
        if config.get("kind") == "prediction":
            raise ConfigError(f"{run} is a `streamrl predict` run (no episodes): `streamrl plot` draws it; report compares `streamrl train` runs")
        episodes = read_episodes(run)
        steps = run_steps(run, config)
        for member in config["members"]:
            agent = int(member["agent"])
            score = tail_mean(episodes.loc[episodes.agent == agent, "episodic_return"].to_numpy(np.float64))
            if score is None:
                continue
            hparams = {k: v for k, v in member.items() if k not in ("agent", "seed")}
            records.append(dict(run=str(run), agent=agent, seed=int(member["seed"]), algo=config["algo"],
                                env=config["env"], hparams=hparams, settings=member_settings(config, member),
                                steps=steps, score=score))
    if not records:
        raise ConfigError("no finished episodes in the given run directories: nothing to report")
    return records


def _method_labels(records: list[dict]) -> list[str]:
    """A label per record: its algorithm and the settings (CLI flags) that differ between
    the methods of ``records`` (:func:`streamrl.results.method_labels`)."""
    from streamrl.results import method_labels

    keys = [(r["algo"], tuple(r.get("settings", {}).items())) for r in records]
    unique = list(dict.fromkeys(keys))
    labels = dict(zip(unique, method_labels([(algo, dict(items)) for algo, items in unique])))
    return [labels[k] for k in keys]


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


def score_matrices(
    records: list[dict], normalize: str = "auto", tasks: list[str] | None = None,
) -> tuple[dict[str, np.ndarray], list[str], str, dict]:
    """Method → scores [runs, tasks] (rliable's layout) over ``tasks`` (default: every task
    of ``records``), the task list, the normalisation used, and notes. Methods without runs
    on one of ``tasks`` are left out (noted; the result may be empty). Methods with unequal
    seed counts across tasks keep the first n seeds of each task, n the smallest count
    (noted)."""
    labels = _method_labels(records)
    all_tasks = sorted({r["env"] for r in records})
    mode, norm = _normalizer(normalize, all_tasks, records)
    tasks = all_tasks if tasks is None else list(tasks)
    cells: dict[str, dict[str, list[float]]] = {}
    for label, r in zip(labels, records):
        cells.setdefault(label, {}).setdefault(r["env"], []).append(norm(r["env"], r["score"]))
    matrices, notes = {}, {}
    for label, by_task in cells.items():
        missing = [t for t in tasks if t not in by_task]
        if missing:
            notes[label] = f"no runs on {', '.join(missing)}: left out"
            continue
        n = min(len(by_task[t]) for t in tasks)
        if any(len(by_task[t]) != n for t in tasks):
            notes[label] = f"unequal seeds per task: the first {n} of each task are used"
        matrices[label] = np.array([by_task[t][:n] for t in tasks], np.float64).T
    return matrices, tasks, mode, notes


def plan(records: list[dict]) -> tuple[list[dict], dict[str, list[str]], list[str]]:
    """What can be compared: ``(sections, missing, warnings)``.

    ``sections``: ``{"title", "tasks", "key"}`` dicts. When every method has runs on every
    task, one section over all tasks; otherwise one over the tasks every method has (when
    two or more) and one per task. ``missing``: method → the tasks it has no runs on.
    ``warnings``: one line per task on which runs of unequal budgets (steps per run) are
    compared, naming each method's budgets."""
    labels = _method_labels(records)
    tasks = sorted({r["env"] for r in records})
    coverage: dict[str, set] = {}
    budgets: dict[str, dict[str, set]] = {}
    for label, r in zip(labels, records):
        coverage.setdefault(label, set()).add(r["env"])
        budgets.setdefault(r["env"], {}).setdefault(label, set()).add(r.get("steps"))
    missing = {m: [t for t in tasks if t not in have] for m, have in coverage.items() if len(have) < len(tasks)}
    if not missing:
        sections = [dict(title="all tasks" if len(tasks) > 1 else tasks[0], tasks=tasks, key="")]
    else:
        shared = [t for t in tasks if all(t in have for have in coverage.values())]
        sections = [dict(title=f"the {len(shared)} tasks every method has", tasks=shared, key="")] if len(shared) > 1 else []
        sections += [dict(title=t, tasks=[t], key=_slug(t)) for t in tasks]
    warnings = []
    for task in tasks:
        seen = {b for per in budgets[task].values() for b in per}
        if len(seen) > 1:
            shown = "; ".join(f"{m}: {_steps(per)}" for m, per in budgets[task].items())
            warnings.append(f"runs of unequal budgets are compared on {task} (steps per run): {shown}")
    return sections, missing, warnings


def _steps(values) -> str:
    known = sorted(v for v in values if v is not None)
    text = ", ".join(f"{v:,}" for v in known) or "unknown"
    return text + (" and unknown" if None in values and known else "")


def _slug(task: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in task)


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


def _colors(methods: list[str]) -> dict:
    import seaborn as sns

    return dict(zip(methods, sns.color_palette("colorblind", n_colors=max(len(methods), 1))))


def _aggregate_figure(points, cis, names, methods, xlabel, title, path: Path) -> None:
    """rliable's interval-estimate figure, made readable: a panel per metric with the x
    label under each panel, a marker at every point estimate (an interval of zero width,
    e.g. one seed, is otherwise invisible), x-limits that hold every interval, and a figure
    at least 0.35 times as high as wide."""
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    colors = _colors(methods)
    drawn = plot_utils.plot_interval_estimates(
        points, cis, metric_names=names, algorithms=methods, colors=colors, xlabel=xlabel, row_height=0.6,
    )
    fig, axes = drawn if isinstance(drawn, tuple) else (drawn.get_figure(), drawn)
    axes = np.atleast_1d(axes)
    for text in list(fig.texts):  # rliable's shared x label, drawn over the tick labels
        text.remove()
    for k, ax in enumerate(axes):
        values = []
        for i, m in enumerate(methods):
            lo, hi = np.asarray(cis[m])[:, k]
            point = float(points[m][k])
            values += [lo, hi, point]
            ax.plot([point], [i], marker="D", markersize=7, color=colors[m], markeredgecolor="k", zorder=3)
        lo, hi = float(np.min(values)), float(np.max(values))
        pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 0.5)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(-0.6, len(methods) - 0.4)
        ax.set_xlabel(xlabel, fontsize="large")
    width = 3.4 * len(axes) + 0.12 * max(len(m) for m in methods)
    fig.set_size_inches(width, max(0.35 * width, 1.6 + 0.55 * len(methods)))
    fig.suptitle(title, fontsize="x-large")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", dpi=120)
    plt.close(fig)


def _profiles_figure(profiles, profile_cis, taus, methods, xlabel, title, path: Path) -> None:
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(7.5, 5))
    plot_utils.plot_performance_profiles(
        profiles, taus, performance_profile_cis=profile_cis, ax=ax, xlabel=f"{xlabel} (τ)", colors=_colors(methods),
        labelsize="large", ticklabelsize="large",
    )
    ax.legend(ax.get_lines()[: len(methods)], methods, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=1 if len(methods) < 4 else 2, frameon=False, title="shaded: 95% CI (bootstrap)")
    ax.set_title(title, fontsize="large")
    fig.savefig(path, bbox_inches="tight", dpi=120)
    plt.close(fig)


def _improvement_figure(poi_points, poi_cis, methods, title, path: Path) -> None:
    """P(X > Y) for each unordered pair once (P(Y > X) = 1 − P(X > Y)), a marker at every
    point estimate."""
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    pairs = [f"{x},{y}" for x, y in itertools.combinations(methods, 2)]
    points = {p: poi_points[p] for p in pairs}
    intervals = {p: poi_cis[p] for p in pairs}
    width = 4.5 + 0.1 * max(len(m) for m in methods)
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.55 * len(pairs)))
    plot_utils.plot_probability_of_improvement(points, intervals, ax=ax, xticks=[0, 0.25, 0.5, 0.75, 1.0])
    for i, p in enumerate(pairs):
        ax.plot([float(points[p])], [i], marker="D", markersize=7, color="k", zorder=3)
    ax.set_xlim(-0.03, 1.03)
    ax.axvline(0.5, color="0.5", linewidth=0.8, linestyle="--")
    ax.set_title(title, fontsize="large", pad=32)  # above rliable's "Algorithm X / Y" headers
    fig.savefig(path, bbox_inches="tight", dpi=120)
    plt.close(fig)


def _budget_text(records: list[dict], tasks: list[str]) -> str:
    steps = {r.get("steps") for r in records if r["env"] in tasks}
    known = sorted(s for s in steps if s is not None)
    if not known:
        return ""
    if len(known) == 1 and None not in steps:
        return f"{known[0]:,} steps per run"
    return f"{known[0]:,}–{known[-1]:,} steps per run (unequal budgets)"


def report(run_dirs, out: Path, *, normalize: str = "auto", reps: int = 2000, seed: int = 0) -> dict:
    """Write the report of ``run_dirs`` into ``out``; returns its numbers (JSON-able).

    The report has one or more sections (:func:`plan`); ``methods`` and
    ``probability_of_improvement`` of the result are the first section's, ``sections``
    holds each, ``missing`` the tasks each method lacks, ``warnings`` unequal budgets.

    Raises:
      ConfigError: unreadable run directories, no episodes, an impossible normalisation.
      MissingExtraError: rliable is not installed.
    """
    rly, _ = _rliable()
    import matplotlib

    matplotlib.use("Agg")

    records = load_scores(run_dirs)
    sections, missing, warnings = plan(records)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mode = None
    figures, results = [], []
    for section in sections:
        matrices, tasks, mode, notes = score_matrices(records, normalize, section["tasks"])
        if not matrices:
            continue
        normalized = mode != "none"
        names, points, cis = aggregate(matrices, normalized, reps, seed)
        poi_points, poi_cis = probability_of_improvement(matrices, reps, seed)
        results.append(dict(section, budget=_budget_text(records, tasks), matrices=matrices, names=names,
                            points=points, cis=cis, poi_points=poi_points, poi_cis=poi_cis, notes=notes, figures=[]))
    if not results:
        raise ConfigError("nothing to report: no method has scores on a task")
    score_name = {"human": "human-normalised score", "minmax": "min-max normalised score", "none": "episodic return"}[mode]
    normalized = mode != "none"

    lines = [
        "# streamrl report",
        "",
        f"Tasks: {', '.join(sorted({r['env'] for r in records}))}. Score: each seed's mean {score_name} over its last "
        f"10% of episodes. Point estimates with stratified-bootstrap 95% CIs ({reps} resamples, rliable).",
    ]
    if missing:
        shared = next((r for r in results if r["key"] == "" and len(r["tasks"]) > 1), None)
        lines += ["", "**Warning: the methods do not have runs on the same tasks**; compared per task"
                  + (f" and across the tasks every method has ({', '.join(shared['tasks'])})" if shared else "") + ":"]
        lines += [f"- {m} has no runs on {', '.join(ts)}" for m, ts in missing.items()]
    for w in warnings:
        lines += ["", f"**Warning: {w}.**"]
    for r in results:
        suffix = f"_{r['key']}" if r["key"] else ""
        methods = list(r["matrices"])
        name = r["title"]
        if r["title"] not in r["tasks"] and len(r["tasks"]) <= 3:
            name = f"{r['title']} ({', '.join(r['tasks'])})"
        title = f"{name}: {r['budget']}" if r["budget"] else name
        tasks_text = "" if name != r["title"] or r["title"] in r["tasks"] else f"Tasks: {', '.join(r['tasks'])}."
        lines += ["", f"## {title}", ""] + ([tasks_text, ""] if tasks_text else []) + [
            "| method | seeds × tasks | " + " | ".join(r["names"]) + " |",
            "|---|---|" + "---|" * len(r["names"]),
        ]
        for method, matrix in r["matrices"].items():
            p, c = r["points"][method], r["cis"][method]
            cells = [f"{_fmt(p[k])} [{_fmt(c[0][k])}, {_fmt(c[1][k])}]" for k in range(len(r["names"]))]
            lines.append(f"| {method} | {matrix.shape[0]} × {matrix.shape[1]} | " + " | ".join(cells) + " |")
        if r["poi_points"]:
            lines += ["", "Probability of improvement P(X > Y):", "", "| X | Y | P(X > Y) |", "|---|---|---|"]
            for pair, prob in r["poi_points"].items():
                x, y = pair.split(",")
                lo, hi = np.ravel(r["poi_cis"][pair])
                lines.append(f"| {x} | {y} | {float(prob):.3f} [{lo:.3f}, {hi:.3f}] |")
        for method, note in r["notes"].items():
            if "left out" not in note:  # methods without runs on a task: listed above
                lines.append(f"\nNote: {method}: {note}.")

        where = f"{name}, {r['budget']}" if r["budget"] else name
        _aggregate_figure(r["points"], r["cis"], r["names"], methods, score_name,
                          f"{where}: {len(methods)} method{'s' * (len(methods) > 1)}, 95% stratified-bootstrap CIs",
                          out / f"aggregate{suffix}.png")
        r["figures"].append(f"aggregate{suffix}.png")
        all_scores = np.concatenate([m.ravel() for m in r["matrices"].values()])
        lo, hi = float(all_scores.min()), float(all_scores.max())
        span = hi - lo if hi > lo else max(abs(lo) * 0.1, 1.0)
        taus = np.linspace(lo - 0.05 * span, hi + 0.05 * span, 101)  # each profile from 1 down to 0
        with _seeded(seed):
            profiles, profile_cis = rly.create_performance_profile(r["matrices"], taus, reps=min(reps, 2000))
        _profiles_figure(profiles, profile_cis, taus, methods, score_name, f"Performance profiles: {where}",
                         out / f"profiles{suffix}.png")
        r["figures"].append(f"profiles{suffix}.png")
        if r["poi_points"]:
            _improvement_figure(r["poi_points"], r["poi_cis"], methods,
                                f"Probability of improvement, 95% CIs\n{where}", out / f"improvement{suffix}.png")
            r["figures"].append(f"improvement{suffix}.png")
        lines += ["", "Figures: " + ", ".join(r["figures"]) + "."]
        figures += r["figures"]
    if not normalized:
        lines += ["", "The optimality gap needs normalised scores (--normalize human or minmax)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")

    def numbers(r):
        return {
            "title": r["title"],
            "tasks": r["tasks"],
            "budget": r["budget"],
            "methods": {
                m: {"scores": r["matrices"][m].tolist(), "point": [float(v) for v in r["points"][m]],
                    "ci": [[float(v) for v in row] for row in np.asarray(r["cis"][m])]}
                for m in r["matrices"]
            },
            "probability_of_improvement": {
                k: {"point": float(v), "ci": [float(c) for c in np.ravel(r["poi_cis"][k])]} for k, v in r["poi_points"].items()
            },
            "figures": r["figures"],
            "notes": r["notes"],
        }

    sections_out = [numbers(r) for r in results]
    result = {
        "tasks": sorted({r["env"] for r in records}),
        "normalization": mode,
        "metrics": results[0]["names"],
        "methods": sections_out[0]["methods"],
        "probability_of_improvement": sections_out[0]["probability_of_improvement"],
        "sections": sections_out,
        "missing": missing,
        "warnings": warnings,
        "figures": figures,
        "notes": results[0]["notes"],
    }
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
