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
step at which the episode ended, mean over seeds with a 95% Student-t confidence band.
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

__all__ = ["RunWriter", "RunLock", "new_run_path", "progress_bar", "load_episodes", "read_episodes", "load_config", "plot_runs", "jsonable", "tail_mean", "EPISODE_COLUMNS"]

EPISODE_COLUMNS = ("agent", "seed", "end_step", "episodic_return", "length")
_PACKAGES = ("streamrl", "jax", "jaxlib", "flax", "optax", "gymnasium", "numpy", "mujoco")
_FLUSH_SECONDS = 5.0
# Hyper-parameter names as the paper writes them (curve legends, report labels).
SYMBOLS = {"lambda_": "λ", "kappa": "κ", "gamma": "γ", "kappa_policy": "κ_π", "entropy_coef": "c"}


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

    @classmethod
    def create(cls, path: Path, cfg, resolved, spec) -> "RunWriter":
        """Write ``config.json`` and an empty ``episodes.csv`` into the new run directory
        ``path`` (made and locked by :class:`RunLock`)."""
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


def new_run_path(cfg) -> Path:
    """Where a new run of ``cfg`` goes: ``--run-dir``, or ``runs/<env>_<algo>_s<seed>_<time>``."""
    if cfg.run_dir is not None:
        return Path(cfg.run_dir)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe_env = cfg.env.replace("/", "-").replace(":", "-")
    return Path("runs") / f"{safe_env}_{cfg.algo}_s{cfg.seed}_{stamp}"


def check_no_links(run_dir: Path) -> None:
    """Refuse a run directory that holds a symbolic link anywhere inside: streamrl writes
    into run directories (records, summaries, eval.json, checkpoints) and must never write
    through a link to a file elsewhere.

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


def load_episodes(run_dirs: Iterable[Path]):
    """All episode records of ``run_dirs`` as one pandas DataFrame, with the run's
    ``algo``, ``env`` and ``run`` (directory) added as columns."""
    import pandas as pd

    frames = []
    for run_dir in run_dirs:
        cfg = load_config(run_dir)
        df = read_episodes(run_dir)
        df["algo"], df["env"], df["run"] = cfg["algo"], cfg["env"], str(run_dir)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


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


def plot_runs(run_dirs: list[Path], out: Path, *, bins: int = 50) -> Path:
    """Write a PNG of learning curves: one panel per env, one line per algorithm and
    setting of the swept hyper-parameters, mean over seeds (runs and fleet agents) with a
    95% Student-t band, returns binned by episode end step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = load_episodes(run_dirs)
    if df.empty:
        raise StreamRLError("no finished episodes in " + ", ".join(str(r) for r in run_dirs))
    fig, axes = plt.subplots(1, df["env"].nunique(), figsize=(6.5 * df["env"].nunique(), 4.2), squeeze=False)
    for ax, (env, env_df) in zip(axes[0], df.groupby("env")):
        edges = np.linspace(0, env_df["end_step"].max() + 1, bins + 1)
        centers = 0.5 * (edges[:-1] + edges[1:])
        swept = [c for c in env_df.columns if c not in EPISODE_COLUMNS + ("algo", "env", "run") and env_df[c].notna().any()]
        lo, hi = np.inf, -np.inf
        for key, group in env_df.groupby(["algo", *swept], dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            curves = np.stack([
                forward_fill(binned_curve(g["end_step"].to_numpy(), g["episodic_return"].to_numpy(float), edges))
                for _, g in group.groupby(["run", "agent"])
            ])
            mean, half = mean_and_ci(curves)
            n_seeds = curves.shape[0]
            setting = "".join(f" {SYMBOLS.get(n, n)}={v:g}" for n, v in zip(swept, key[1:]) if v == v)
            label = f"Stream {key[0].upper()}{setting} ({n_seeds} seed{'s' * (n_seeds > 1)})"
            (line,) = ax.plot(centers, mean, label=label)
            ax.fill_between(centers, mean - half, mean + half, alpha=0.25, color=line.get_color(), linewidth=0)
            lo, hi = min(lo, np.nanmin(mean)), max(hi, np.nanmax(mean))
        pad = 0.08 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + pad)  # the curves set the scale; wide bands (few seeds) are clipped
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("episodic return")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
