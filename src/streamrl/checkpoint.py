"""Checkpoints of a fleet's learner state, written with Orbax.

A run directory keeps its checkpoints under ``checkpoints/<step>/``: the fleet's
:class:`~streamrl.agents.AgentState` (every leaf with a leading agent axis: parameters,
eligibility traces, optimiser and normaliser statistics, PRNG keys, step counters) and a
JSON ``meta`` item that says what the state belongs to (algorithm, environment, network,
number of agents, streamrl version). Orbax writes each step into a temporary directory and
renames it when complete, so a killed writer never leaves a half-written checkpoint that
looks finished; the newest ``MAX_TO_KEEP`` are kept.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import jax

from streamrl.errors import CheckpointError

__all__ = [
    "digest",
    "CHECKPOINT_DIR", "MAX_TO_KEEP", "save", "restore", "restore_fleet", "read_meta", "latest_step", "checkpoint_meta", "run_meta",
]

CHECKPOINT_DIR = "checkpoints"
AGENT_FIELDS_ADDED = {"layer_norm": True}
"""AgentConfig fields added after checkpoints were first written, with the value every
earlier checkpoint had: a checkpoint's recorded agent lacking them still matches."""
MAX_TO_KEEP = 2


def _manager(run_dir: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=MAX_TO_KEEP, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager((Path(run_dir) / CHECKPOINT_DIR).absolute(), options=options)


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    detail = str(exc).splitlines()[0][:120] if str(exc) else ""
    return CheckpointError(
        f"checkpoint {path} is unreadable ({type(exc).__name__}: {detail}); it is corrupt or incomplete: "
        "delete it to use an older one"
    )


def checkpoint_meta(algo: str, env_id: str, agent_config: dict, num_agents: int) -> dict:
    """What a checkpoint must match to be restored into a run (JSON-able)."""
    try:
        version = importlib.metadata.version("streamrl")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"algo": algo, "env": env_id, "agent": agent_config, "num_agents": num_agents, "streamrl": version}


def run_meta(cfg, resolved) -> dict:
    """:func:`checkpoint_meta` of a run: its TrainConfig and its
    :class:`~streamrl.config.Resolved` (what a restored state must match)."""
    from streamrl.results import jsonable

    return checkpoint_meta(cfg.algo, cfg.env, jsonable(resolved.agent), len(resolved.members))


def restore_fleet(run_dir: Path, cfg, resolved, agent, step: int | None = None) -> tuple[Any, dict]:
    """The fleet AgentState (leaves [N, ...]) of checkpoint ``step`` (default: the newest)
    of the run ``cfg`` resolved as ``resolved`` with ``agent``, and the checkpoint's meta.
    The one place that rebuilds a fleet's shapes from its configuration
    (:func:`streamrl.engine.fleet_state_target`). Raises CheckpointError as :func:`restore`."""
    from streamrl.engine import fleet_state_target

    target = {"agents": fleet_state_target(agent, resolved.members)}
    items, meta = restore(run_dir, target, run_meta(cfg, resolved), step=step)
    return items["agents"], meta


def save(run_dir: Path, step: int, items: dict[str, Any], meta: dict) -> Path:
    """Write checkpoint ``step``: each of ``items`` (name → pytree of arrays, e.g.
    ``{"agents": fleet AgentState}``) and ``meta``; returns its directory. Blocks until the
    checkpoint is complete on disk."""
    import orbax.checkpoint as ocp

    args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
    meta = dict(meta, step=int(step), digests={name: digest(tree) for name, tree in items.items()})
    with _held_reports() as held:
        try:
            with _manager(run_dir) as manager:
                manager.save(int(step), args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **args), force=True)
                manager.wait_until_finished()
        except Exception as exc:
            held.drop()
            _quiet_orbax_leftovers()
            if isinstance(exc, OSError):
                raise
            if "os_error_code" in str(exc) or "Failed writing" in str(exc):  # TensorStore's I/O errors are ValueErrors
                raise OSError(f"checkpoint {step} could not be written ({str(exc).splitlines()[0][-160:]})") from None
            raise
    return Path(run_dir) / CHECKPOINT_DIR / str(int(step))


class _held_reports:
    """While a checkpoint is written, hold what Orbax's threads log (the ``absl`` logger)
    and the exceptions they raise: replayed as they were if the write succeeds, dropped if
    it fails (the caller raises one error saying what failed, instead of dozens of
    tracebacks from Orbax's writer threads)."""

    def __enter__(self):
        import logging
        import threading

        self.records, self.thread_errors, self._dropped = [], [], False
        _quiet_orbax_leftovers()  # TensorStore callbacks of a failing write find Orbax's loop closed
        self._logger = logging.getLogger("absl")
        self._logger.addFilter(self._filter)
        self._previous_hook = threading.excepthook
        threading.excepthook = self.thread_errors.append
        return self

    def _filter(self, record) -> bool:
        self.records.append(record)
        return False

    def drop(self) -> None:
        self._dropped = True

    def __exit__(self, *exc):
        import threading

        self._logger.removeFilter(self._filter)
        threading.excepthook = self._previous_hook
        if not self._dropped:
            for record in self.records:
                self._logger.handle(record)
            for args in self.thread_errors:
                self._previous_hook(args)


