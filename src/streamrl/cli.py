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

from streamrl.config import TrainConfig, flag_name
from streamrl.errors import NonFiniteError, StreamRLError, WriteError
from streamrl.barrier import BarrierConfig, run_cli as _barrier
from streamrl.predict import PredictConfig, run_cli as _predict
from streamrl.sweep import SweepConfig, run_cli as _sweep

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
    video_frames: int = 5000
    """The video stops after this many frames (a longer episode is cut, and the output says so)."""
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
    """List the environment ids streamrl can train on, grouped by family, with the pip
    extra each family needs (optionally filtered by a substring of the id)."""

    filter: tyro.conf.Positional[str] = ""
    """Show only ids containing this text (case-insensitive); `brax:` lists brax's ids."""
    all: bool = False
    """Print every registered id, one per line, ungrouped, including those streamrl cannot train on."""


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
    if summary.get("eval_step") is not None:
        lines.append(
            f"evaluation at step {summary['eval_step']:,} (evaluation policy, frozen normalisers): "
            f"mean return {summary['eval_mean_return']:,.2f} (evaluations.csv)"
        )
    for group in summary.get("groups", []):
        setting = ", ".join(
            f"{flag_name(k)[2:]}={v:g}" for k, v in group.items() if k not in ("seeds", "mean_return_last10pct")
        )
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
        max_video_frames=cfg.video_frames,
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
        frames = out["video_frames"]
        cut = (
            f" (cut at {frames['frames']:,} of the episode's {frames['episode_frames']:,} frames; raise --video-frames)"
            if frames["cut"] else ""
        )
        print(f"video: {out['video']}{cut}")
    print(f"results: {cfg.run_dir / 'eval.json'}")
    return 0


def _report(cfg: ReportConfig) -> int:
    from streamrl.errors import ConfigError
    from streamrl.report import report

    if cfg.reps < 1:
        raise ConfigError(f"--reps must be >= 1, got {cfg.reps}")

    result = report(cfg.run_dirs, cfg.out, normalize=cfg.normalize, reps=cfg.reps, seed=cfg.seed)
    print((cfg.out / "report.md").read_text(), end="")
    print(f"\nwritten: {cfg.out}/ ({', '.join(['report.md', 'report.json', *result['figures']])})")
    return 0


def _envs(cfg: EnvsConfig) -> int:
    """Print the ids streamrl can train on, grouped by family: a table of families (ids,
    source, pip extra, installed) then each family's ids. Ids it cannot train on are left
    out without making any environment (:func:`streamrl.families.registered_ids`); brax
    (slow to import) is asked only without a filter or with one that matches ``brax:``."""
    from streamrl import families

    lines: list[str] = []
    emit = lines.append

    def write() -> int:
        """Print the lines; a reader that stops early (`streamrl envs | head`) is not an error."""
        try:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0

    wanted = cfg.filter.lower()
    sources = [s for s in families.SOURCES if s != "brax" or not wanted or wanted in families.SOURCES[s].prefix]
    rows = families.registered_ids(sources)
    if cfg.all:
        for env_id in sorted(env_id for _, _, env_id, _ in rows if wanted in env_id.lower()):
            emit(env_id)
        return write()
    listed = [(f, s, env_id) for f, s, env_id, ok in rows if ok and wanted in env_id.lower()]
    hidden = sum(1 for _, _, env_id, ok in rows if not ok and wanted in env_id.lower())
    groups: dict[tuple[str, str], list[str]] = {}
    for family, source, env_id in listed:
        groups.setdefault((family.name, source), []).append(env_id)
    table = []  # (family title, source, ids, extra, installed)
    for family in families.FAMILIES.values():
        for source in families.SOURCES:
            extra = families.extra_for(family, source)
            n = len(groups.get((family.name, source), []))
            if n:
                table.append((family.title, source, str(n), extra or "-", "yes"))
            elif source == "gymnasium" and not wanted and extra and not families.extra_installed(extra):
                table.append((family.title, source, "0", extra, f"no: pip install '{extra}'"))
    for source, spec in families.SOURCES.items():
        extra = families.extra_for(families.FAMILIES["other"], source)
        if extra is None:
            continue
        if not families.extra_installed(extra):
            table.append((f"{source} ids", source, "0", extra, f"no: pip install '{extra}'"))
        elif source not in sources:
            table.append((f"{source} ids", source, "?", extra, f"yes (slow to import: `streamrl envs {spec.prefix}` lists them)"))
    what = f"containing {cfg.filter!r} " if cfg.filter else ""
    emit(f"{len(listed):,} environment ids {what}streamrl can train on, by family.")
    emit(f"{hidden:,} registered ids it cannot train on are left out; `streamrl envs --all` lists every registered id.")
    head = ("family", "source", "ids", "pip extra", "installed")
    widths = [max(len(r[k]) for r in [head, *table]) for k in range(4)]
    emit("")
    for r in [head, *table]:
        emit(f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}")
    for family in families.FAMILIES.values():
        ids = sorted(i for (name, _), group in groups.items() if name == family.name for i in group)
        if ids:
            emit("")
            emit(f"{family.title} ({len(ids):,} id{'s' * (len(ids) != 1)})")
            for env_id in ids:
                emit(f"  {env_id}")
    return write()


