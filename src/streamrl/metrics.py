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

View with ``tensorboard --logdir <run dir>/tb`` (``pip install tensorboard``).
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
    """TensorBoard event file of a run (``<run dir>/tb``), one tag family per agent."""

    def __init__(self, run_dir: Path, members):
        from tensorboardX import SummaryWriter

        self.n = len(members)
        self._writer = SummaryWriter(logdir=str(Path(run_dir) / TENSORBOARD_DIR), flush_secs=30)
        self._episodes = np.zeros((self.n, 3))  # per agent: count, Σ return, Σ length

    def episodes(self, records) -> None:
        """``records``: iterable of (agent, end_step, episodic_return, length); summed until
        the next :meth:`diagnostics`."""
        for agent, _, episodic_return, length in records:
            self._episodes[agent] += (1.0, episodic_return, length)

    def diagnostics(self, step: int, diag, sps: float | None) -> None:
        """Write the episodes since the last call and the agents' diagnostics summed since
        then, at environment step ``step``."""
        for i, (count, total, length) in enumerate(self._episodes):
            if count:
                self._writer.add_scalar(f"agent{i}/episodic_return", total / count, int(step))
                self._writer.add_scalar(f"agent{i}/episode_length", length / count, int(step))
                self._writer.add_scalar(f"agent{i}/episodes", count, int(step))
        self._episodes[:] = 0.0
        for name, values in summarize_diagnostics(diag).items():
            for i, value in enumerate(values):
                if np.isfinite(value) and not (name == "policy_step_size" and value == 0):
                    self._writer.add_scalar(f"agent{i}/{name}", float(value), int(step))
        if sps is not None:
            self._writer.add_scalar("sps", float(sps), int(step))

    def close(self) -> None:
        self._writer.close()
