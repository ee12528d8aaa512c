"""Training orchestration: ``streamrl train``. One loop (:func:`train`) over the
:class:`~streamrl.drivers.Driver` interface does everything around the fleet engine once,
for every driver: the run directory and its records, checkpoints and exact resume,
SIGINT/SIGTERM, TensorBoard diagnostics, the progress bar and the summary.

The computation itself is :mod:`streamrl.engine`; feeding it environments is
:mod:`streamrl.drivers`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from streamrl import families
from streamrl.agents import ALGORITHMS
from streamrl.config import Resolved, TrainConfig, resolve
from streamrl.drivers import Driver, Failure, driver_for, failure_error
from streamrl.errors import CheckpointError, ConfigError, NonFiniteError, WriteError

__all__ = ["train", "Interrupted", "resume_config"]


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived; the driver checkpoints and stops."""


class _Signals:
    """SIGINT and SIGTERM as a flag, for the CLI only (``train(handle_signals=True)``): a
    library call leaves the process's signals to its caller.

    The first signal sets :attr:`signal`; the loop checks it before every chunk (1,024
    steps on host environments, ``--chunk-steps`` on device ones), then checkpoints and
    stops. Once the loop has begun (:attr:`running`), further signals are ignored, with a
    line on stderr, until the stop checkpoint and the summary are written (a second Ctrl-C
    must not lose them); before it (making environments, compiling: nothing to save yet)
    a second signal aborts at once (KeyboardInterrupt: the CLI exits 130 with one line).
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.signal: int | None = None
        self.running = False
        self._handlers: dict = {}

    def __enter__(self):
        import signal
        import threading

        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        import sys

        if self.signal is None:
            self.signal = signum
        elif not self.running:
            raise KeyboardInterrupt
        else:
            print("streamrl: already stopping; writing the checkpoint and the summary, please wait", file=sys.stderr, flush=True)


class _Session:
    """The bookkeeping of one training run: checkpoints, records, metrics, and the signal
    flag (:class:`_Signals`)."""

    def __init__(self, cfg: TrainConfig, resolved: Resolved, writer, metrics, start_step: int, prior_wall_s: float, signals):
        self.cfg, self.resolved, self.writer, self.metrics = cfg, resolved, writer, metrics
        self.members = resolved.members
        self.start_step = start_step
        self.prior_wall_s = prior_wall_s
        self.last_checkpoint: int | None = start_step if start_step else None
        self.next_checkpoint = self._after(start_step)
        self._signals = signals

    @property
    def signal(self) -> int | None:
        return self._signals.signal

    def _after(self, step: int) -> int | None:
        every = self.cfg.checkpoint_every
        return (step // every + 1) * every if every and every > 0 else None

    def due(self, step: int) -> bool:
        return self.next_checkpoint is not None and step >= self.next_checkpoint

    def checkpoint(self, step: int, items: dict, wall_s: float, finite: np.ndarray) -> None:
        """Flush the records, then write checkpoint ``step`` (records and checkpoint agree
        after a kill: a resume drops records later than the checkpoint). A fleet with a
        non-finite parameter is never written: NonFiniteError names the agent."""
        from streamrl import checkpoint

        if not finite.all():
            failure = Failure(step, int(np.argmin(finite)), "learner")
            raise failure_error(self.cfg.env, self.members, failure, self.last_checkpoint)
        self.writer.flush()
        meta = dict(
            checkpoint.run_meta(self.cfg, self.resolved),
            wall_time_s=self.prior_wall_s + wall_s,
            episodes=self.writer.episodes_written,
        )
        checkpoint.save(self.writer.path, step, items, meta)
        self.last_checkpoint = step
        self.next_checkpoint = self._after(step)
        self.writer.write_summary(steps=step, wall_time_s=self.prior_wall_s + wall_s, status="running")

    def diagnostics(self, step: int, diag, sps: float | None) -> None:
        if self.metrics is not None:
            self.metrics.diagnostics(step, diag, sps)


def _open_run(cfg: TrainConfig, resolved: Resolved, spec, targets: dict | None):
    """The run writer, the TensorBoard log, the start step and, when resuming (``targets``
    given: item name → shapes to restore), the checkpoint's items and meta. A resume reads
    and checks the whole checkpoint before it touches the run directory, then drops
    episode records later than the checkpoint."""
    from streamrl import checkpoint
    from streamrl.metrics import MetricsLog
    from streamrl.results import RunWriter

    from streamrl.results import check_no_links

    items, meta = None, {}
    if targets is not None:
        check_no_links(cfg.run_dir)
        step = checkpoint.latest_step(cfg.run_dir)
        if step is None:
            raise CheckpointError(f"{cfg.run_dir} has no checkpoint to resume from (it stopped before the first one)")
        items, meta = checkpoint.restore(cfg.run_dir, targets, checkpoint.run_meta(cfg, resolved), step=step)
        writer = RunWriter.reopen(cfg.run_dir, resolved.members, resolved.swept, until_step=step, expected=meta.get("episodes"))
    else:
        step, writer = 0, RunWriter.create(cfg.run_dir, cfg, resolved, spec)
    metrics = None
    if cfg.tensorboard or cfg.wandb:
        from streamrl.results import jsonable

        metrics = MetricsLog(writer.path, resolved.members, tensorboard=cfg.tensorboard, wandb=cfg.wandb,
                             wandb_project=cfg.wandb_project, config=jsonable(cfg))
    return writer, metrics, step, items, meta


class _Evaluation:
    """``--eval-every``: evaluation episodes of every agent of the fleet at fixed steps
    (:class:`streamrl.evaluate.Evaluator`), recorded in ``evaluations.csv``, TensorBoard
    and the summary. Reads the fleet state; never changes it."""

    def __init__(self, cfg: TrainConfig, resolved: Resolved, driver: Driver, writer, metrics, step: int):
        from streamrl.engine import stack_hparams
        from streamrl.evaluate import Evaluator

        self.every, self.episodes = cfg.eval_every, cfg.eval_episodes
        self.driver, self.writer, self.metrics = driver, writer, metrics
        agent = ALGORITHMS[cfg.algo](resolved.agent)
        self.evaluator = Evaluator.for_run(agent, resolved, cfg.env, cfg.max_episode_steps, cfg.life_loss)
        self.hparams = stack_hparams(resolved.members)
        self.members = resolved.members
        self.next_step = (step // self.every + 1) * self.every
        self.last_step: int | None = None

    @classmethod
    def of(cls, cfg, resolved, driver, writer, metrics, step) -> "_Evaluation | None":
        return cls(cfg, resolved, driver, writer, metrics, step) if cfg.eval_every else None

    def due(self, step: int) -> bool:
        return step >= self.next_step

    def run(self, step: int) -> None:
        states = self.driver.checkpoint_items()["agents"]
        results = [(i, self.evaluator.episodes(states, self.hparams, i, self.episodes)[0]) for i in range(len(self.members))]
        self.writer.add_evaluation(step, results)
        if self.metrics is not None:
            self.metrics.evaluations(step, results)
        self.last_step = step
        self.next_step = (step // self.every + 1) * self.every


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after writing a checkpoint."""

    def __init__(self, path: Path, step: int, signum: int | None, checkpointed: bool = True):
        if checkpointed:
            message = f"stopped at step {step:,}; checkpoint written; resume with: streamrl train --resume {path}"
        else:
            message = f"stopped at step {step:,}, before any checkpoint; nothing to resume (run it again)"
        super().__init__(message)
        self.path, self.step, self.signum = path, step, signum


