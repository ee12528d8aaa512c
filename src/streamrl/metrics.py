"""Live metrics: TensorBoard scalars per agent, written with tensorboardX.

The drivers hand over finished episodes and, every few seconds (host) or every chunk
(device), the agents' :class:`~streamrl.agents.Diagnostics` summed since the last read; only
then are events written, a handful per agent, so the learning loop never writes an event
itself (every episode as its own event cost ~4% of the loop on CartPole, measured). Tags, for
agent i (``<run dir>/tb``), at x = the environment step of the write::

    agent<i>/episodic_return, agent<i>/episode_length     mean over the episodes that ended
                                                          since the last write
    agent<i>/episodes                                     how many they were
    agent<i>/abs_td_error_mean, agent<i>/abs_td_error_max, agent<i>/td_error_rms
    agent<i>/step_size           mean ObGD effective step size α (value / Q / critic)
    agent<i>/policy_step_size    the same for Stream AC's actor
    agent<i>/overshooting_rate   share of checked updates with sign(δ′·δ) = −1
    sps                          environment steps per second of one stream

    agent<i>/eval_return, eval_return                    --eval-every: mean return of the
                                                          evaluation episodes (per agent, over agents)

View with ``tensorboard --logdir <run dir>/tb`` (``pip install 'streamrl[tensorboard]'``).
With ``--wandb`` the same scalars go to Weights & Biases, against ``env_step``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["MetricsLog", "TENSORBOARD_DIR", "summarize_diagnostics"]

TENSORBOARD_DIR = "tb"


def summarize_diagnostics(diag) -> dict[str, np.ndarray]:
    """Per-agent means of a :class:`~streamrl.agents.Diagnostics` of NumPy [N] sums: the
    scalar name → [N] float64 (NaN where nothing was summed)."""
    count = np.asarray(diag.count, np.float64)
    checks = np.asarray(diag.overshoot_checks, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = lambda x: np.where(count > 0, np.asarray(x, np.float64) / count, np.nan)  # noqa: E731
        return {
            "abs_td_error_mean": per(diag.abs_td_sum),
            "abs_td_error_max": np.where(count > 0, np.asarray(diag.abs_td_max, np.float64), np.nan),
            "td_error_rms": np.sqrt(per(diag.td_sq_sum)),
            "step_size": per(diag.step_size_sum),
            "policy_step_size": per(diag.policy_step_size_sum),
            "overshooting_rate": np.where(checks > 0, np.asarray(diag.overshoots, np.float64) / checks, np.nan),
        }


class MetricsLog:
    """Live metrics of a run, one tag family per agent, to TensorBoard (``<run dir>/tb``)
    and/or Weights & Biases (``--wandb``; the run's options as its config, the run
    directory's name as its name; ``WANDB_MODE=offline`` writes ``<run dir>/wandb`` without
    network, ``wandb sync`` uploads it later).

    Raises:
      MissingExtraError: ``wandb=True`` without the ``wandb`` package (``pip install 'streamrl[wandb]'``).
    """

    def __init__(self, run_dir: Path, members, *, tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "streamrl", config: dict | None = None):
        self.n = len(members)
        self._sinks = []
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._sinks.append(_TensorBoard(SummaryWriter(logdir=str(Path(run_dir) / TENSORBOARD_DIR), flush_secs=30)))
        if wandb:
            self._sinks.append(_WandB(Path(run_dir), wandb_project, config or {}))
        self._episodes = np.zeros((self.n, 3))  # per agent: count, Σ return, Σ length

    def episodes(self, records) -> None:
        """``records``: iterable of (agent, end_step, episodic_return, length); summed until
        the next :meth:`diagnostics`."""
        for agent, _, episodic_return, length in records:
            self._episodes[agent] += (1.0, episodic_return, length)

    def diagnostics(self, step: int, diag, sps: float | None) -> None:
        """Write the episodes since the last call and the agents' diagnostics summed since
        then, at environment step ``step``."""
        scalars: dict[str, float] = {}
        for i, (count, total, length) in enumerate(self._episodes):
            if count:
                scalars[f"agent{i}/episodic_return"] = total / count
                scalars[f"agent{i}/episode_length"] = length / count
                scalars[f"agent{i}/episodes"] = count
        self._episodes[:] = 0.0
        for name, values in summarize_diagnostics(diag).items():
            for i, value in enumerate(values):
                if np.isfinite(value) and not (name == "policy_step_size" and value == 0):
                    scalars[f"agent{i}/{name}"] = float(value)
        if sps is not None:
            scalars["sps"] = float(sps)
        self._write(scalars, step)

    def evaluations(self, step: int, results) -> None:
        """``--eval-every``: ``agent<i>/eval_return`` (mean over the evaluation's episodes)
        and ``eval_return`` (mean over agents) at ``step``; ``results``: (agent, episodes)."""
        means = {i: float(np.mean([e["episodic_return"] for e in episodes])) for i, episodes in results}
        scalars = {f"agent{i}/eval_return": m for i, m in means.items()}
        scalars["eval_return"] = float(np.mean(list(means.values())))
        self._write(scalars, step)

    def _write(self, scalars: dict[str, float], step: int) -> None:
        for sink in self._sinks:
            sink.write({k: float(v) for k, v in scalars.items()}, int(step))

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()


class _TensorBoard:
    def __init__(self, writer):
        self._writer = writer

    def write(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self._writer.close()


class _WandB:
    def __init__(self, run_dir: Path, project: str, config: dict):
        try:
            import wandb
        except ImportError:
            from streamrl.errors import MissingExtraError

            raise MissingExtraError("--wandb needs Weights & Biases: pip install 'streamrl[wandb]'") from None
        self._run = wandb.init(project=project, name=run_dir.name, dir=str(run_dir), config=config,
                               resume="allow", id=_wandb_id(run_dir))
        self._run.define_metric("*", step_metric="env_step")

    def write(self, scalars: dict[str, float], step: int) -> None:
        self._run.log({**scalars, "env_step": step})

    def close(self) -> None:
        self._run.finish()


def _wandb_id(run_dir: Path) -> str:
    """The W&B run id of a run directory: stable, so a ``--resume`` continues the same W&B run."""
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
