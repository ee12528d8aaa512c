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

__all__ = ["CHECKPOINT_DIR", "MAX_TO_KEEP", "save", "restore", "latest_step", "checkpoint_meta"]

CHECKPOINT_DIR = "checkpoints"
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


def save(run_dir: Path, step: int, state: Any, meta: dict) -> Path:
    """Write the fleet ``state`` (a pytree of arrays) and ``meta`` as checkpoint ``step``;
    returns its directory. Blocks until the checkpoint is complete on disk."""
    import orbax.checkpoint as ocp

    with _manager(run_dir) as manager:
        manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta, step=int(step)))),
            force=True,
        )
        manager.wait_until_finished()
    return Path(run_dir) / CHECKPOINT_DIR / str(int(step))


def latest_step(run_dir: Path) -> int | None:
    """The step of the newest complete checkpoint of ``run_dir``, or None."""
    if not (Path(run_dir) / CHECKPOINT_DIR).is_dir():
        return None
    with _manager(run_dir) as manager:
        return manager.latest_step()


def restore(run_dir: Path, target: Any, expected_meta: dict, step: int | None = None) -> tuple[Any, dict]:
    """Read checkpoint ``step`` (default: the newest) into the structure of ``target``.

    Args:
      run_dir: the run directory.
      target: a pytree with the shapes and dtypes to restore (arrays or
        ``jax.ShapeDtypeStruct``), e.g. ``jax.eval_shape`` of the fleet's init.
      expected_meta: :func:`checkpoint_meta` of the run being restored into; every key
        must match the checkpoint's.

    Returns:
      ``(state, meta)``.

    Raises:
      CheckpointError: there is no checkpoint; it is unreadable (corrupt or incomplete);
        or it belongs to another algorithm, environment, network or fleet size.
    """
    import orbax.checkpoint as ocp

    step = latest_step(run_dir) if step is None else step
    where = Path(run_dir) / CHECKPOINT_DIR
    if step is None:
        raise CheckpointError(f"{run_dir} has no checkpoint (no complete step under {where}); train it first")
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
    try:
        with _manager(run_dir) as manager:
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as exc:  # Orbax raises many types for a damaged directory
        raise _unreadable(where / str(step), exc) from None
    for key, value in expected_meta.items():
        if key == "streamrl":
            continue  # checked below, with its own message
        if meta.get(key) != value:
            raise CheckpointError(
                f"checkpoint {where / str(step)} belongs to another run: its {key} is {meta.get(key)!r}, "
                f"this run's is {value!r}"
            )
    if expected_meta.get("streamrl") and meta.get("streamrl") != expected_meta["streamrl"]:
        raise CheckpointError(
            f"checkpoint {where / str(step)} was written by streamrl {meta.get('streamrl')}, this is "
            f"{expected_meta['streamrl']}; install that version to use it"
        )
    try:
        with _manager(run_dir) as manager:
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except Exception as exc:
        raise _unreadable(where / str(step), exc) from None
    return state, meta
