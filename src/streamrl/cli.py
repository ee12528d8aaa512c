"""The ``streamrl`` command line: ``train``, ``eval``, ``plot``, ``report`` and ``envs``.

    streamrl train                              # default task: Stream Q(λ) on CartPole-v1
    streamrl train ac --env HalfCheetah-v5 --total-steps 200000 --seed 1 --lambda 0.8
    streamrl eval runs/<run> --episodes 10 --video
    streamrl plot runs/* --out curve.png
    streamrl report runs/* --out report          # rliable: IQM etc. with bootstrap CIs
    streamrl envs                               # registered ids streamrl can train on

Errors a user can fix print one line, ``error: …``, and exit with status 2; a run stopped
by a non-finite value exits with status 1 after writing what it had; SIGINT or SIGTERM
write a checkpoint and exit with status 130 or 143 (``streamrl train --resume RUN_DIR``
continues).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

import tyro

from streamrl.config import TrainConfig
from streamrl.errors import NonFiniteError, StreamRLError, WriteError

__all__ = ["main", "PlotConfig", "EnvsConfig", "EvalConfig", "ReportConfig"]


@dataclasses.dataclass
class PlotConfig:
    """Plot learning curves of run directories (mean over seeds, 95% CI band)."""

    run_dirs: tyro.conf.Positional[tuple[Path, ...]]
    """One or more run directories."""
    out: Path | None = None
    """PNG file (default: <first run dir>/curve.png)."""
    bins: int = 50
    """Number of bins of episode end steps."""


@dataclasses.dataclass
class EvalConfig:
    """Evaluate the trained agents of a run directory: greedy (Q, SARSA) or most-probable /
    mean action (AC), normalisers frozen, nothing learned. Writes <run dir>/eval.json."""

    run_dir: tyro.conf.Positional[Path]
    """A run directory written by `streamrl train`."""
    episodes: int = 10
    """Episodes per agent (Atari: full games)."""
    agents: tuple[int, ...] | None = None
    """Fleet members to evaluate (default: all)."""
    video: bool = False
    """Record the first episode of the first evaluated agent."""
    video_file: Path | None = None
    """Video path, .mp4 or .gif (default: <run dir>/videos/eval_agent<i>.mp4)."""
    env: str | None = None
    """Evaluate on another id with the same spaces (e.g. the Gymnasium twin of an envpool: task)."""
    allow_env_import: bool = False
    """Allow the run's recorded `module:Env-v0` id to import its module (off: a run directory
    is never trusted to run code)."""


@dataclasses.dataclass
class ReportConfig:
    """Aggregate runs, seeds and tasks with rliable: IQM, mean, median and optimality gap
    with stratified-bootstrap 95% CIs, performance profiles, probability of improvement;
    human-normalised scores for Atari. Writes report.md, report.json and PNG figures."""

    run_dirs: tyro.conf.Positional[tuple[Path, ...]]
    """Run directories (any mix of algorithms, settings, seeds and tasks)."""
    out: Path = Path("report")
    """Output directory."""
    normalize: Literal["auto", "none", "human", "minmax"] = "auto"
    """auto: human-normalised when every task is an Atari game, else raw returns."""
    reps: int = 2000
    """Bootstrap resamples."""
    seed: int = 0
    """Seed of the bootstrap."""


@dataclasses.dataclass
class EnvsConfig:
    """List the environment ids streamrl can train on (optionally filtered by a substring)."""

    filter: tyro.conf.Positional[str] = ""


def _train(cfg: TrainConfig) -> int:
    from rich.console import Console

    from streamrl.run import Interrupted, train

    console = Console(stderr=True)
    try:
        path = train(cfg, console=console, handle_signals=True)
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 128 + (exc.signum or 2)  # 130 for SIGINT, 143 for SIGTERM
    console.print(_summary_lines(json.loads((path / "summary.json").read_text()), path))
    return 0


def _summary_lines(summary: dict, path: Path) -> str:
    """A few readable lines of summary.json (the file holds everything)."""
    score = summary.get("mean_return_last10pct")
    agents = summary.get("agents", 1)
    lines = [
        f"{summary['status']}: {summary['steps']:,} steps × {agents} agent{'s' * (agents > 1)} in "
        f"{summary['wall_time_s']:,.1f} s ({summary['agent_sps'] or 0:,.0f} agent-steps/s, "
        f"compile {summary.get('compile_s') or 0:.1f} s), {summary['episodes']:,} episodes",
        "mean return, last 10% of episodes: " + ("–" if score is None else f"{score:,.2f}"),
    ]
    for group in summary.get("groups", []):
        setting = ", ".join(f"{k}={v:g}" for k, v in group.items() if k not in ("seeds", "mean_return_last10pct"))
        g = group["mean_return_last10pct"]
        lines.append(f"  {setting}: {'–' if g is None else f'{g:,.2f}'} over {len(group['seeds'])} seeds")
    lines.append(f"run directory: {path} (summary.json, episodes.csv, config.json, checkpoints/)")
    return "\n".join(lines)


def _plot(cfg: PlotConfig) -> int:
    from streamrl.errors import ConfigError
    from streamrl.results import plot_runs

    if cfg.bins < 1:
        raise ConfigError(f"--bins must be >= 1, got {cfg.bins}")
    out = cfg.out or (cfg.run_dirs[0] / "curve.png")
    if Path(out).is_symlink():
        raise ConfigError(f"{out} is a symbolic link; streamrl does not write through links: remove it or pass --out")
    print(plot_runs(list(cfg.run_dirs), out, bins=cfg.bins))
    return 0


def _eval(cfg: EvalConfig) -> int:
    from streamrl.evaluate import evaluate

    out = evaluate(
        cfg.run_dir, episodes=cfg.episodes, agents=cfg.agents, video=cfg.video or cfg.video_file is not None,
        video_file=cfg.video_file, env_id=cfg.env, allow_env_import=cfg.allow_env_import,
    )
    for r in out["agents"]:
        hns = f", human-normalised {r['human_normalized']:.3f}" if "human_normalized" in r else ""
        print(
            f"agent {r['agent']} (seed {r['seed']}): mean return {r['mean_return']:,.2f} ± {r['std_return']:,.2f} "
            f"over {len(r['episodes'])} episodes{hns}"
        )
    if len(out["agents"]) > 1:
        print(f"mean over agents: {out['mean_return']:,.2f}")
    if out["video"]:
        print(f"video: {out['video']}")
    print(f"results: {cfg.run_dir / 'eval.json'}")
    return 0


def _report(cfg: ReportConfig) -> int:
    from streamrl.errors import ConfigError
    from streamrl.report import report

    if cfg.reps < 1:
        raise ConfigError(f"--reps must be >= 1, got {cfg.reps}")

    report(cfg.run_dirs, cfg.out, normalize=cfg.normalize, reps=cfg.reps, seed=cfg.seed)
    print((cfg.out / "report.md").read_text(), end="")
    print(f"\nwritten: {cfg.out}/ (report.md, report.json, aggregate.png, profiles.png)")
    return 0


def _envs(cfg: EnvsConfig) -> int:
    """Print the ids streamrl can train on: Gymnasium's registry, and the gymnax, brax and
    EnvPool ids when those extras are installed."""
    import importlib.util

    import gymnasium as gym

    from streamrl.envs.gym import register_optional_families
    from streamrl.families import SOURCES

    register_optional_families()  # MinAtar, ALE and dm_control ids, where installed
    ids = list(gym.registry)
    if importlib.util.find_spec("gymnax"):
        import gymnax

        ids += [SOURCES["gymnax"].prefix + name for name in gymnax.registered_envs]
    # brax takes ~20 s to import: only when asked for.
    prefix = SOURCES["brax"].prefix
    if importlib.util.find_spec("brax") and (not cfg.filter or cfg.filter.lower() in prefix):
        from brax import envs as brax_envs

        ids += [prefix + name for name in brax_envs._envs]
    if importlib.util.find_spec("envpool"):
        import envpool

        ids += [SOURCES["envpool"].prefix + name for name in envpool.list_all_envs()]
    for env_id in sorted(ids):
        if cfg.filter.lower() in env_id.lower():
            print(env_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``streamrl`` and ``python -m streamrl``; returns the exit status."""
    cmd = tyro.extras.subcommand_cli_from_dict(
        {"train": TrainConfig, "eval": EvalConfig, "plot": PlotConfig, "report": ReportConfig, "envs": EnvsConfig},
        prog="streamrl",
        args=sys.argv[1:] if argv is None else argv,
        description="streamrl: streaming deep reinforcement learning (stream-x) in JAX",
    )
    handler = {TrainConfig: _train, EvalConfig: _eval, PlotConfig: _plot, ReportConfig: _report, EnvsConfig: _envs}[type(cmd)]
    try:
        return handler(cmd)
    except (NonFiniteError, WriteError) as exc:  # a run that started and failed
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StreamRLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a run directory that cannot be written: not writable, a name too long, a full disk
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot write or read{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handling (start-up, eval, report)
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; use fewer agents (--num-seeds, fewer swept values) or smaller networks (--hidden)", file=sys.stderr)
        return 2
