"""``streamrl sweep``: environments × algorithms × a hyper-parameter grid × seeds, spread
over a Ray cluster as sub-fleets, with checkpoints shipped home, retries and one report.

The unit of work is a **sub-fleet**: the members of one (environment, algorithm) that one
Ray task trains as one vmapped fleet with :func:`streamrl.run.train`, so the fleet engine
keeps its per-machine efficiency (:func:`split`). A sweep directory holds:

* ``sweep.json``: the resolved sweep (its options and every task: the sub-fleet's
  ``TrainConfig``, its run directory, status, attempts, node);
* ``<env>_<algo>/<run name>/``: one run directory per task, in ``streamrl train``'s format,
  so ``streamrl plot``, ``report`` and ``eval`` read a sweep unchanged
  (``streamrl report SWEEP_DIR/*/*``).

Without a shared file system a task trains in a local directory on its worker and, at every
checkpoint, sends the whole run directory (records, summary, checkpoint: a consistent,
resumable state) to a small collector actor on the driver's node; the driver writes it into
the sweep directory. With ``--storage PATH`` (a file system every node mounts) tasks write
there directly. A task whose worker dies is retried by Ray (``--max-retries``) and resumes
from the last checkpoint it shipped, as ``streamrl train --resume`` does: exactly for device
environments, with fresh episodes for host environments; records after that checkpoint are
dropped by the resume, so nothing is lost or recorded twice. ``streamrl sweep --resume
SWEEP_DIR`` finishes a sweep whose driver died. Distribution: Ray (docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import tyro

from streamrl.config import SWEEPABLE, TrainConfig
from streamrl.errors import ConfigError, MissingExtraError, StreamRLError

__all__ = ["SweepConfig", "Task", "split", "plan", "sweep", "run_cli"]

SWEEP_FILE = "sweep.json"
_SWEEP_ONLY = ("address", "agents_per_task", "cpus_per_task", "gpus_per_task", "storage", "max_retries")


@dataclasses.dataclass
class SweepConfig(TrainConfig):
    """Run a sweep (environments × algorithms × the hyper-parameter grid × seeds) on a Ray
    cluster: a local one by default, an existing one with --address. Every `streamrl train`
    flag works as there (a comma-separated list is a grid axis); ALGO and --env take lists."""

    algo: tyro.conf.Positional[str] = "q"  # type: ignore[assignment]
    """Algorithms, comma-separated (ac, q, sarsa, td)."""
    env: str = "CartPole-v1"
    """Environment ids, comma-separated, as for `streamrl train`."""
    run_dir: Path | None = None
    """Sweep directory (default: runs/sweep_<time>): sweep.json, sweep.md and one run
    directory per task, <env>_<algo>/<run name>/."""
    resume: Path | None = None
    """Finish the sweep in this directory (its recorded options; tasks done are kept, the
    others continue from their last checkpoint)."""
    address: str | None = None
    """Ray cluster to join: `auto` (the one `ray start` began on this machine), `HOST:PORT`
    or `ray://HOST:PORT` (Ray Client). Default: start a local Ray on this machine."""
    agents_per_task: int = 64
    """Most fleet members one task trains together (one vmapped fleet)."""
    cpus_per_task: float = 1.0
    """CPUs Ray reserves per task."""
    gpus_per_task: float = 0.0
    """GPU fraction Ray reserves per task (e.g. 0.25: four tasks share a GPU)."""
    storage: Path | None = None
    """The sweep directory on a file system every node mounts at this path: tasks write
    their run directories there directly instead of shipping them to the driver."""
    max_retries: int = 3
    """Times a task whose worker died is retried (from its last checkpoint)."""


@dataclasses.dataclass
class Task:
    """One Ray task: a sub-fleet of one (environment, algorithm)."""

    id: int
    cfg: TrainConfig
    run: str
    """The run directory, relative to the sweep directory."""
    agents: int
    status: str = "pending"
    attempts: int = 0
    node: str | None = None
    message: str | None = None

    @property
    def label(self) -> str:
        return f"task {self.id} ({self.run.rsplit('/', 1)[-1]})"


def _list(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def _grid_axes(cfg: TrainConfig) -> list[str]:
    return [k for k in SWEEPABLE if getattr(cfg, k) is not None and len(getattr(cfg, k)) > 1]


def split(cfg: TrainConfig, agents_per_task: int) -> list[TrainConfig]:
    """Cut the fleet ``cfg`` (its grid × seeds, in the order :func:`streamrl.config.resolve`
    lists members) into sub-fleets of at most ``agents_per_task`` members, each itself a
    grid × a seed range, so each is an ordinary ``TrainConfig``: trailing axes (seeds
    last) are kept whole while they fit, the first axis that does not fit is cut into
    chunks, and the axes before it take one value per sub-fleet."""
    import itertools

    axes = _grid_axes(cfg)
    sizes = [len(getattr(cfg, k)) for k in axes] + [cfg.num_seeds]
    k = max(1, agents_per_task)
    # the first axis (from the end) whose product with the axes after it exceeds k
    trailing, cut = 1, None
    for i in range(len(sizes) - 1, -1, -1):
        if trailing * sizes[i] > k:
            cut = i
            break
        trailing *= sizes[i]
    if cut is None:
        return [cfg]
    chunk = max(1, k // trailing)
    leading = [range(n) for n in sizes[:cut]]
    out = []
    for head in itertools.product(*leading):
        for start in range(0, sizes[cut], chunk):
            stop = min(sizes[cut], start + chunk)
            changes = {}
            for axis, index in zip(axes, head):
                changes[axis] = (getattr(cfg, axis)[index],)
            if cut < len(axes):
                changes[axes[cut]] = tuple(getattr(cfg, axes[cut])[start:stop])
            else:
                changes.update(seed=cfg.seed + start, num_seeds=stop - start)
            out.append(dataclasses.replace(cfg, **changes))
    return out


def _train_fields(cfg: SweepConfig) -> dict:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}


def plan(cfg: SweepConfig, sweep_dir: Path) -> list[Task]:
    """The tasks of the sweep ``cfg``: for each environment × algorithm, its fleet cut by
    :func:`split`; each checked with ``streamrl train``'s option checks.

    Raises:
      ConfigError: an unknown algorithm (with close matches), an empty list, an option
        ``streamrl train`` refuses, or an invalid sweep option.
    """
    import difflib

    from streamrl.agents import ALGORITHMS
    from streamrl.config import apply_preset, check_options
    from streamrl.results import flag, run_name

    if cfg.agents_per_task < 1 or cfg.max_retries < 0 or cfg.cpus_per_task <= 0 or cfg.gpus_per_task < 0:
        raise ConfigError("--agents-per-task must be >= 1, --max-retries >= 0, --cpus-per-task > 0 and --gpus-per-task >= 0")
    algos, envs = _list(cfg.algo), _list(cfg.env)
    if not algos or not envs:
        raise ConfigError("name at least one algorithm (ALGO, e.g. q,sarsa) and one --env")
    for algo in algos:
        if algo not in ALGORITHMS:
            close = difflib.get_close_matches(algo, list(ALGORITHMS), n=2)
            raise ConfigError(f"unknown algorithm {algo!r}" + (f"; did you mean {', '.join(close)}?" if close else f"; use {', '.join(ALGORITHMS)}"))
    tasks: list[Task] = []
    base = _train_fields(cfg)
    for env in envs:
        for algo in algos:
            whole = apply_preset(dataclasses.replace(TrainConfig(**base), algo=algo, env=env, run_dir=None, resume=None, config=None))
            check_options(whole)
            group = f"{env.replace('/', '-').replace(':', '-')}_{algo}"
            swept = _grid_axes(whole)
            for part in split(whole, cfg.agents_per_task):
                # no time stamp (the sweep directory has it); an axis cut to one value is named
                name = run_name(part, "")[:-1] + "".join(
                    f"_{flag(k)}{getattr(part, k)[0]:g}" for k in swept if len(getattr(part, k)) == 1)
                agents = part.num_seeds
                for axis in _grid_axes(part):
                    agents *= len(getattr(part, axis))
                tasks.append(Task(id=len(tasks), cfg=dataclasses.replace(part, progress=False), run=f"{group}/{name}", agents=agents))
    return tasks


def sweep_file_args(path: Path) -> list[str]:
    """The ``streamrl sweep`` arguments a TOML/YAML sweep file means: ``algo`` and ``env``
    (a name or a list), the sweep's own options (``address``, ``agents-per-task``, …), and
    every ``streamrl train`` option as :func:`streamrl.config.config_file_args` reads it
    (a list is a grid axis). The file and the flags mean the same thing.

    Raises:
      ConfigError: an unreadable file, an unknown option (with close matches) or a value
        the flag refuses — one line naming the file and the option.
    """
    from streamrl.config import _read_config_file, config_mapping_args

    path = Path(path)
    data = dict(_read_config_file(path))
    head: list[str] = []
    for key in ("algo", "env"):
        value = data.pop(key, None)
        if value is not None:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            head += [text] if key == "algo" else ["--env", text]
    for name in _SWEEP_ONLY:
        for key in (name, name.replace("_", "-")):
            if key in data:
                value = data.pop(key)
                if value is not None:
                    head += ["--" + name.replace("_", "-"), str(value)]
    return head + config_mapping_args(data, path)


# --- the files of a sweep -------------------------------------------------------------------


def _cfg_json(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _write_sweep(sweep_dir: Path, cfg: SweepConfig, tasks: list[Task]) -> None:
    data = {
        "kind": "sweep",
        "options": _cfg_json(cfg),
        "tasks": [dict(id=t.id, run=t.run, agents=t.agents, status=t.status, attempts=t.attempts, node=t.node,
                       message=t.message, config=_cfg_json(t.cfg)) for t in tasks],
    }
    tmp = sweep_dir / (SWEEP_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, sweep_dir / SWEEP_FILE)


def _read_sweep(sweep_dir: Path) -> tuple[SweepConfig, list[Task]]:
    from streamrl.config import config_from_json

    path = Path(sweep_dir) / SWEEP_FILE
    try:
        data = json.loads(path.read_text())
        options = data["options"]
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        cfg = SweepConfig(**{k: v for k, v in options.items() if k in _SWEEP_ONLY},
                          **{k: v for k, v in dataclasses.asdict(config_from_json({k: v for k, v in options.items() if k in train_fields and k not in ("algo", "env")})).items()
                             if k not in ("algo", "env")},
                          algo=options["algo"], env=options["env"])
        tasks = [Task(id=t["id"], cfg=config_from_json(t["config"]), run=t["run"], agents=t["agents"], status=t["status"],
                      attempts=t.get("attempts", 0), node=t.get("node"), message=t.get("message")) for t in data["tasks"]]
    except (OSError, ValueError, KeyError, TypeError, StreamRLError) as exc:
        raise ConfigError(f"--resume {sweep_dir}: not a readable sweep directory ({SWEEP_FILE}: {type(exc).__name__}); pass a directory `streamrl sweep` wrote") from None
    if cfg.storage is not None:
        cfg.storage = Path(cfg.storage)
    return cfg, tasks


def _pack(run_dir: Path) -> bytes:
    """The run directory as a gzipped tar (what a task ships to the driver)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(Path(run_dir).rglob("*")):
            if path.is_file() and path.name != ".lock":
                tar.add(path, arcname=str(path.relative_to(run_dir)), recursive=False)
    return buffer.getvalue()