def resume_config(cfg: TrainConfig) -> TrainConfig:
    """The recorded configuration of ``cfg.resume``'s run, with ``--total-steps``,
    ``--progress`` and ``--checkpoint-every`` taken from ``cfg`` when given."""
    import dataclasses

    from streamrl.config import ignored_on_resume, load_run_config

    ignored = ignored_on_resume(cfg)
    if ignored:
        raise ConfigError(
            f"--resume continues {cfg.resume} with its recorded options; drop {', '.join(ignored)} "
            "(only --total-steps, --checkpoint-every and --progress may change)"
        )
    path = Path(cfg.resume)
    old, recorded = load_run_config(path)
    families.check_recorded_id(old.env, path / "config.json", cfg.allow_env_import)
    schedule = old.schedule_steps or recorded.get("total_steps")
    changes = dict(run_dir=path, resume=path, progress=cfg.progress, schedule_steps=schedule)
    if cfg.total_steps is not None:
        changes["total_steps"] = cfg.total_steps
    defaults = TrainConfig()
    if cfg.checkpoint_every != defaults.checkpoint_every:
        changes["checkpoint_every"] = cfg.checkpoint_every
    return dataclasses.replace(old, **changes)


def train(cfg: TrainConfig, *, console=None, handle_signals: bool = False, on_progress=None, on_checkpoint=None) -> Path:
    """Run ``cfg`` (one agent, or a fleet of seeds × hyper-parameter settings) and write
    its run directory. The id's source picks the driver (:func:`streamrl.drivers.driver_for`):
    ``gymnax:``/``brax:`` run on the device driver, ``envpool:`` and Gymnasium ids on the
    host driver. With ``cfg.resume`` the run continues from its last checkpoint (see
    :func:`resume_config`): exactly on the device driver; with a fresh episode on host
    environments (their state cannot be saved).

    Returns the run directory. Raises the streamrl errors of the environment factories
    and of :func:`~streamrl.config.resolve` before anything is written;
    :class:`~streamrl.errors.NonFiniteError` (after writing the records so far and a
    summary with ``status: failed``) when an environment emits NaN or inf or an agent's TD
    error or parameters become non-finite; :class:`Interrupted` after SIGINT or SIGTERM
    (a checkpoint is written first; only with ``handle_signals``, which the CLI sets: a
    library call leaves the process's signals alone);
    ``on_progress(step)`` is called after every chunk and ``on_checkpoint(run_dir, step)``
    after every checkpoint, when the run directory is a consistent, resumable whole
    (``streamrl sweep`` ships it to the sweep's driver from there);
    :class:`~streamrl.errors.CheckpointError` when the checkpoint to resume from is
    missing, corrupt or belongs to another run; ConfigError when the run directory holds
    another run or another process is writing it.
    """
    import dataclasses

    from streamrl.config import apply_preset, check_options
    from streamrl.results import RunLock, new_run_path

    resume = cfg.resume is not None
    if resume:
        cfg = resume_config(cfg)
    else:
        cfg = apply_preset(cfg)  # --preset classic, and the classic baselines' (DQN1) own defaults
    check_options(cfg)
    cfg = dataclasses.replace(cfg, run_dir=new_run_path(cfg))
    with _Signals(handle_signals) as signals:
        return _train(cfg, resume, console, signals, (on_progress, on_checkpoint))


