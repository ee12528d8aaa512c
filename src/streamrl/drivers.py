"""Drivers: what feeds a fleet its environments. The training loop (:func:`streamrl.run.train`)
is written once against :class:`Driver`; each driver implements it for one kind of
environment:

* :class:`HostDriver`: host environments behind the :class:`~streamrl.types.HostEnvs`
  contract (Gymnasium, EnvPool), one jitted :class:`~streamrl.engine.HostStepper` call per
  environment step;
* :class:`DeviceDriver`: JAX environments (gymnax, brax) stepped with the fleet inside one
  ``lax.scan`` per chunk (:class:`~streamrl.engine.DeviceFleet`).

Which driver runs an id is the :mod:`streamrl.families` source's ``driver``. A new driver
(a Ray actor pool, a robot) is one class implementing :class:`Driver` and one entry in
:data:`DRIVERS` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, Sequence

import numpy as np

from streamrl import families
from streamrl.engine import DIAGNOSE_EVERY, DeviceFleet, HostStepper, fleet_state_target
from streamrl.types import EnvSpec

__all__ = ["Driver", "Advance", "Failure", "HostDriver", "DeviceDriver", "DRIVERS", "driver_for", "HOST_CHUNK"]

HOST_CHUNK = 1024
"""Steps the host driver advances between two looks of the training loop (signals, the
progress bar, record flushes)."""


class Failure(NamedTuple):
    """A non-finite value that stopped the run.

    Attributes:
      step: the environment step (1-based, counted from the run's start) where it happened.
      agent: the fleet index of the first agent affected.
      source: ``"env"`` (a non-finite reward or observation from the environment) or
        ``"learner"`` (the agent's TD error or parameters).
      detail: what was non-finite (``"reward (nan)"``, ``"observation"``, ``"value"``).
    """

    step: int
    agent: int
    source: str
    detail: str = "value"


class Advance(NamedTuple):
    """What :meth:`Driver.advance` returns.

    Attributes:
      steps: environment steps every stream advanced (fewer than asked only with ``failure``).
      episodes: finished episodes as ``(agent, end_step, episodic_return, length)``.
      failure: the :class:`Failure` that stopped the advance, or None.
    """

    steps: int
    episodes: list
    failure: Failure | None = None


class Driver(Protocol):
    """The contract between the training loop and a driver.

    Lifecycle: ``__init__(cfg)`` (makes or probes the environment: sets ``spec``),
    ``bind(agent, members)``, ``start(step, items)`` (items: a checkpoint's, restored into
    ``restore_target()``; None for a fresh run), then ``advance`` until done, ``close``.
    """

    spec: EnvSpec
    chunk: int
    compile_s: float

    def bind(self, agent, members: Sequence) -> None:
        """The fleet to drive: a :class:`~streamrl.agents.StreamAgent` and its members."""

    def restore_target(self) -> dict:
        """Checkpoint item name → shapes and dtypes to restore (what ``checkpoint_items`` holds)."""

    def start(self, step: int, items: dict | None) -> str | None:
        """Start fresh (``items`` None) or continue at ``step`` from restored ``items``;
        returns a line for the user when resuming."""

    def advance(self, at: int, steps: int) -> Advance:
        """Advance every stream by ``steps`` environment steps from step ``at``."""

    def take_diagnostics(self) -> Any:
        """The agents' :class:`~streamrl.agents.Diagnostics` since the last call (NumPy, [N])."""

    def params_finite(self) -> np.ndarray:
        """[N] bools: every parameter and trace of agent i is finite."""

    def checkpoint_items(self) -> dict:
        """Checkpoint item name → pytree of arrays (the fleet's whole learner state)."""

    def close(self) -> None:
        """Release the environments."""


def _first_bad(values: np.ndarray) -> int | None:
    """Index of the first row of ``values`` [N, ...] with a non-finite entry, or None."""
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


class HostDriver:
    """Host environments (a :class:`~streamrl.types.HostEnvs`: Gymnasium or EnvPool) and a
    :class:`~streamrl.engine.HostStepper`. A resumed run restores the learners and starts
    every agent on a fresh episode, on environment seeds the run has not used (a host
    environment's state cannot be saved)."""

    chunk = HOST_CHUNK

    def __init__(self, cfg):
        from streamrl.envs import make_host_envs

        self.cfg = cfg
        self._make = lambda seeds: make_host_envs(cfg.env, seeds, cfg.max_episode_steps, life_loss=cfg.life_loss)
        probe = self._make([cfg.seed])
        try:
            self.spec = probe.spec
        finally:
            probe.close()
        self.envs = None
        self.compile_s = 0.0

    def bind(self, agent, members: Sequence) -> None:
        self.agent, self.members = agent, members

    def restore_target(self) -> dict:
        return {"agents": fleet_state_target(self.agent, self.members)}

    def start(self, step: int, items: dict | None) -> str | None:
        seeds = [m.seed for m in self.members]
        if items is not None:  # a fresh episode, on environment seeds the run has not used
            seeds = [int(np.random.SeedSequence([s, step]).generate_state(1)[0] >> 1) for s in seeds]
        self.envs = self._make(seeds)
        self.stepper = HostStepper(self.agent, self.members, pausing=self.envs.masks_agents)
        obs = self.envs.reset()
        bad = _first_bad(obs)
        if bad is not None:
            raise _env_failure(self.cfg.env, self.members, Failure(step, bad, "env", "observation"))
        self._actions = self.stepper.start(obs, None if items is None else items["agents"])
        self.compile_s = self.stepper.compile_s
        if items is not None:
            return "every agent starts a fresh episode (host environments cannot be checkpointed)"
        return None

    def advance(self, at: int, steps: int) -> Advance:
        envs, stepper, records = self.envs, self.stepper, []
        actions = self._actions
        for k in range(1, steps + 1):
            batch = envs.step(actions)
            t = at + k
            if not (np.isfinite(batch.reward).all() and np.isfinite(batch.final_obs).all()):
                i = _first_bad(batch.reward)
                detail = f"reward ({batch.reward[i]})" if i is not None else "observation"
                return Advance(k, records, Failure(t, i if i is not None else _first_bad(batch.final_obs), "env", detail))
            if batch.episodes:
                i = _first_bad(batch.obs)
                if i is not None:
                    return Advance(k, records, Failure(t, i, "env", "observation"))
                records.extend((e.agent, t, e.episodic_return, e.length) for e in batch.episodes)
            actions, diverged = stepper.step(batch, t % DIAGNOSE_EVERY == 0)
            if diverged.any():
                return Advance(k, records, Failure(t, int(np.argmax(diverged)), "learner"))
        self._actions = actions
        return Advance(steps, records)

    def take_diagnostics(self):
        return self.stepper.take_diagnostics()

    def params_finite(self) -> np.ndarray:
        return self.stepper.params_finite()

    def checkpoint_items(self) -> dict:
        return {"agents": self.stepper.state}

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()


class DeviceDriver:
    """A JAX environment stepped with the fleet in ``lax.scan`` chunks
    (:class:`~streamrl.engine.DeviceFleet`). Its whole carry (agents, environment states,
    episode counters, t) is checkpointed, so a resumed run continues exactly."""

    def __init__(self, cfg):
        from streamrl.envs.device import make_device_env

        self.cfg = cfg
        self.env = make_device_env(cfg.env, cfg.max_episode_steps)
        self.spec = self.env.spec
        self.chunk = max(1, cfg.chunk_steps)
        self.compile_s = 0.0

    def bind(self, agent, members: Sequence) -> None:
        self.members = members
        self.runner = DeviceFleet(agent, self.env, members)

    def restore_target(self) -> dict:
        shape = self.runner.carry_shape()
        return {"agents": fleet_state_target(self.runner.agent, self.members), "driver": shape[1:]}

    def start(self, step: int, items: dict | None) -> str | None:
        self.runner.start(None if items is None else (items["agents"], *items["driver"]))
        self.compile_s = self.runner.compile_s
        return None if items is None else "exactly where it stopped"

    def advance(self, at: int, steps: int) -> Advance:
        self.runner.compile(steps)
        out = self.runner.run(steps)
        self.compile_s = self.runner.compile_s
        failure, done = None, out.done
        if out.bad.any() or out.diverged.any():
            k, i = np.argwhere(out.bad | out.diverged)[0]
            failure = Failure(int(at + k + 1), int(i), "env" if out.bad[k, i] else "learner")
            done = done[: k + 1]
        records = [(int(i), at + int(k) + 1, float(out.episodic_return[k, i]), int(out.length[k, i])) for k, i in np.argwhere(done)]
        return Advance(steps if failure is None else failure.step - at, records, failure)

    def take_diagnostics(self):
        return self.runner.take_diagnostics()

    def params_finite(self) -> np.ndarray:
        return self.runner.params_finite()

    def checkpoint_items(self) -> dict:
        carry = self.runner.carry
        return {"agents": carry[0], "driver": carry[1:]}

    def close(self) -> None:
        """Nothing to release: a JAX environment holds no outside resources."""


DRIVERS = {"host": HostDriver, "device": DeviceDriver}
"""The ``driver`` of a :class:`streamrl.families.Source` → driver class."""


def driver_for(cfg) -> Driver:
    """The driver that runs ``cfg.env`` (made: the environment is probed or built).
    Raises the environment factories' errors (unknown id, missing extra, unsupported space)."""
    return DRIVERS[families.SOURCES[families.source_of(cfg.env)].driver](cfg)


def _agent_label(members, i: int) -> str:
    """' for agent i (seed s)' in a fleet, '' for a single stream (error messages)."""
    return f" for agent {i} (seed {members[i].seed})" if len(members) > 1 else ""


def _env_failure(env_id: str, members, failure: Failure):
    from streamrl.errors import NonFiniteError

    return NonFiniteError(
        f"{env_id} returned a non-finite {failure.detail} at step {failure.step}{_agent_label(members, failure.agent)}; run stopped",
        failure.step,
    )


def failure_error(env_id: str, members, failure: Failure, last_checkpoint: int | None):
    """The :class:`~streamrl.errors.NonFiniteError` that reports ``failure`` (one line:
    what, where, which agent, what to try, which checkpoint is kept)."""
    from streamrl.errors import NonFiniteError

    if failure.source == "env":
        return _env_failure(env_id, members, failure)
    kept = f"; the last good checkpoint (step {last_checkpoint}) is kept" if last_checkpoint is not None else ""
    return NonFiniteError(
        f"the TD error or the parameters became non-finite at step {failure.step}{_agent_label(members, failure.agent)} "
        f"(try a smaller --lr or a larger --kappa){kept}; run stopped",
        failure.step,
    )