def _unpack(data: bytes, run_dir: Path) -> None:
    """Replace ``run_dir`` with the shipped directory ``data`` (extracted beside it first, so
    a driver killed mid-write leaves the previous copy)."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".incoming-", dir=run_dir.parent))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(fresh, filter="data")
    old = run_dir.with_name(f".old-{run_dir.name}")
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(fresh, run_dir)
    shutil.rmtree(old, ignore_errors=True)


# --- the Ray side ---------------------------------------------------------------------------


def _collector_class():
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class Collector:
        """Lives on the driver's node: holds each task's last shipped run directory (what a
        retried task resumes from) and the events the driver has not read yet."""

        def __init__(self, snapshots: dict):
            self.snapshots = dict(snapshots)
            self.events: list = []

        def started(self, task_id: int, node: str) -> bytes | None:
            self.events.append(("started", task_id, node, None))
            return self.snapshots.get(task_id)

        def shipped(self, task_id: int, step: int, data: bytes) -> None:
            self.snapshots[task_id] = data
            self.events.append(("checkpoint", task_id, step, data))

        def progress(self, task_id: int, step: int) -> None:
            self.events.append(("progress", task_id, step, None))

        def take(self) -> list:
            events, self.events = self.events, []
            return events

    return Collector


def _run_task(task_id: int, cfg: TrainConfig, collector, storage: str | None) -> dict:
    """Body of a Ray task: train the sub-fleet ``cfg`` (resuming from its last shipped or
    stored checkpoint) and return ``{"summary": …, "data": the run directory packed}``."""
    import ray

    from streamrl.cli import _use_compilation_cache
    from streamrl.run import train

    _use_compilation_cache()
    node = ray.get_runtime_context().get_node_id()
    snapshot = ray.get(collector.started.remote(task_id, node))
    if storage is not None:
        run_dir = Path(storage)
        resume = (run_dir / "checkpoints").is_dir()
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)
    else:
        run_dir = Path(tempfile.mkdtemp(prefix=f"streamrl-task{task_id}-")) / "run"
        resume = snapshot is not None
        if resume:
            _unpack(snapshot, run_dir)
    last = [0.0]

    def on_progress(step: int) -> None:
        if time.monotonic() - last[0] > 0.5:
            last[0] = time.monotonic()
            collector.progress.remote(task_id, step)

    def on_checkpoint(path: Path, step: int) -> None:
        data = b"" if storage is not None else _pack(path)
        ray.get(collector.shipped.remote(task_id, step, data))  # safe at home before training goes on

    if resume:
        run_cfg = dataclasses.replace(TrainConfig(), resume=run_dir, progress=False, total_steps=cfg.total_steps,
                                      allow_env_import=cfg.allow_env_import)
    else:
        run_cfg = dataclasses.replace(cfg, run_dir=run_dir, progress=False)
    try:
        path = train(run_cfg, on_progress=on_progress, on_checkpoint=on_checkpoint)
        summary = json.loads((path / "summary.json").read_text())
        return {"summary": summary, "data": b"" if storage is not None else _pack(path)}
    except StreamRLError as exc:
        # Refusals (a missing extra on this worker, an unknown id) and divergence: one line.
        raise _TaskError(f"{type(exc).__name__}: {exc}") from None
    finally:
        if storage is None:
            shutil.rmtree(run_dir.parent, ignore_errors=True)  # the worker's copy; the driver has the shipped one


class _TaskError(Exception):
    """A task's own failure (one line), as opposed to its worker dying."""