def _train(cfg: TrainConfig, resume: bool, console, signals: _Signals, hooks=(None, None)) -> Path:
    from streamrl.results import RunLock

    lock = RunLock(cfg.run_dir, new=not resume)  # refuses a second writer and, for a new run, a used directory
    writer = None
    try:
        driver = driver_for(cfg)
        try:
            resolved = resolve(cfg, driver.spec)
            agent = ALGORITHMS[cfg.algo](resolved.agent)
            _check_memory(agent, resolved.members)
            driver.bind(agent, resolved.members)
            writer, metrics, step, items, meta = _open_run(cfg, resolved, driver.spec, driver.restore_target() if resume else None)
            if console is not None:
                console.print(f"run directory: {writer.path}", soft_wrap=True)
                console.print(
                    f"compiling the step of {len(resolved.members)} agent{'s' * (len(resolved.members) > 1)} "
                    f"({cfg.algo}, {cfg.env}); a program compiled before comes from the compilation cache",
                    soft_wrap=True,
                )
            message = driver.start(step, items)
            if message is not None and console is not None:
                console.print(f"resumed {writer.path} at step {step:,}: {message}", soft_wrap=True)
            prior_wall = float(meta.get("wall_time_s") or 0.0) if resume else 0.0
            _loop(cfg, resolved, driver, writer, metrics, step, prior_wall, console, signals, hooks)
        finally:
            driver.close()
    except BaseException:
        if writer is None and not resume:
            lock.discard()  # refused before anything was written: leave no directory behind
        raise
    finally:
        lock.release()
    return writer.path


MEMORY_FACTOR = 3
"""The host step holds the fleet state about three times at its peak (the state, the
updated state before donation frees the old one, and the packed buffers)."""


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _check_memory(agent, members) -> None:
    """Refuse a fleet whose learner state cannot fit in memory, before allocating it (a
    fleet of 100,000 seeds, or ``--hidden 100000 100000``), with the figure.

    Raises:
      ConfigError: the estimate (MEMORY_FACTOR × the fleet's state) exceeds the memory available.
    """
    import math

    from streamrl.engine import fleet_state_target

    one = fleet_state_target(agent, members[:1])  # shapes only; every member's state is the same size
    need = MEMORY_FACTOR * len(members) * sum(math.prod(x.shape) * x.dtype.itemsize for x in jax_leaves(one))
    available = _available_memory()
    if available is not None and need > available:
        gib = 1 << 30
        raise ConfigError(
            f"the fleet's learner state needs about {need / gib:,.1f} GiB ({len(members):,} agent{'s' * (len(members) > 1)}, "
            f"{need / len(members) / (1 << 20):,.1f} MiB each) and {available / gib:,.1f} GiB is available; "
            "use fewer agents (--num-seeds, fewer swept values) or smaller networks (--hidden)"
        )


