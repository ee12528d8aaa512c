"""Run directories: configuration, episode records, summary, learning curves.

A run directory holds
  * ``config.json``: the resolved configuration (algorithm, env id, seed, hyper-parameters,
    network), package versions and the git commit of streamrl;
  * ``episodes.csv``: one row per finished episode, columns ``agent, seed, end_step,
    episodic_return, length``; appended in chunks during the run, so a killed run keeps
    what it had flushed;
  * ``summary.json``: steps, wall time (s) and SPS of the environment steps, episodes, the
    mean episodic return of the last 10% of episodes, the set-up and compile time (s), and
    the run's status (completed, failed, interrupted).

``plot_runs`` draws learning curves as the paper does: episodic returns binned by the
step at which the episode ended, mean over seeds with a 95% Student-t confidence band; a
run's curve ends at the last step it reached. Methods are labelled by the CLI flags whose
values differ between the runs plotted (``Q lambda=0.8``). ``run_name`` names new run
directories so that single runs, fleets of seeds and sweeps are told apart.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import subprocess
import time
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from streamrl.errors import ConfigError, StreamRLError

__all__ = ["RunWriter", "RunLock", "new_run_path", "run_name", "member_settings", "method_labels", "run_steps", "run_curve", "learning_curves", "progress_bar", "load_episodes", "read_episodes", "load_config", "plot_runs", "jsonable", "tail_mean", "EPISODE_COLUMNS"]

EPISODE_COLUMNS = ("agent", "seed", "end_step", "episodic_return", "length")
EVAL_COLUMNS = ("step", "agent", "seed", "episode", "episodic_return", "length")
EVALUATIONS_FILE = "evaluations.csv"
_PACKAGES = ("streamrl", "jax", "jaxlib", "flax", "optax", "gymnasium", "numpy", "mujoco")
_FLUSH_SECONDS = 5.0
# Labels of methods (curve legends, report tables) name settings by their CLI flags.
# HParams fields in the order `streamrl train --help` lists their flags.
_HPARAM_FIELDS = (
    "lr", "gamma", "lambda_", "kappa", "kappa_policy", "entropy_coef", "eps_start", "eps_end", "eps_decay_steps",
    "beta2", "adam_eps", "bootstrap_truncated", "normalize_obs", "scale_reward", "target_update_every",
)
# Options outside HParams that change what is learned (run-management options are not settings).
_OPTION_SETTINGS = ("optimizer", "layer_norm", "hidden", "torso", "sparsity", "time_feature", "max_episode_steps", "life_loss")
# Hyper-parameters only some algorithms use: another algorithm's record of them is not a setting.
_USED_BY = {
    "kappa_policy": ("ac",), "entropy_coef": ("ac",),
    "eps_start": ("q", "sarsa", "dqn1"), "eps_end": ("q", "sarsa", "dqn1"), "eps_decay_steps": ("q", "sarsa", "dqn1"),
    "target_update_every": ("dqn1",),
}
# TrainConfig fields that a comma-separated list sweeps (config.SWEEPABLE's keys; not
# imported from there: plotting and reports do not import JAX).
_SWEEP_FLAGS = (
    "lr", "gamma", "lambda_", "kappa", "kappa_policy", "entropy_coef", "eps_start", "eps_end", "exploration_fraction",
    "beta2", "adam_eps", "target_update_every",
)


def tail_mean(returns) -> float | None:
    """Mean of the last 10% (at least one) of a sequence of episodic returns; None if empty.
    The score of an agent in summaries and reports."""
    if len(returns) == 0:
        return None
    return float(np.mean(np.asarray(returns, np.float64)[-max(1, math.ceil(0.1 * len(returns))):]))


def package_versions() -> dict[str, str | None]:
    """Installed versions of streamrl and the packages a result depends on."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The git commit of the streamrl source tree (with ``-dirty`` if modified), or None."""
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=src, capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def jsonable(x):
    if dataclasses.is_dataclass(x):
        return {k: jsonable(v) for k, v in dataclasses.asdict(x).items()}
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item"):
        return x.item()
    return x


