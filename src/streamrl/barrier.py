"""``streamrl barrier``: the paper's stream-barrier comparison in one command.

Stream-x, each of its ingredients switched off, and the classic streaming baseline, on the
same task and seeds, each variant a fleet of seeds (:func:`streamrl.run.train`), in one
directory; then the final return per variant with stratified-bootstrap 95% CIs (rliable,
as ``streamrl report``), the learning curves, and the table (``barrier.md``,
``barrier.json``). Source of the claims it tests: arXiv:2410.14606, Sections 2 and 5
(classic methods fail in the streaming setting; each stream-x ingredient is needed);
docs/algorithms.md "Ablations and classic baselines".

Variants (the switches each one sets; everything else is the paper's setting):

* ``stream-x``: nothing switched off.
* ``sgd``: ObGD replaced by the unbounded trace update lr·δz (``--optimizer sgd``, step size
  ``--classic-lr``).
* ``no-layer-norm``: ``--no-layer-norm``.
* ``dense-init``: ``--sparsity 0`` (a dense init with the same bound).
* ``no-normalization``: ``--no-normalize-obs --no-scale-reward``.
* ``lambda0``: ``--lambda 0``.
* ``classic-adam``: the classic baseline — Adam on the trace update (``--optimizer adam``,
  ``--classic-lr``) with none of the stream-x ingredients (no LayerNorm, dense init, no
  observation or reward normalisation): ``config.CLASSIC``, what ``--preset classic`` sets.
* ``dqn1``: the batch-1 DQN baseline (``streamrl train dqn1``: a target network, Adam at
  1e-4, the classic settings), for ``q`` and ``sarsa`` comparisons (Discrete actions).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from streamrl.config import CLASSIC, Algo, TrainConfig
from streamrl.errors import ConfigError, NonFiniteError

__all__ = ["BarrierConfig", "VARIANTS", "barrier", "variant_config"]

VARIANTS: dict[str, dict] = {
    "stream-x": {},
    "sgd": {"optimizer": "sgd", "lr": "classic"},
    "no-layer-norm": {"layer_norm": False},
    "dense-init": {"sparsity": 0.0},
    "no-normalization": {"normalize_obs": False, "scale_reward": False},
    "lambda0": {"lambda_": (0.0,)},
    "classic-adam": {"optimizer": CLASSIC["optimizer"], "lr": "classic", **CLASSIC},
    "dqn1": {"algo": "dqn1"},
}
"""Variant name → the TrainConfig fields it changes (``"classic"``: ``--classic-lr``)."""

Variant = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]


@dataclasses.dataclass
class BarrierConfig:
    """The stream-barrier comparison: stream-x, each ablation and the classic baseline on
    one task and the same seeds; figures and a table with 95% bootstrap CIs."""

    algo: tyro.conf.Positional[Algo] = "q"
    """ac, q or sarsa (td has no return to compare)."""
    env: str = "CartPole-v1"
    """Environment id, as for `streamrl train`."""
    total_steps: int | None = None
    """Steps per agent (default: the family's, as `streamrl train`)."""
    num_seeds: int = 5
    """Seeds per variant (the same seeds for every variant)."""
    seed: int = 0
    """First seed."""
    run_dir: Path | None = None
    """Directory of the comparison (default runs/barrier_<env>_<algo>_<time>); one run
    directory per variant inside. Run the command again on it to finish an interrupted
    comparison: finished variants are kept, the others resumed or started."""
    variants: tuple[Variant, ...] = tuple(VARIANTS)
    """Variants to run."""
    classic_lr: float = 1e-3
    """Step size of the sgd and classic-adam variants (ObGD's 1.0 would diverge)."""
    reps: int = 2000
    """Bootstrap resamples."""
    progress: bool = True
    """Show each variant's progress bar."""


def variant_config(cfg: BarrierConfig, name: str, run_dir: Path) -> TrainConfig:
    """The TrainConfig of variant ``name`` of the comparison ``cfg``, written to ``run_dir``."""
    changes = {k: ((cfg.classic_lr,) if v == "classic" else v) for k, v in VARIANTS[name].items()}
    changes.setdefault("algo", cfg.algo)
    return TrainConfig(
        env=cfg.env, total_steps=cfg.total_steps, num_seeds=cfg.num_seeds, seed=cfg.seed,
        run_dir=run_dir, progress=cfg.progress, tensorboard=False, **changes,
    )


def _switches(name: str, cfg: BarrierConfig) -> dict:
    from streamrl.config import flag_name

    return {flag_name(k)[2:]: (cfg.classic_lr if v == "classic" else (v[0] if isinstance(v, tuple) else v))
            for k, v in VARIANTS[name].items()}


def barrier(cfg: BarrierConfig, console=None) -> Path:
    """Run the comparison ``cfg`` and write its directory: ``<variant>/`` run directories,
    ``barrier.json`` and ``barrier.md`` (per variant: its switches, each seed's score — the
    mean return of its last 10% of episodes — and IQM, mean and median with 95%
    stratified-bootstrap CIs), ``barrier.png`` (those estimates) and ``curves.png``
    (learning curves). Returns the directory.

    Raises:
      ConfigError: td (no return to compare), fewer than 1 seed, or a variant with no
        finished episode; and whatever :func:`streamrl.run.train` raises for a variant
        except divergence (:class:`~streamrl.errors.NonFiniteError`), which is a result:
        the variant scores 0 on every seed, the paper's convention for a method with a
        diverged run, and is marked diverged in the table.
    """
    import datetime as dt

    from streamrl.agents import ALGORITHMS
    from streamrl.report import _aggregate_figure, aggregate, load_scores
    from streamrl.results import plot_runs
    from streamrl.run import train

    if not ALGORITHMS[cfg.algo].has_policy:
        raise ConfigError(f"streamrl barrier compares returns; {cfg.algo} predicts and has no return of its own: use ac, q or sarsa")
    if ALGORITHMS[cfg.algo].classic:
        raise ConfigError(f"{cfg.algo} is a classic baseline, not stream-x: run streamrl barrier q (its variants include {cfg.algo})")
    if cfg.num_seeds < 1 or cfg.reps < 1:
        raise ConfigError("--num-seeds and --reps must be >= 1")
    if not cfg.variants:
        raise ConfigError("--variants is empty; name at least one of " + ", ".join(VARIANTS))
    if "dqn1" in cfg.variants and cfg.algo not in ("q", "sarsa"):
        if cfg.variants != tuple(VARIANTS):
            raise ConfigError(f"--variants dqn1 compares action-value methods (q, sarsa); {cfg.algo} is not one: drop dqn1")
        cfg = dataclasses.replace(cfg, variants=tuple(v for v in cfg.variants if v != "dqn1"))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.run_dir or Path("runs") / f"barrier_{cfg.env.replace('/', '-').replace(':', '-')}_{cfg.algo}_{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    diverged: dict[str, str] = {}
    for name in cfg.variants:
        run = out / name
        summary = run / "summary.json"
        status = json.loads(summary.read_text()).get("status") if summary.is_file() else None
        try:
            if status == "completed":
                pass  # finished by an earlier call
            elif status == "failed" and "non-finite" in json.loads(summary.read_text()).get("message", ""):
                earlier = json.loads(summary.read_text())  # diverged in an earlier call
                raise NonFiniteError(earlier["message"], earlier.get("steps"))
            elif (run / "checkpoints").is_dir():
                train(dataclasses.replace(TrainConfig(), resume=run, progress=cfg.progress), console=console)
            else:
                if run.exists() and not any(run.iterdir()):
                    run.rmdir()
                if console is not None:
                    switches = ", ".join(f"{k}={v}" for k, v in _switches(name, cfg).items()) or "the paper's settings"
                    console.print(f"[bold]{name}[/bold]: {switches}", soft_wrap=True)
                train(variant_config(cfg, name, run), console=console)
        except NonFiniteError as exc:
            # A variant that diverges has failed the comparison; that is a result, not an error.
            diverged[name] = str(exc).removesuffix("; run stopped")
            if console is not None:
                console.print(f"[bold]{name}[/bold] diverged: {diverged[name]}", soft_wrap=True)
        runs[name] = run

    scores: dict[str, list[float]] = {}
    seeds: dict[str, list[int]] = {}
    for name, run in runs.items():
        if name in diverged:
            # The paper's convention: a method with a diverged run scores 0 (on every seed:
            # the fleet stopped when one of its members diverged).
            seeds[name] = list(range(cfg.seed, cfg.seed + cfg.num_seeds))
            scores[name] = [0.0] * cfg.num_seeds
            continue
        try:
            records = load_scores([run])
        except ConfigError:
            records = []
        if not records:
            raise ConfigError(f"variant {name} finished no episode in {run}: give it more --total-steps")
        scores[name] = [r["score"] for r in records]
        seeds[name] = [r["seed"] for r in records]
    common = min(len(v) for v in scores.values())
    matrices = {name: np.asarray(v[:common], np.float64)[:, None] for name, v in scores.items()}
    names, points, cis = aggregate(matrices, normalized=False, reps=cfg.reps)
    methods = list(matrices)
    steps = max(json.loads((runs[m] / "summary.json").read_text()).get("steps") or 0 for m in runs)
    title = f"{cfg.env}, {cfg.algo.upper()}: {common} seeds × {steps:,} steps per variant"
    _aggregate_figure(points, cis, names, methods, "mean return, last 10% of episodes", title, out / "barrier.png")
    curves = [m for m in methods if m not in diverged or (runs[m] / "episodes.csv").is_file() and _has_episode(runs[m])]
    plot_runs([runs[m] for m in curves], out / "curves.png", run_labels={str(runs[m]): m for m in curves})

    table = {
        "env": cfg.env, "algo": cfg.algo, "steps": steps, "seeds": common, "classic_lr": cfg.classic_lr,
        "metrics": names,
        "variants": {
            m: {
                "switches": _switches(m, cfg),
                "run": str(runs[m]),
                "seed_scores": dict(zip(map(str, seeds[m]), scores[m])),
                "diverged": diverged.get(m),
                **{n: {"point": float(points[m][k]), "ci95": [float(cis[m][0][k]), float(cis[m][1][k])]}
                   for k, n in enumerate(names)},
            }
            for m in methods
        },
    }
    (out / "barrier.json").write_text(json.dumps(table, indent=2) + "\n")
    lines = [
        f"# Stream barrier: {title}", "",
        "Score: each seed's mean return over its last 10% of episodes (a variant that diverged scores 0, the paper's convention); "
        "95% stratified-bootstrap CIs (rliable).", "",
        "| variant | switches | " + " | ".join(f"{n} [95% CI]" for n in names) + " | seed scores |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for m in methods:
        v = table["variants"][m]
        cells = [f"{v[n]['point']:,.1f} [{v[n]['ci95'][0]:,.1f}, {v[n]['ci95'][1]:,.1f}]" for n in names]
        switches = ", ".join(f"{k}={val}" for k, val in v["switches"].items()) or "(the paper's)"
        seed_cells = ("0 for every seed: diverged (" + diverged[m] + "), scored 0 as in the paper") if m in diverged else ", ".join(f"{s:,.1f}" for s in scores[m])
        lines.append(f"| {m} | {switches} | " + " | ".join(cells) + " | " + seed_cells + " |")
    lines += ["", "Figures: `barrier.png` (estimates), `curves.png` (learning curves)."]
    (out / "barrier.md").write_text("\n".join(lines) + "\n")
    return out


def _has_episode(run: Path) -> bool:
    from streamrl.results import read_episodes

    try:
        return len(read_episodes(run)) > 0
    except Exception:  # noqa: BLE001 - a diverged run's records may be empty or absent
        return False


def run_cli(cfg: BarrierConfig) -> int:
    """``streamrl barrier``: run, then print barrier.md."""
    from rich.console import Console

    out = barrier(cfg, console=Console(stderr=True))
    print((out / "barrier.md").read_text(), end="")
    print(f"\nwritten: {out}/ (barrier.md, barrier.json, barrier.png, curves.png, one run directory per variant)")
    return 0