def _write_error(path: Path, exc: OSError, last_checkpoint: int | None) -> WriteError:
    """The one-line error for a run directory that stopped accepting writes mid-run."""
    where = exc.filename or path
    then = (
        f"free space (or raise the limit), then resume from step {last_checkpoint:,} with: streamrl train --resume {path}"
        if last_checkpoint is not None else "free space (or raise the limit) and run it again; nothing to resume"
    )
    return WriteError(f"cannot write {where}: {exc.strerror or exc} (a full disk or a file-size limit?); {then}")


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def _loop(cfg: TrainConfig, resolved: Resolved, driver: Driver, writer, metrics, step: int, prior_wall: float, console, signals,
          hooks=(None, None)) -> None:
    """Advance the driver chunk by chunk to ``resolved.total_steps``, booking episodes,
    diagnostics and checkpoints; the one training loop of every driver."""
    from streamrl.results import progress_bar

    members, total, start = resolved.members, resolved.total_steps, step
    status, error = "completed", None
    t_start, compile_before = time.perf_counter(), driver.compile_s

    def wall_now():  # seconds in the loop, without compiles (the device driver compiles a new chunk length)
        return time.perf_counter() - t_start - (driver.compile_s - compile_before)

    on_progress, on_checkpoint = hooks

    def save(at, wall_s):
        session.checkpoint(at, driver.checkpoint_items(), wall_s, driver.params_finite())
        if on_checkpoint is not None:
            on_checkpoint(writer.path, at)

    session = _Session(cfg, resolved, writer, metrics, step, prior_wall, signals)
    evaluation = _Evaluation.of(cfg, resolved, driver, writer, metrics, step)
    signals.running = True
    with progress_bar(
        total, enabled=cfg.progress, console=console, agents=len(members), completed=step
    ) as bar:
        try:
            while step < total:
                if session.signal is not None:  # also a signal during start-up (compilation)
                    raise StopRequested
                length = min(driver.chunk, total - step)
                for boundary in (session.next_checkpoint, evaluation.next_step if evaluation else None):
                    if boundary is not None:
                        length = min(length, boundary - step)
                advance = driver.advance(step, length)
                for i, end, episodic_return, episode_length in advance.episodes:
                    writer.add_episode(agent=i, end_step=end, episodic_return=episodic_return, length=episode_length)
                if metrics is not None:
                    metrics.episodes(advance.episodes)
                step += advance.steps
                if advance.failure is not None:
                    raise failure_error(cfg.env, members, advance.failure, session.last_checkpoint)
                if evaluation is not None and evaluation.due(step):
                    t_eval = time.perf_counter()
                    evaluation.run(step)
                    t_start += time.perf_counter() - t_eval  # SPS counts learning, not evaluating
                if session.due(step):
                    save(step, wall_now())
                bar.update(step, writer.episodes_written, writer.recent_return())
                if on_progress is not None:
                    on_progress(step)
                if writer.maybe_flush():
                    session.diagnostics(step, driver.take_diagnostics(), (step - start) / wall_now())
        except NonFiniteError as exc:
            status, error = "failed", exc
        except StopRequested:
            status = "interrupted"
        except OSError as exc:  # a full disk, a file-size limit, a directory made read-only
            status, error = "failed", _write_error(writer.path, exc, session.last_checkpoint)
        wall = wall_now()
        bar.update(step, writer.episodes_written, writer.recent_return())
        if status != "failed":
            session.diagnostics(step, driver.take_diagnostics(), (step - start) / wall if wall else None)
    if evaluation is not None and status == "completed" and evaluation.last_step != step:
        evaluation.run(step)  # and at the end
    if status != "failed" and step > session.start_step and session.last_checkpoint != step:
        save(step, wall)
    if session.metrics is not None:
        session.metrics.close()
    message = str(error) if error is not None else None
    if status == "interrupted":
        message = f"stopped by signal {session.signal} at step {step}; resume with: streamrl train --resume {writer.path}"
    summary = dict(
        steps=step, wall_time_s=prior_wall + wall, status=status, message=message, compile_s=driver.compile_s,
        resumed_from=session.start_step or None,
    )
    if isinstance(error, WriteError):
        with contextlib.suppress(OSError):  # the records cannot be flushed; a summary saying why may still fit
            writer.write_summary(**summary)
        raise error
    writer.finish(**summary)
    if status == "interrupted":
        raise Interrupted(writer.path, step, session.signal, checkpointed=session.last_checkpoint is not None)
    if error is not None:
        raise error