class RunWriter:
    """Writes one run directory; see the module docstring for its contents."""

    def __init__(self, path: Path, members=(), swept: tuple[str, ...] = (), env_id: str | None = None):
        from streamrl import families

        self.path = path
        # Atari games with reference scores also get a human-normalised summary score
        self.game = families.human_game(env_id) if env_id else None
        self.members = tuple(members)
        self.swept = tuple(swept)
        self._pending: list[tuple] = []
        self._returns: list[list[float]] = [[] for _ in self.members]
        self._recent: list[float] = []
        self._last_flush = time.monotonic()
        self.episodes_written = 0
        self.last_evaluation: tuple[int, float] | None = None  # (step, mean return over agents)

    def add_evaluation(self, step: int, results: list[tuple[int, list[dict]]]) -> None:
        """Append one ``--eval-every`` evaluation at ``step`` to ``evaluations.csv``
        (columns ``EVAL_COLUMNS``: step, agent, seed, episode, episodic_return, length; one
        row per episode), written at once; ``results``: (agent index, episodes of
        :meth:`streamrl.evaluate.Evaluator.episodes`) per agent."""
        path = self.path / EVALUATIONS_FILE
        new = not path.exists()
        with open(path, "a", newline="") as f:
            out = csv.writer(f)
            if new:
                out.writerow(EVAL_COLUMNS)
            for agent, episodes in results:
                for k, e in enumerate(episodes):
                    out.writerow((step, agent, self.members[agent].seed, k, e["episodic_return"], e["length"]))
        means = [float(np.mean([e["episodic_return"] for e in episodes])) for _, episodes in results]
        self.last_evaluation = (step, float(np.mean(means)))

    def _drop_evaluations_after(self, step: int) -> None:
        """A resume from checkpoint ``step``: evaluations recorded after it are dropped."""
        path = self.path / EVALUATIONS_FILE
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([EVAL_COLUMNS, *kept])
        tmp.replace(path)

    @classmethod
    def create(cls, path: Path, cfg, resolved, spec, extra: dict | None = None) -> "RunWriter":
        """Write ``config.json`` and an empty ``episodes.csv`` into the new run directory
        ``path`` (made and locked by :class:`RunLock`); ``extra``: more top-level keys of
        config.json (``streamrl.Agent.save`` records ``online``)."""
        path = Path(path)
        config = {
            "algo": cfg.algo,
            "env": cfg.env,
            "seed": cfg.seed,
            "num_agents": len(resolved.members),
            "total_steps": resolved.total_steps,
            "hparams": dict(resolved.hparams._asdict()),
            "swept": list(resolved.swept),
            "members": [{"agent": i, "seed": m.seed, **m.hparams._asdict()} for i, m in enumerate(resolved.members)],
            "agent": jsonable(resolved.agent),
            "env_spec": jsonable(spec),
            "options": jsonable(cfg),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        config.update(extra or {})
        (path / "config.json").write_text(json.dumps(jsonable(config), indent=2) + "\n")
        writer = cls(path, resolved.members, resolved.swept, cfg.env)
        with open(path / "episodes.csv", "w", newline="") as f:
            csv.writer(f).writerow(writer.columns)
        return writer

    @classmethod
    def reopen(cls, path: Path, members, swept: tuple[str, ...], until_step: int, expected: int | None = None) -> "RunWriter":
        """Continue writing the run directory ``path`` (a resume from the checkpoint at
        ``until_step``): records with a later end step, and a half-written last line left by
        a kill, are dropped (atomically) and the rest counted. ``expected``: the number of
        records the checkpoint was written with; another count (a truncated or deleted
        ``episodes.csv``) raises CheckpointError before anything is rewritten."""
        path = Path(path)
        try:
            env_id = load_config(path).get("env")
        except StreamRLError:
            env_id = None
        writer = cls(path, members, swept, env_id)
        kept = []
        try:
            with open(path / "episodes.csv", newline="") as f:
                rows = list(csv.reader(f))
        except FileNotFoundError:
            rows = [list(writer.columns)]
        header, body = rows[0] if rows else list(writer.columns), rows[1:]
        if tuple(header) != writer.columns:
            from streamrl.errors import CheckpointError

            raise CheckpointError(f"{path / 'episodes.csv'} has columns {header}, expected {list(writer.columns)}")
        for row in body:
            try:
                agent, end_step, episodic_return = int(row[0]), int(row[2]), float(row[3])
                int(row[4])
            except (ValueError, IndexError):
                continue  # a line cut short by a kill
            if len(row) == len(header) and end_step <= until_step and 0 <= agent < len(writer.members):
                kept.append(row)
                writer._returns[agent].append(episodic_return)
                writer._recent.append(episodic_return)
        del writer._recent[:-100]
        if expected is not None and len(kept) != expected:
            from streamrl.errors import CheckpointError

            raise CheckpointError(
                f"{path / 'episodes.csv'} holds {len(kept)} records up to step {until_step} but the checkpoint was written "
                f"with {expected}: it was truncated, edited or deleted; restore it, or start a new run"
            )
        writer.episodes_written = len(kept)
        tmp = path / "episodes.csv.tmp"
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(writer.columns)
            out.writerows(kept)
        tmp.replace(path / "episodes.csv")
        writer._drop_evaluations_after(until_step)
        return writer

    @property
    def columns(self) -> tuple[str, ...]:
        """``EPISODE_COLUMNS`` plus one column per swept hyper-parameter."""
        return EPISODE_COLUMNS + self.swept

    def add_episode(self, *, agent: int, end_step: int, episodic_return: float, length: int) -> None:
        member = self.members[agent]
        swept = tuple(float(getattr(member.hparams, name)) for name in self.swept)
        self._pending.append((agent, member.seed, end_step, episodic_return, length) + swept)
        self._returns[agent].append(episodic_return)
        self._recent.append(episodic_return)
        del self._recent[:-100]
        self.episodes_written += 1

    def recent_return(self, n: int = 20) -> float | None:
        """Mean episodic return of the last ``n`` episodes of the fleet (None before the first)."""
        return float(np.mean(self._recent[-n:])) if self._recent else None

    def flush(self) -> None:
        if self._pending:
            with open(self.path / "episodes.csv", "a", newline="") as f:
                csv.writer(f).writerows(self._pending)
            self._pending.clear()
        self._last_flush = time.monotonic()

    def maybe_flush(self) -> bool:
        """Flush if the last flush was at least 5 s ago; returns whether it flushed."""
        if time.monotonic() - self._last_flush >= _FLUSH_SECONDS:
            self.flush()
            return True
        return False

    def finish(self, **summary) -> dict:
        """Flush the records and write ``summary.json`` (arguments of :meth:`write_summary`);
        returns the summary."""
        self.flush()
        return self.write_summary(**summary)

    def write_summary(
        self,
        *,
        steps: int,
        wall_time_s: float,
        status: str,
        message: str | None = None,
        compile_s: float | None = None,
        resumed_from: int | None = None,
    ) -> dict:
        """Write ``summary.json``, atomically; a run in progress writes ``status: running``
        with each checkpoint.

        ``steps`` and ``sps`` are per agent (environment steps of one stream); ``agent_sps``
        is the fleet's aggregate. ``mean_return_last10pct`` is the mean over agents of each
        agent's mean return over its last 10% of episodes; ``groups`` gives it per setting
        of the swept hyper-parameters (mean over seeds). ``compile_s`` is the set-up and
        compile time before the first step; ``resumed_from`` the checkpoint step this
        session started from. Returns the summary.
        """
        from streamrl.envs.atari_scores import human_normalized

        per_agent = [tail_mean(r) for r in self._returns]
        scored = [v for v in per_agent if v is not None]
        sps = steps / wall_time_s if wall_time_s > 0 else None
        summary = {
            "status": status,
            "steps": steps,
            "agents": len(self.members),
            "wall_time_s": round(wall_time_s, 3),
            "sps": None if sps is None else round(sps, 1),
            "agent_sps": None if sps is None else round(sps * len(self.members), 1),
            "episodes": sum(len(r) for r in self._returns),
            "mean_return_last10pct": float(np.mean(scored)) if scored else None,
            **(
                {"human_normalized_last10pct": human_normalized(self.game, float(np.mean(scored))) if scored else None}
                if self.game else {}
            ),
            "compile_s": None if compile_s is None else round(compile_s, 3),
        }
        if self.swept:
            groups: dict[tuple, list[int]] = {}
            for i, m in enumerate(self.members):
                groups.setdefault(tuple(float(getattr(m.hparams, n)) for n in self.swept), []).append(i)
            summary["groups"] = [
                {
                    **dict(zip(self.swept, key)),
                    "seeds": [self.members[i].seed for i in idx],
                    "mean_return_last10pct": (
                        float(np.mean([per_agent[i] for i in idx if per_agent[i] is not None]))
                        if any(per_agent[i] is not None for i in idx) else None
                    ),
                }
                for key, idx in groups.items()
            ]
        if self.last_evaluation is not None:
            summary["eval_step"], summary["eval_mean_return"] = self.last_evaluation
        if resumed_from:
            summary["resumed_from"] = resumed_from
        if message:
            summary["message"] = message
        tmp = self.path / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        tmp.replace(self.path / "summary.json")  # atomic: a reader never sees half a file
        return summary


class _Bar:
    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def update(self, step: int, episodes: int, recent: float | None) -> None:
        if self._progress is not None:
            ret = "–" if recent is None else f"{recent:,.1f}"
            self._progress.update(self._task, completed=step, episodes=episodes, ret=ret)


@contextlib.contextmanager
def progress_bar(total: int, *, enabled: bool = True, console=None, agents: int = 1, completed: int = 0):
    """A rich progress bar showing steps (per agent), SPS (per agent), the number of agents,
    episodes and the recent mean return."""
    if not enabled:
        yield _Bar(None, None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    class _SPS(TextColumn):
        def __init__(self):
            super().__init__("")

        def render(self, task):
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} SPS" if speed else "– SPS")

    columns = (
        BarColumn(),
        MofNCompleteColumn(),
        _SPS(),
        *((TextColumn(f"× {agents} agents"),) if agents > 1 else ()),
        TextColumn("episodes {task.fields[episodes]}"),
        TextColumn("return(20) {task.fields[ret]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, refresh_per_second=4) as progress:
        task = progress.add_task("train", total=total, completed=completed, episodes=0, ret="–")
        yield _Bar(progress, task)


def flag(field: str) -> str:
    """The CLI flag (without ``--``) of a TrainConfig or HParams field: ``lambda_`` →
    ``lambda``, ``kappa_policy`` → ``kappa-policy``."""
    return "lambda" if field == "lambda_" else field.replace("_", "-")


def _num(value) -> str:
    return f"{float(value):.4g}"


_MAX_SWEEP_NAME = 40


def run_name(cfg, stamp: str) -> str:
    """The directory name of a new run: ``<env>_<algo>_s<seed>[-<last seed>][_<sweep>]_<stamp>``.

    One agent: ``CartPole-v1_q_s0_<stamp>``; a fleet of seeds 0..3:
    ``CartPole-v1_q_s0-3_<stamp>``; a sweep adds each swept flag with its values,
    ``CartPole-v1_q_s0-3_lambda0,0.8_kappa1,2_<stamp>``, or, when that would be longer than
    40 characters, only the flags: ``..._sweep-lambda-kappa_<stamp>``. Environment ids
    with ``/`` or ``:`` (``MinAtar/Breakout-v1``, ``gymnax:CartPole-v1``) get ``-``."""
    safe_env = cfg.env.replace("/", "-").replace(":", "-")
    seeds = f"s{cfg.seed}" if cfg.num_seeds <= 1 else f"s{cfg.seed}-{cfg.seed + cfg.num_seeds - 1}"
    swept = []
    for field in _SWEEP_FLAGS:
        values = getattr(cfg, field, None)
        if values is not None and len(values) > 1:
            swept.append((flag(field), ",".join(f"{float(v):g}" for v in values)))
    parts = [safe_env, cfg.algo, seeds]
    if swept:
        full = "_".join(name + values for name, values in swept)
        parts.append(full if len(full) <= _MAX_SWEEP_NAME else "sweep-" + "-".join(name for name, _ in swept))
    return "_".join(parts + [stamp])


def new_run_path(cfg) -> Path:
    """Where a new run of ``cfg`` goes: ``--run-dir``, or ``runs/<name>`` (:func:`run_name`)."""
    if cfg.run_dir is not None:
        return Path(cfg.run_dir)
    return Path("runs") / run_name(cfg, dt.datetime.now().strftime("%Y%m%d-%H%M%S"))


def check_no_links(run_dir: Path) -> None:
    """Refuse a run directory that holds a symbolic link anywhere inside: streamrl writes
    into run directories (records, summaries, eval.json, checkpoints) and must never write
    through a link to a file elsewhere. The inside of ``wandb/`` (Weights & Biases' own
    files, with its own links) is not streamrl's and is not looked into.

    Raises:
      ConfigError: names the first link found.
    """
    import os

    from streamrl.errors import ConfigError

    for root, dirs, files in os.walk(run_dir, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            if path.is_symlink():
                raise ConfigError(f"{path} is a symbolic link; streamrl does not write through links in a run directory: remove it")
        if Path(root) == Path(run_dir) and "wandb" in dirs:
            dirs.remove("wandb")  # Weights & Biases' own files (--wandb; it links its logs): streamrl writes nothing there


class RunLock:
    """An exclusive lock on a run directory while a process writes it (``fcntl.flock`` on
    the directory itself, so taking it writes nothing; released when the process ends,
    however it ends).

    ``RunLock(path, new=True)`` makes the directory if needed, takes the lock, then refuses
    a directory that already holds anything else (a finished run, another program's files):
    a new run never writes over another. ``new=False`` (resume) only takes the lock.

    Raises:
      ConfigError: the directory is a file, cannot be made, holds files (new runs), or
        another process holds the lock; one line each, and nothing is written.
    """

    def __init__(self, path: Path, *, new: bool):
        import fcntl
        import os

        from streamrl.errors import ConfigError

        self.path = path = Path(path)
        self._fd = None
        try:
            exists = path.exists()
        except OSError as exc:  # a name too long, …
            raise ConfigError(f"cannot make run directory {path}: {exc.strerror}; choose another --run-dir") from None
        self.created = not exists
        if exists and not path.is_dir():
            raise ConfigError(f"run directory {path} is a file; choose another --run-dir")
        if new:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot make run directory {path}: {exc.strerror}; choose another --run-dir") from None
        if not path.is_dir():
            raise ConfigError(f"{path} is not a run directory (it does not exist)")
        try:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise ConfigError(f"cannot open run directory {path}: {exc.strerror}; choose another --run-dir") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise ConfigError(f"another streamrl process is writing {path}; wait for it to finish or choose another --run-dir") from None
        if new:
            others = sorted(p.name for p in path.iterdir())
            if others:
                self.release()
                shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
                raise ConfigError(
                    f"{path} already holds files ({shown}); continue that run with --resume {path}, "
                    "or choose another --run-dir"
                )

    def discard(self) -> None:
        """Remove the directory if this lock made it and it is still empty (a run refused
        before it wrote anything)."""
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def release(self) -> None:
        import os

        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def load_config(run_dir: Path) -> dict:
    """The whole ``config.json`` of a run directory (the one place that reads it).

    Raises:
      ConfigError: no ``config.json`` (not a run directory), or one that is not a JSON object.
    """
    from streamrl.errors import ConfigError

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json); pass a directory `streamrl train` wrote")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is damaged (not a JSON object)")
    return config


def member_settings(config: dict, member: dict) -> dict[str, str]:
    """The settings of one agent of a run (its ``config.json`` and its entry of
    ``members``) as ``{flag: value}``, named by the CLI flags a user typed: ``lambda``,
    ``kappa-policy``, ``exploration-fraction`` (the fraction, not the resolved decay steps;
    ``default`` when the family's default was used), ``truncation``, ``normalize-obs``,
    ``optimizer``, ``hidden``, …. Hyper-parameters the algorithm does not use are left out
    (ε for AC, the policy's κ for Q)."""
    algo = config.get("algo")
    options = config.get("options") if isinstance(config.get("options"), dict) else None
    out: dict[str, str] = {}
    for field in _HPARAM_FIELDS:
        if field not in member or (field in _USED_BY and algo not in _USED_BY[field]):
            continue
        value = member[field]
        if field in ("beta2", "adam_eps") and options is not None and options.get("optimizer", "adaptive") not in ("adaptive", "adam"):
            continue
        if field == "eps_decay_steps":
            steps = (options or {}).get("schedule_steps") or config.get("total_steps")
            if options is not None and options.get("exploration_fraction") is None:
                out["exploration-fraction"] = "default"
            elif steps:
                out["exploration-fraction"] = f"{float(value) / float(steps):.3g}"
            else:
                out["eps-decay-steps"] = _num(value)
        elif field == "bootstrap_truncated":
            out["truncation"] = "bootstrap" if float(value) else "terminate"
        elif field in ("normalize_obs", "scale_reward"):
            out[flag(field)] = "on" if float(value) else "off"
        else:
            out[flag(field)] = _num(value)
    for name in _OPTION_SETTINGS:
        if options is not None and name in options:
            value = options[name]
            if value is None:
                value = "default"
            elif isinstance(value, (list, tuple)):
                value = "x".join(str(v) for v in value)
            elif isinstance(value, float):
                value = _num(value)
            out[flag(name)] = str(value)
    return out


def method_labels(methods: list[tuple[str, dict[str, str]]]) -> list[str]:
    """A label per ``(algo, settings)``: the algorithm (``Q``, ``AC``) and each setting
    that differs between the methods compared, as ``flag=value``
    (``Q lambda=0.8 kappa=2``). A setting counts as differing when the methods that have it
    (use it) do not all share one value."""
    names: list[str] = []
    for _, settings in methods:
        names += [n for n in settings if n not in names]
    varying = [n for n in names if len({settings[n] for _, settings in methods if n in settings}) > 1]
    labels = []
    for algo, settings in methods:
        shown = " ".join(f"{n}={settings[n]}" for n in varying if n in settings)
        labels.append(f"{algo.upper()}{' ' + shown if shown else ''}")
    return labels


def run_steps(run_dir: Path, config: dict | None = None) -> int | None:
    """Environment steps per agent a run reached: ``summary.json``'s ``steps`` (a run
    stopped early counts what it ran), else ``config.json``'s ``total_steps``; None if
    neither says."""
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):  # no readable summary: the config's
        steps = json.loads((Path(run_dir) / "summary.json").read_text()).get("steps")
        if steps is not None:
            return int(steps)
    config = load_config(run_dir) if config is None else config
    steps = config.get("total_steps")
    return None if steps is None else int(steps)


def load_episodes(run_dirs: Iterable[Path], run_labels: dict[str, str] | None = None):
    """All episode records of ``run_dirs`` as one pandas DataFrame, with the run's
    ``algo``, ``env``, ``run`` (directory), ``method`` (the label of the agent's algorithm
    and settings, :func:`method_labels` over every agent of ``run_dirs``; or, given
    ``run_labels`` (``str(run_dir)`` → label), the run's label for all its agents) and
    ``steps`` (the run's steps per agent, :func:`run_steps`) added as columns."""
    import pandas as pd

    frames, keys = [], []
    for run_dir in run_dirs:
        cfg = load_config(run_dir)
        df = read_episodes(run_dir)
        df["algo"], df["env"], df["run"] = cfg["algo"], cfg["env"], str(run_dir)
        steps = run_steps(run_dir, cfg)
        df["steps"] = int(df["end_step"].max()) if steps is None and len(df) else (steps or 0)
        members = {int(m["agent"]): member_settings(cfg, m) for m in cfg.get("members", [])}
        key = {a: (cfg["algo"], tuple(members.get(a, {}).items())) for a in set(members) | set(df["agent"].unique())}
        if run_labels is not None:  # the caller names each run (streamrl barrier: the variant)
            key = {a: (cfg["algo"], (("label", run_labels[str(run_dir)]),)) for a in key}
        df["_key"] = df["agent"].map(lambda a: key[a])
        keys += [(cfg["env"], k) for k in key.values()]
        frames.append(df)
    unique = list(dict.fromkeys(k for _, k in keys))
    if run_labels is not None:
        labels = {k: dict(k[1])["label"] for k in unique}
    else:
        labels = dict(zip(unique, method_labels([(algo, dict(items)) for algo, items in unique])))
    df = pd.concat(frames, ignore_index=True)
    df["method"] = df.pop("_key").map(labels) if len(df) else pd.Series(dtype=str)
    agents: dict[tuple[str, str], int] = {}
    for env, k in keys:
        agents[(env, labels[k])] = agents.get((env, labels[k]), 0) + 1
    df.attrs["agents"] = agents  # (env, method) → agents trained, with or without a finished episode
    return df


def read_episodes(run_dir: Path):
    """The episode records of one run directory (``episodes.csv``, columns
    ``EPISODE_COLUMNS`` then one per swept hyper-parameter) as a pandas DataFrame; the one
    reader of that file outside :class:`RunWriter`. A last line cut short (a run being
    written, or killed) is dropped.

    Raises:
      ConfigError: the file is missing, not UTF-8 CSV, or lacks a column or a number where
        one is required (one line naming the file).
    """
    import pandas as pd

    path = Path(run_dir) / "episodes.csv"
    check_no_links(Path(run_dir))
    try:
        df = pd.read_csv(path, on_bad_lines="skip", encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing; pass directories `streamrl train` wrote") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(f"{path} is not a readable episode record ({type(exc).__name__}); restore it from a copy") from None
    missing = [c for c in EPISODE_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path} lacks the column(s) {', '.join(missing)}; it is damaged: restore it from a copy")
    numbers = df[list(EPISODE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    complete = numbers.notna().all(axis=1)
    bad = np.flatnonzero(~complete.to_numpy())
    if len(bad) > 1 or (len(bad) == 1 and bad[0] != len(df) - 1):
        raise ConfigError(f"{path} has {len(bad)} damaged record(s) (the first on line {bad[0] + 2}); restore it from a copy")
    df = df[complete].copy()
    df[list(EPISODE_COLUMNS)] = numbers[complete]
    return df.astype({"agent": int, "seed": int, "end_step": int, "length": int})


def binned_curve(end_steps: np.ndarray, returns: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean return of the episodes ending in each bin [edges[i], edges[i+1]) (NaN if none)."""
    idx = np.clip(np.searchsorted(edges, end_steps, side="right") - 1, 0, len(edges) - 2)
    sums = np.bincount(idx, weights=returns, minlength=len(edges) - 1)
    counts = np.bincount(idx, minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def forward_fill(curve: np.ndarray) -> np.ndarray:
    """Carry the last non-NaN value into later NaN bins (a bin no episode ended in shows the
    return of the agent's last finished episode); leading NaNs stay."""
    idx = np.where(np.isnan(curve), 0, np.arange(len(curve)))
    np.maximum.accumulate(idx, out=idx)
    out = curve[idx]
    out[np.isnan(curve) & (np.cumsum(~np.isnan(curve)) == 0)] = np.nan
    return out


def run_curve(end_steps: np.ndarray, returns: np.ndarray, edges: np.ndarray, last_step: int) -> np.ndarray:
    """One agent's learning curve on the bins ``edges``: the mean return of the episodes
    ending in each bin, carried forward over bins no episode ended in (:func:`forward_fill`)
    up to the bin holding ``last_step``, the last step its run reached; NaN beyond it, so
    a shorter run's curve ends where the run did instead of running flat to the end."""
    curve = forward_fill(binned_curve(end_steps, returns, edges))
    curve[edges[:-1] > last_step] = np.nan
    return curve


def mean_and_ci(curves: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (rows) and the half-width of a Student-t confidence interval
    (0 where fewer than two seeds have a value)."""
    from scipy import stats

    n = np.sum(~np.isnan(curves), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bins no episode ended in: NaN
        mean = np.nanmean(curves, axis=0) if curves.size else np.array([])
        sd = np.nanstd(curves, axis=0, ddof=1) if curves.shape[0] > 1 else np.zeros(curves.shape[1])
        t = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1))
        half = np.where(n > 1, t * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, half


def _steps_text(steps) -> str:
    lo, hi = min(steps), max(steps)
    return f"{hi:,} steps per run" if lo == hi else f"{lo:,}–{hi:,} steps per run (unequal budgets)"


def learning_curves(env_df, bins: int = 50):
    """The curves :func:`plot_runs` draws for one task's episodes (a :func:`load_episodes`
    frame of one env): ``(edges, {method: (curves [agents, bins], mean, half)})``; each
    agent's curve ends at the last step its run reached (:func:`run_curve`)."""
    last = int(max(env_df["steps"].max(), env_df["end_step"].max()))
    edges = np.linspace(0, last + 1, bins + 1)
    out = {}
    for method, group in env_df.groupby("method", sort=False):
        curves = np.stack([
            run_curve(g["end_step"].to_numpy(), g["episodic_return"].to_numpy(float), edges,
                      int(max(g["steps"].iloc[0], g["end_step"].max())))
            for _, g in group.groupby(["run", "agent"])
        ])
        out[method] = (curves, *mean_and_ci(curves))
    return edges, out


def curve_ylim(curves) -> tuple[tuple[float, float], bool]:
    """The y-range of a panel of :func:`learning_curves` values ``(agents, mean, half)``:
    every mean and its whole 95% band, except where a band (a few seeds give wide t
    intervals) reaches beyond the range of the seeds' own curves: there it is cut at that
    range. Returns ``((low, high), whether a band was cut)``, with 5% padding."""
    agents = np.concatenate([a.ravel() for a, _, _ in curves])
    means = np.concatenate([m for _, m, _ in curves])
    lower = np.concatenate([m - h for _, m, h in curves])
    upper = np.concatenate([m + h for _, m, h in curves])
    if not np.isfinite(means).any():
        return (-1.0, 1.0), False
    data_lo, data_hi = np.nanmin(agents), np.nanmax(agents)
    band_lo, band_hi = np.nanmin(lower), np.nanmax(upper)
    lo, hi = max(band_lo, data_lo), min(band_hi, data_hi)
    lo, hi = min(lo, np.nanmin(means)), max(hi, np.nanmax(means))
    pad = 0.05 * (hi - lo) if hi > lo else max(1.0, abs(hi) * 0.1)
    return (float(lo - pad), float(hi + pad)), bool(band_lo < lo or band_hi > hi)


def plot_runs(run_dirs: list[Path], out: Path, *, bins: int = 50, run_labels: dict[str, str] | None = None) -> Path:
    """Write a PNG of learning curves: one panel per env (titled with the env and the steps
    per run), one line per method (algorithm and the settings that differ between the runs,
    by their CLI flags; or the caller's ``run_labels``, ``str(run_dir)`` → label), mean over
    seeds (runs and fleet agents) with a 95% Student-t band, returns binned by episode end
    step; a curve ends at the last step its runs reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from streamrl.predict import is_prediction_run, plot_prediction

    if any(is_prediction_run(r) for r in run_dirs):  # `streamrl predict` runs: prediction against the return
        return plot_prediction(run_dirs, out)
    df = load_episodes(run_dirs, run_labels)
    if df.empty:
        raise StreamRLError("no finished episodes in " + ", ".join(str(r) for r in run_dirs))
    envs = sorted(df["env"].unique())
    methods = list(dict.fromkeys(df.sort_values(["algo", "method"])["method"]))
    palette = plt.get_cmap("tab10")
    colors = {m: palette(i % 10) for i, m in enumerate(methods)}
    n = len(envs)
    fig, axes = plt.subplots(1, n, figsize=(6.4 * n, 5.2), squeeze=False)
    for ax, env in zip(axes[0], envs):
        env_df = df[df["env"] == env]
        edges, curves = learning_curves(env_df, bins)
        centers = 0.5 * (edges[:-1] + edges[1:])
        for method in sorted(curves, key=methods.index):
            agents, mean, half = curves[method]
            n_seeds = agents.shape[0]
            trained = df.attrs.get("agents", {}).get((env, method), n_seeds)
            seeds = f"{n_seeds} seed{'s' * (n_seeds > 1)}" if trained <= n_seeds else f"{n_seeds} of {trained} seeds finished an episode"
            color = colors[method]
            ax.plot(centers, mean, color=color, linewidth=1.8, label=f"{method} ({seeds})")
            ax.fill_between(centers, mean - half, mean + half, alpha=0.25 if len(curves) < 3 else 0.13, color=color, linewidth=0)
        (lo, hi), clipped = curve_ylim(curves.values())
        ax.set_ylim(lo, hi)
        legend_title = "line: mean over seeds; shaded: 95% CI over seeds (Student t)"
        if clipped:
            legend_title += ",\nclipped to the range of the seeds' own curves"
        ax.set_xlim(0, edges[-1])
        ax.set_title(f"{env}: {_steps_text(env_df.groupby('run')['steps'].first().tolist())}")
        ax.set_xlabel(f"environment steps (returns binned by episode end, {bins} bins of {edges[1]:,.0f} steps)")
        ax.set_ylabel("episodic return, mean over seeds")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1 if len(curves) < 4 else 2,
                  title=legend_title, frameon=False)
    return save_figure(fig, out, dpi=120)


def save_figure(fig, out: Path, *, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it to the PNG ``out`` (making its folder) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out