def _reachable(address: str) -> None:
    """Refuse an address no Ray cluster answers on in one line (``ray.init`` would retry for
    minutes)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
            "`ray start --head` (docs/distributed.md) or leave --address out to run on this machine"
        ) from None


def _init_ray(cfg: SweepConfig):
    import logging

    try:
        import ray
    except ImportError:
        raise MissingExtraError("streamrl sweep needs Ray: pip install 'streamrl[ray]'") from None
    if cfg.address is not None:
        _reachable(cfg.address)
    if ray.is_initialized():
        return ray, False
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if cfg.address is None:
        kwargs.update(include_dashboard=False)
    try:
        ray.init(address=cfg.address, **kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"--address {cfg.address}: {str(exc).splitlines()[0]}; start one with `ray start --head`") from None
    return ray, True


# --- the driver -----------------------------------------------------------------------------


class _View:
    """One live view of the sweep: tasks done / running / retried, agent-steps/s, a line per
    running task (rich; plain lines when not a terminal or --no-progress)."""

    def __init__(self, tasks: list[Task], console, enabled: bool):
        self.tasks, self.console, self.enabled = tasks, console, enabled
        self.steps = {t.id: 0 for t in tasks}
        self.t0, self.steps0 = time.monotonic(), 0
        self.live = None

    def __enter__(self):
        if self.enabled and self.console is not None and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(*exc)

    def note(self, text: str) -> None:
        if self.console is not None and (self.live is None):
            self.console.print(text, soft_wrap=True)
        elif self.live is not None:
            self.live.console.print(text, soft_wrap=True)

    def agent_sps(self) -> float:
        elapsed = time.monotonic() - self.t0
        done = sum(self.steps[t.id] * t.agents for t in self.tasks)
        return (done - self.steps0) / elapsed if elapsed > 0 else 0.0

    def render(self):
        from rich.table import Table

        counts = {s: sum(t.status == s for t in self.tasks) for s in ("completed", "running", "pending", "failed")}
        retried = sum(t.attempts > 1 for t in self.tasks)
        table = Table(title=f"sweep: {counts['completed']}/{len(self.tasks)} tasks done, {counts['running']} running, "
                            f"{retried} retried · {self.agent_sps():,.0f} agent-steps/s", title_justify="left")
        for col in ("task", "env", "algo", "agents", "steps", "status"):
            table.add_column(col)
        for t in self.tasks:
            if t.status in ("running", "failed") or (t.attempts > 1 and t.status != "completed"):
                total = t.cfg.total_steps or 0
                table.add_row(str(t.id), t.cfg.env, t.cfg.algo, str(t.agents),
                              f"{self.steps[t.id]:,}" + (f"/{total:,}" if total else ""),
                              t.status + (f" (attempt {t.attempts})" if t.attempts > 1 else ""))
        return table

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())


def sweep(cfg: SweepConfig, console=None) -> Path:
    """Run the sweep ``cfg`` (or finish ``cfg.resume``'s) and return its directory.

    Raises:
      ConfigError: invalid options (:func:`plan`), an unreachable ``--address``, or a
        ``--resume`` directory that is not a sweep.
      MissingExtraError: Ray is not installed (the ``ray`` extra).
      StreamRLError: a task failed on its own (a missing extra on its worker, an unknown
        id, divergence): one line naming the task and what to do; the other tasks are
        stopped, their shipped checkpoints kept (``--resume`` continues).
    """
    import datetime as dt

    if cfg.resume is not None:
        sweep_dir = Path(cfg.resume)
        recorded, tasks = _read_sweep(sweep_dir)
        cfg = dataclasses.replace(recorded, progress=cfg.progress, address=cfg.address,
                                  max_retries=cfg.max_retries)
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        if cfg.storage is not None and cfg.run_dir is not None and Path(cfg.run_dir) != Path(cfg.storage):
            raise ConfigError("--storage is the sweep directory (on a file system every node mounts): give --storage or --run-dir, not both")
        sweep_dir = Path(cfg.storage or cfg.run_dir or Path("runs") / f"sweep_{stamp}")
        tasks = plan(cfg, sweep_dir)
        if sweep_dir.exists() and any(sweep_dir.iterdir()):
            raise ConfigError(f"{sweep_dir} is not empty; give a new --run-dir, or --resume {sweep_dir} to finish that sweep")
        sweep_dir.mkdir(parents=True, exist_ok=True)
    _write_sweep(sweep_dir, cfg, tasks)
    todo = [t for t in tasks if t.status != "completed"]
    if not todo:
        _print_summary(sweep_dir, tasks, console)
        return sweep_dir
    ray, started = _init_ray(cfg)
    try:
        _drive(ray, cfg, sweep_dir, tasks, todo, console)
    except KeyboardInterrupt:
        raise SweepInterrupted(sweep_dir) from None
    finally:
        if started:
            ray.shutdown()
    _print_summary(sweep_dir, tasks, console)
    return sweep_dir


def _drive(ray, cfg: SweepConfig, sweep_dir: Path, tasks: list[Task], todo: list[Task], console) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    storage = sweep_dir.resolve() if cfg.storage is not None else None  # the workers' working directory is not ours
    snapshots = {}
    for t in todo:  # what a retried or resumed task starts from: its last shipped directory
        if storage is None and (sweep_dir / t.run / "checkpoints").is_dir():
            snapshots[t.id] = _pack(sweep_dir / t.run)
    here = ray.get_runtime_context().get_node_id()
    collector = _collector_class().options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(snapshots)
    remote = ray.remote(_run_task).options(
        num_cpus=cfg.cpus_per_task, num_gpus=cfg.gpus_per_task or None, max_retries=cfg.max_retries, retry_exceptions=False)
    pending = {}
    for t in todo:
        where = str(storage / t.run) if storage is not None else None
        pending[remote.remote(t.id, t.cfg, collector, where)] = t
        t.status = "pending"
    by_id = {t.id: t for t in tasks}
    with _View(tasks, console, cfg.progress) as view:
        failure = None
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for event, task_id, value, data in ray.get(collector.take.remote()):
                t = by_id[task_id]
                if event == "started":
                    t.attempts += 1
                    t.status, t.node = "running", value
                    if t.attempts > 1:
                        view.note(f"{t.label}: retried on node {value[:8]} (attempt {t.attempts}) from its last checkpoint")
                elif event == "checkpoint":
                    view.steps[task_id] = value
                    if storage is None:
                        _unpack(data, sweep_dir / t.run)
                else:
                    view.steps[task_id] = max(view.steps[task_id], value)
            for ref in ready:
                t = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(getattr(exc, "cause", None), _TaskError) else None
                    t.status, t.message = "failed", str(cause) if cause else str(exc).strip().splitlines()[-1]
                    failure = failure or t
                    continue
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.RayError) as exc:
                    t.status, t.message = "failed", f"its worker died {t.attempts} times ({type(exc).__name__})"
                    failure = failure or t
                    continue
                if storage is None:
                    _unpack(result["data"], sweep_dir / t.run)
                t.status = "completed"
                view.steps[t.id] = result["summary"].get("steps", 0)
                view.note(f"{t.label}: done ({result['summary'].get('steps', 0):,} steps)")
            if failure is not None and pending:
                for ref in pending:
                    ray.cancel(ref, force=True)
                for t in pending.values():
                    t.status = "stopped"
                pending = {}
            _write_sweep(sweep_dir, cfg, tasks)
            view.refresh()
    _write_sweep(sweep_dir, cfg, tasks)
    if failure is not None:
        message = failure.message or "failed"
        hint = ""
        if "MissingExtraError" in message or "UnknownEnvError" in message:
            hint = " (install the extra on every worker, or drop that --env)"
        raise _SweepFailed(f"{failure.label} failed on node {(failure.node or '?')[:8]}: {message.split(': ', 1)[-1]}{hint}; "
                           f"the other tasks' checkpoints are kept: fix it, then streamrl sweep --resume {sweep_dir}")


class _SweepFailed(StreamRLError):
    pass


class SweepInterrupted(Exception):
    """Ctrl-C during a sweep: the tasks stop, their shipped checkpoints stay."""

    def __init__(self, sweep_dir: Path):
        super().__init__(f"sweep stopped; the tasks' last checkpoints are kept: finish it with streamrl sweep --resume {sweep_dir}")


def _print_summary(sweep_dir: Path, tasks: list[Task], console) -> None:
    """The final table: per (env, algorithm, setting), the seeds and the mean of their
    scores (mean return of each agent's last 10% of episodes); also written to sweep.md."""
    from streamrl.report import load_scores

    from streamrl.report import _method_labels

    records = []
    for t in tasks:
        if t.status == "completed":
            with contextlib.suppress(ConfigError):  # a task whose agents finished no episode
                records += load_scores([sweep_dir / t.run])
    rows: dict[tuple, list[float]] = {}
    for r, label in zip(records, _method_labels(records) if records else []):
        setting = label.split(" ", 1)[1] if " " in label else "(the sweep's)"
        rows.setdefault((r["env"], r["algo"], setting), []).append(r["score"])
    lines = ["| env | algo | setting | seeds | mean score |", "|---|---|---|---|---|"]
    for (env, algo, setting), scores in sorted(rows.items()):
        lines.append(f"| {env} | {algo} | {setting} | {len(scores)} | {sum(scores) / len(scores):,.1f} |")
    text = "\n".join(lines) + "\n"
    (sweep_dir / "sweep.md").write_text(text)
    print(text, end="")
    print(f"\nwritten: {sweep_dir}/ ({SWEEP_FILE}, sweep.md, one run directory per task: streamrl report {sweep_dir}/*/*)")


def run_cli(cfg: SweepConfig) -> int:
    """``streamrl sweep``."""
    from rich.console import Console

    try:
        sweep(cfg, console=Console(stderr=True))
    except SweepInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    return 0