def digest(tree: Any) -> str:
    """SHA-256 of a pytree's arrays (dtype, shape and bytes of every leaf, in tree order):
    written into a checkpoint's meta with its arrays and checked on every restore, so a
    garbled array is refused instead of silently restored."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        x = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{x.dtype.str}{x.shape}".encode())
        h.update(x.tobytes())
    return h.hexdigest()


def latest_step(run_dir: Path) -> int | None:
    """The step of the newest complete checkpoint of ``run_dir``, or None."""
    if not (Path(run_dir) / CHECKPOINT_DIR).is_dir():
        return None
    with _manager(run_dir) as manager:
        return manager.latest_step()


def read_meta(run_dir: Path, expected_meta: dict, step: int | None = None) -> tuple[int, dict]:
    """The step and meta of checkpoint ``step`` (default: the newest), checked against
    ``expected_meta`` without reading any array (what a resume checks before it touches
    the run directory). Raises CheckpointError as :func:`restore`."""
    import orbax.checkpoint as ocp

    step = latest_step(run_dir) if step is None else step
    where = Path(run_dir) / CHECKPOINT_DIR
    if step is None:
        raise CheckpointError(f"{run_dir} has no checkpoint (no complete step under {where}); train it first")
    path = where / str(step)
    try:
        with _manager(run_dir) as manager:
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as exc:  # Orbax raises many types for a damaged directory
        raise _unreadable(path, exc) from None
    if not isinstance(meta, dict):
        raise _unreadable(path, ValueError("meta is not a JSON object"))
    for key, value in expected_meta.items():
        if key == "streamrl":
            continue  # checked below, with its own message
        got = meta.get(key)
        if key == "agent" and isinstance(got, dict):
            got = {**AGENT_FIELDS_ADDED, **got}  # a checkpoint written before these fields existed
        if got != value:
            raise CheckpointError(
                f"checkpoint {path} belongs to another run: its {key} is {_short(meta.get(key))}, "
                f"this run's is {_short(value)}"
            )
    if expected_meta.get("streamrl") and meta.get("streamrl") != expected_meta["streamrl"]:
        raise CheckpointError(
            f"checkpoint {path} was written by streamrl {meta.get('streamrl')}, this is "
            f"{expected_meta['streamrl']}; install that version to use it"
        )
    return step, meta


def restore(run_dir: Path, targets: dict[str, Any], expected_meta: dict, step: int | None = None) -> tuple[dict, dict]:
    """Read checkpoint ``step`` (default: the newest).

    Args:
      run_dir: the run directory.
      targets: name → pytree with the shapes and dtypes to restore (arrays or
        ``jax.ShapeDtypeStruct``), e.g. ``{"agents": jax.eval_shape(fleet init)}``; a subset
        of the checkpoint's items may be asked for.
      expected_meta: :func:`checkpoint_meta` of the run being restored into; every key
        must match the checkpoint's.

    Returns:
      ``(items, meta)``: name → restored pytree, and the checkpoint's meta.

    Raises:
      CheckpointError: there is no checkpoint; it is unreadable (corrupt or incomplete);
        or it belongs to another algorithm, environment, network, fleet size or streamrl
        version.
    """
    import orbax.checkpoint as ocp

    step, meta = read_meta(run_dir, expected_meta, step)
    path = Path(run_dir) / CHECKPOINT_DIR / str(step)
    abstract = {
        name: ocp.args.StandardRestore(jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target))
        for name, target in targets.items()
    }
    try:
        with _manager(run_dir) as manager:
            restored = manager.restore(step, args=ocp.args.Composite(**abstract))
    except Exception as exc:
        _quiet_orbax_leftovers()
        raise _unreadable(path, exc) from None
    items = {name: restored[name] for name in targets}
    digests = meta.get("digests") or {}  # absent in checkpoints of streamrl before issue 11
    for name, tree in items.items():
        got = jax.tree_util.tree_structure(tree)
        if got != jax.tree_util.tree_structure(targets[name]):
            raise _unreadable(path, ValueError(f"{name} has another structure"))
        if name in digests and digest(tree) != digests[name]:
            raise CheckpointError(
                f"checkpoint {path} is corrupt: its {name} arrays do not match the digest written with them; "
                "delete it to use an older one"
            )
    return items, meta


def _quiet_orbax_leftovers() -> None:
    """After a failed read, Orbax leaves coroutines that fail again when they are garbage
    collected, each printing a long "Exception ignored in" traceback, and TensorStore
    callbacks that find Orbax's event loop closed print "Event loop is closed" tracebacks
    (hundreds of lines burying the one-line refusal). Drop those, and only those, from
    ``sys.unraisablehook`` and ``sys.excepthook``."""
    import logging
    import sys

    previous = sys.unraisablehook
    if getattr(previous, "_streamrl_quiet", False):
        return

    def hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and "orbax" in code.co_filename:
            return
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
            return
        previous(unraisable)

    previous_except = sys.excepthook

    def excepthook(kind, value, tb):
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous_except(kind, value, tb)

    hook._streamrl_quiet = True
    sys.unraisablehook = hook
    sys.excepthook = excepthook
    # asyncio reports the failed futures Orbax leaves ("exception was never retrieved").
    logging.getLogger("asyncio").addFilter(lambda record: "never retrieved" not in record.getMessage())


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."