def _expand_config_file(args: list[str]) -> tuple[list[str], Path | None]:
    """``streamrl train|sweep --config FILE [flags]``: the file's options put before the
    command line's flags (so those win), and the file. Other commands are returned unchanged."""
    from streamrl.agents import ALGORITHMS
    from streamrl.config import config_file_args

    if not args or args[0] not in ("train", "sweep"):
        return args, None
    rest, path = [], None
    i = 1
    while i < len(args):
        if args[i] == "--config" and i + 1 < len(args):
            path, i = Path(args[i + 1]), i + 2
        elif args[i].startswith("--config="):
            path, i = Path(args[i].split("=", 1)[1]), i + 1
        else:
            rest.append(args[i])
            i += 1
    if path is None or "-h" in rest or "--help" in rest:
        return args, None
    if args[0] == "sweep":
        from streamrl.sweep import sweep_file_args

        from_file = sweep_file_args(path)
        is_algo = lambda a: all(part.strip() in ALGORITHMS for part in a.split(",") if part.strip())  # noqa: E731
    else:
        from_file = config_file_args(path)
        is_algo = lambda a: a in ALGORITHMS  # noqa: E731
    named = any(is_algo(a) and (i == 0 or not rest[i - 1].startswith("-")) for i, a in enumerate(rest))
    if from_file and is_algo(from_file[0]) and named:
        from_file = from_file[1:]  # the command line names the algorithm
    return [args[0], *from_file, *rest], path


COMPILATION_CACHE_ENV = "STREAMRL_COMPILATION_CACHE"


def _use_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache for this process, so that a second run of
    the same program (same algorithm, network, fleet size and environment) loads the
    compiled step instead of compiling it again (see docs/benchmarks.md, "Start-up").
    The directory is ``$STREAMRL_COMPILATION_CACHE``, else
    ``$XDG_CACHE_HOME/streamrl/jax`` (``~/.cache/streamrl/jax``); ``STREAMRL_COMPILATION_CACHE=off``
    turns it off, and a ``JAX_COMPILATION_CACHE_DIR`` the user set is left to JAX. Returns
    the directory used, or None."""
    import os

    choice = os.environ.get(COMPILATION_CACHE_ENV, "")
    if choice.lower() in ("off", "0", "none", "false") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = Path(choice) if choice else base / "streamrl" / "jax"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile as before
    import warnings

    import jax

    # A cache entry that cannot be written (a full disk) only costs the next run a compile.
    warnings.filterwarnings("ignore", message="Error writing persistent compilation cache entry")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``streamrl`` and ``python -m streamrl``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-V"]):
        from streamrl import __version__

        print(f"streamrl {__version__}")
        return 0
    try:
        args, config_file = _expand_config_file(args)
    except StreamRLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cmd = tyro.extras.subcommand_cli_from_dict(
        {"train": TrainConfig, "eval": EvalConfig, "plot": PlotConfig, "report": ReportConfig, "envs": EnvsConfig, "predict": PredictConfig,
         "barrier": BarrierConfig, "sweep": SweepConfig},
        prog="streamrl",
        args=args,
        description="streamrl: streaming deep reinforcement learning (stream-x) in JAX (streamrl --version)",
    )
    if config_file is not None:
        cmd = dataclasses.replace(cmd, config=config_file)
    handler = {TrainConfig: _train, EvalConfig: _eval, PlotConfig: _plot, ReportConfig: _report, EnvsConfig: _envs, PredictConfig: _predict,
               BarrierConfig: _barrier, SweepConfig: _sweep}[type(cmd)]
    if handler in (_train, _eval, _barrier):
        _use_compilation_cache()
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
