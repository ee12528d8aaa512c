"""An online stream-x agent for loops streamrl does not own: a robot's control cycle, a
sensor stream, a simulator of your own. ``streamrl.Agent`` learns exactly as ``streamrl
train`` does (the same engine, :class:`streamrl.engine.HostStepper`: one jitted call per
environment step), but you call it::

    agent = streamrl.Agent.create("ac", env.observation_space, env.action_space, seed=0)
    action = agent.reset(obs)                                  # an episode starts
    while True:
        obs, reward, terminated, truncated, _ = env.step(action)
        action = agent.step(reward, obs, terminated, truncated)  # learn, then act
        if terminated or truncated:
            action = agent.reset(env.reset()[0])               # the next episode

``step`` takes s′ (the observation the environment returned) and returns the next action;
after a step that ended the episode it returns None and the next call is ``reset`` with
the new episode's first observation (the update of the last transition is made then, in
one call with choosing the first action, exactly as the training loop does).
``agent.save(dir)`` writes a run directory (config.json, checkpoint) that ``streamrl
eval`` / ``plot`` / ``train --resume`` read when the agent was made for an environment
id; ``Agent.load(dir)`` / ``Agent.from_run(run_dir, agent=i)`` read one back.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from streamrl.errors import ConfigError
from streamrl.types import HostBatch

__all__ = ["Agent"]

EPISODES_KEPT = 100_000
"""How many of the newest episodes an :class:`Agent` keeps for ``episodes.csv``."""

CUSTOM_ENV = "custom"
"""The env id recorded for an agent made from spaces (not an environment id): such a run
directory can be loaded with :meth:`Agent.load`, not evaluated or resumed by the CLI."""


def _spec_from_spaces(observation_space, action_space, time_limit: int | None):
    """The :class:`~streamrl.types.EnvSpec` of Gymnasium spaces (Box observations; Discrete
    or 1-D bounded Box actions), as the Gymnasium adapter builds it."""
    import math

    import gymnasium as gym

    from streamrl.envs.gym import _check_spaces
    from streamrl.errors import UnsupportedSpaceError
    from streamrl.types import EnvSpec

    _check_spaces("the given spaces", observation_space, action_space)
    discrete = isinstance(action_space, gym.spaces.Discrete)
    spec = EnvSpec(
        env_id=CUSTOM_ENV,
        family="other",
        obs_shape=tuple(int(d) for d in observation_space.shape),
        discrete=discrete,
        action_dim=int(action_space.n) if discrete else int(action_space.shape[0]),
        action_low=() if discrete else tuple(float(x) for x in action_space.low),
        action_high=() if discrete else tuple(float(x) for x in action_space.high),
        time_limit=time_limit,
    )
    if math.prod(spec.obs_shape) == 0:
        raise UnsupportedSpaceError(f"the observation space has empty observations of shape {spec.obs_shape}")
    return spec


def _train_config(algo: str, env_id: str, seed: int, num_agents: int, options: dict):
    """The TrainConfig of ``Agent.create``'s arguments: options named as TrainConfig fields
    (``lambda_``, ``kappa``, ``hidden``, …; a scalar for a hyper-parameter, a list for a
    grid of settings); errors as the CLI's."""
    from streamrl.config import SWEEPABLE, TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    allowed = fields - {"algo", "env", "seed", "num_seeds", "run_dir", "resume", "progress", "config", "schedule_steps"}
    values = {}
    for name, value in options.items():
        if name == "lambda":
            name = "lambda_"
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"Agent.create: unknown option {name!r}{hint}")
        if name in SWEEPABLE and value is not None:
            value = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        elif name == "hidden" and value is not None:
            value = tuple(int(h) for h in value)
        values[name] = value
    from streamrl.config import apply_preset

    return apply_preset(TrainConfig(algo=algo, env=env_id, seed=int(seed), num_seeds=int(num_agents), progress=False, **values))


class Agent:
    """One stream-x agent (or a fleet of K independent ones) driven by your loop.

    Make it with :meth:`create`, :meth:`load` or :meth:`from_run`, not the constructor.
    Arrays in and out are NumPy. A single agent (``num_agents`` = 1 and no list-valued
    hyper-parameter) takes and returns unbatched values: ``obs`` of the observation shape,
    scalars for reward/terminated/truncated, and an action that is an int (Discrete) or a
    float32 vector [d] clipped to the Box bounds (the agent learns from its unclipped
    sample, as in training). A fleet of K takes [K, …] arrays and returns [K] or [K, d]
    actions.

    Attributes:
      num_agents: K, the number of independent streams.
      spec: the :class:`~streamrl.types.EnvSpec` the agent was made for.
      config: the :class:`~streamrl.config.TrainConfig` it was made from (what ``save`` records).
      learn: False: ``step`` acts with the evaluation policy and learns nothing.
    """

    def __init__(self, cfg, spec, *, learn: bool = True, state=None, batched: bool | None = None):
        from streamrl.agents import ALGORITHMS
        from streamrl.config import check_options, resolve
        from streamrl.engine import HostStepper

        check_options(cfg)
        self.config, self.spec, self.learn = cfg, spec, learn
        self.resolved = resolve(cfg, spec)
        self._agent = ALGORITHMS[cfg.algo](self.resolved.agent)
        self.num_agents = len(self.resolved.members)
        self._batched = self.num_agents > 1 if batched is None else batched
        self._stepper = HostStepper(self._agent, self.resolved.members)
        self._loaded = state  # a checkpoint's fleet state: the first reset restarts from it
        self._started = False
        self._pending: tuple | None = None  # a finished episode's last transition, learned at reset
        self._low = np.asarray(spec.action_low, np.float32)
        self._high = np.asarray(spec.action_high, np.float32)
        self._frozen = None
        self._has_policy = ALGORITHMS[cfg.algo].has_policy
        # steps learned per agent (a loaded agent goes on from its checkpoint's)
        self._t = np.zeros(self.num_agents, np.int64) if state is None else np.asarray(state.step, np.int64).reshape(self.num_agents).copy()
        self._ep = [np.zeros(self.num_agents, np.float64), np.zeros(self.num_agents, np.int64)]  # the running episode
        self._episodes: collections.deque = collections.deque(maxlen=EPISODES_KEPT)
        self._obs_batch_shape = (self.num_agents, *spec.obs_shape)
        self._obs_size = int(np.prod(self._obs_batch_shape))
        # Compile now, so the first step of the loop is not a compile.
        self._stepper.compile(np.zeros((self.num_agents, *spec.obs_shape), np.float32))

    # -- making one ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        algo: str,
        observation_space=None,
        action_space=None,
        *,
        env_id: str | None = None,
        seed: int = 0,
        num_agents: int = 1,
        learn: bool = True,
        time_limit: int | None = None,
        **hyper_parameters: Any,
    ) -> "Agent":
        """A new agent with the paper's defaults, for Gymnasium spaces or an environment id.

        Args:
          algo: ``"ac"``, ``"q"``, ``"sarsa"`` or ``"td"`` (``streamrl.agents.ALGORITHMS``).
          observation_space, action_space: Gymnasium spaces (Box observations; Discrete or
            1-D bounded Box actions). Or give ``env_id`` instead.
          env_id: an id ``streamrl train`` takes (``CartPole-v1``, ``gymnax:CartPole-v1``, …):
            the network, episode cap and defaults are the CLI's for it, and a saved agent
            can be evaluated and resumed by the CLI.
          seed: seed of the first agent (agent i: ``seed + i``, as ``--num-seeds``).
          num_agents: K independent agents (a fleet; batched arrays in and out).
          learn: False: act with the evaluation policy, frozen normalisers, no learning.
          time_limit: T of the time feature (steps per episode) for spaces without an id
            (default 1,000, as for environments without a limit).
          **hyper_parameters: any ``streamrl train`` option by its field name: ``lr``,
            ``gamma``, ``lambda_``, ``kappa``, ``hidden=(64, 64)``, ``optimizer``,
            ``time_feature``, ``normalize_obs``, … (a list of values is a grid of settings
            × ``num_agents`` seeds, as a comma-separated flag). ``total_steps`` is the
            planned run length: Q and SARSA lay their ε schedule over it (default: the
            CLI's, e.g. 500k steps for classic control).

        Raises:
          ConfigError, UnsupportedSpaceError, UnknownEnvError, MissingExtraError: one line, as the CLI.
        """
        if (env_id is None) == (observation_space is None or action_space is None):
            raise ConfigError("Agent.create: give observation_space and action_space, or env_id")
        cfg = _train_config(algo, env_id or CUSTOM_ENV, seed, num_agents, hyper_parameters)
        if env_id is not None:
            from streamrl.drivers import driver_for

            driver = driver_for(cfg)
            spec = driver.spec
            driver.close()
        else:
            spec = _spec_from_spaces(observation_space, action_space, time_limit)
        return cls(cfg, spec, learn=learn)

    @classmethod
    def load(cls, path: Path, *, learn: bool = True, allow_env_import: bool = False) -> "Agent":
        """The agent(s) saved in run directory ``path`` (by :meth:`save` or ``streamrl
        train``), at its newest checkpoint; the first :meth:`reset` starts a fresh episode
        (traces reset) as ``streamrl train --resume`` does on host environments.

        Raises:
          ConfigError: not a run directory, or a recorded ``module:Env`` id without
            ``allow_env_import``. CheckpointError: no checkpoint, or a corrupt one.
        """
        from streamrl import checkpoint, families
        from streamrl.agents import ALGORITHMS
        from streamrl.config import load_run_config, resolve
        from streamrl.results import check_no_links
        from streamrl.types import EnvSpec

        path = Path(path)
        check_no_links(path)
        cfg, recorded = load_run_config(path)
        families.check_recorded_id(cfg.env, path / "config.json", allow_env_import)
        spec_fields = recorded.get("env_spec") or {}
        spec = EnvSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_fields.items()})
        resolved = resolve(cfg, spec)
        states, _ = checkpoint.restore_fleet(path, cfg, resolved, ALGORITHMS[cfg.algo](resolved.agent))
        meta = recorded.get("online") or {}
        agent = cls(cfg, spec, learn=learn, state=states, batched=bool(meta.get("batched", len(resolved.members) > 1)))
        agent._episodes.extend(_recorded_episodes(path, int(np.asarray(states.step).max())))
        return agent

    @classmethod
    def from_run(cls, run_dir: Path, agent: int = 0, *, learn: bool = True, allow_env_import: bool = False) -> "Agent":
        """Agent ``agent`` of a training run (a fleet member) as a single agent."""
        import jax

        fleet = cls.load(run_dir, learn=learn, allow_env_import=allow_env_import)
        if not 0 <= agent < fleet.num_agents:
            raise ConfigError(f"agent={agent} is not an agent of {run_dir} (it has {fleet.num_agents}: 0..{fleet.num_agents - 1})")
        member = fleet.resolved.members[agent]
        if "eps_decay_steps" in fleet.resolved.swept:
            raise ConfigError(f"{run_dir} sweeps --exploration-fraction; load it whole with Agent.load and index the fleet's actions")
        cfg = dataclasses.replace(
            fleet.config, seed=member.seed, num_seeds=1,
            **{field: (float(getattr(member.hparams, name)),) for field, name in _swept_fields(fleet)},
        )
        state = jax.tree_util.tree_map(lambda x: x[agent : agent + 1], fleet._loaded)
        single = cls(cfg, fleet.spec, learn=learn, state=state, batched=False)
        single._episodes.extend((0, end, ret, length) for i, end, ret, length in fleet._episodes if i == agent)
        return single

    # -- the loop -----------------------------------------------------------------------
    def reset(self, obs) -> Any:
        """Start an episode at its first observation ``obs`` and return the first action.
        After a step that ended the episode, the update of that last transition is made
        here (one jitted call: learn, then act at ``obs``)."""
        obs = self._batch_obs(obs)
        self._frozen = None
        if not self.learn:  # frozen: nothing of the state changes, normalisers included
            if not self._started:
                if self._loaded is not None:
                    self._stepper.load(self._loaded)
                else:
                    self._stepper.start(obs)
                self._loaded, self._started = None, True
            return self.act(self._unbatch(obs)) if self._has_policy else None
        if self._pending is not None:
            reward, final_obs, terminated, truncated = self._pending
            self._pending = None
            actions = self._learn(obs, reward, terminated, truncated, final_obs, np.ones(self.num_agents, bool))
        elif not self._started or self._loaded is not None:
            actions = self._stepper.start(obs, self._loaded)
            self._loaded, self._started = None, True
        else:  # an episode abandoned midway: a fresh one, without learning (as a resume)
            actions = self._stepper.start(obs, self._stepper.state)
        return self._out(actions)

    def step(self, reward, obs, terminated=False, truncated=False, reset_obs=None) -> Any:
        """Learn from the last transition (r, s′ = ``obs``, and whether the episode ended)
        and return the next action; after ``terminated`` or ``truncated``, None (call
        :meth:`reset` with the next episode's first observation) unless ``reset_obs`` is
        given: then the new episode starts in the same call and its first action is
        returned. A fleet where some agents' episodes end must give ``reset_obs`` ([K, …];
        used where the episode ended). With ``learn=False``: the evaluation action at s′.

        Raises:
          ConfigError: a step before :meth:`reset`, or a fleet step ending episodes without ``reset_obs``.
        """
        if not self._started:
            raise ConfigError("Agent.step before Agent.reset: call reset(obs) with the episode's first observation")
        if self._pending is not None:
            raise ConfigError("Agent.step after the episode ended: call reset(obs) with the next episode's first observation")
        obs = self._batch_obs(obs)
        reward, terminated, truncated = self._vec(reward, np.float32), self._vec(terminated, bool), self._vec(truncated, bool)
        if not np.isfinite(reward).all():
            from streamrl.errors import NonFiniteError

            raise NonFiniteError("a non-finite reward (NaN or inf) was given to the agent", step=-1)
        done = terminated | truncated
        if not self.learn:
            if not self._has_policy:
                raise ConfigError(f"a frozen {self.config.algo} agent has no policy to act with; use predict(obs)")
            if not done.any():
                return self.act(self._unbatch(obs))
            if reset_obs is None:
                self._frozen = None  # the next call is reset(obs)
                return None
            if self._frozen is not None:  # a fresh frame stack and time feature where an episode ended
                x, t, new = self._frozen
                self._frozen = (x, np.where(done, 0, t), done | new)
            mask = done.reshape(-1, *[1] * len(self.spec.obs_shape))
            return self.act(self._unbatch(np.where(mask, self._batch_obs(reset_obs), obs)))
        self._count(reward, done)
        if done.any() and reset_obs is None:
            if self._batched:
                raise ConfigError("Agent.step: some agents' episodes ended; pass reset_obs with their next first observations")
            self._pending = (reward, obs, terminated, truncated)
            return None
        next_obs = obs if reset_obs is None else np.where(done.reshape(-1, *[1] * len(self.spec.obs_shape)), self._batch_obs(reset_obs), obs)
        return self._out(self._learn(next_obs, reward, terminated, truncated, obs, done))

    def act(self, obs, greedy: bool = True) -> Any:
        """The evaluation action at ``obs`` (greedy for Q and SARSA, most probable action
        or mean for AC), normalisers frozen, nothing learned (as ``streamrl eval``); the
        time feature and frame stack count the calls since the last :meth:`reset`."""
        if not self._has_policy:
            raise ConfigError(f"Agent.act: {self.config.algo} learns the value of a fixed random policy; it has no policy to evaluate")
        if not greedy:
            raise ConfigError("Agent.act(greedy=False): acting with exploration is what step() does; act() is the evaluation policy")
        raw = self._batch_obs(obs)
        frozen = self._frozen_fns()
        x, t, new = self._frozen or (None, np.zeros(self.num_agents, np.int32), np.ones(self.num_agents, bool))
        actions, x = frozen["act"](self._stepper.state, self._stepper.hparams, raw, x, t, new)
        self._frozen = (x, t + 1, np.zeros(self.num_agents, bool))
        return self._out(np.asarray(actions))

    def predict(self, obs) -> Any:
        """v(obs), the predicted return at ``obs`` (Stream TD(λ); the critic for AC),
        normalisers frozen: float (a fleet: [K] float32)."""
        if not hasattr(self._agent, "value"):
            raise ConfigError(f"Agent.predict: {self.config.algo} learns action values; predict() is for td and ac")
        raw = self._batch_obs(obs)
        x, t, new = self._frozen or (None, np.zeros(self.num_agents, np.int32), np.ones(self.num_agents, bool))
        values = np.asarray(self._frozen_fns()["value"](self._stepper.state, self._stepper.hparams, raw, x, t, new))
        return values if self._batched else float(values[0])

    @property
    def episodes(self) -> list[tuple[int, int, float, int]]:
        """The episodes that ended in learning :meth:`step` calls (and, for a loaded
        agent, those of its run), oldest first, as ``(agent, end_step, episodic_return,
        length)`` (``end_step``: the agent's steps learned so far; the return sums the
        rewards given to ``step``); the newest :data:`EPISODES_KEPT` are kept (memory stays
        bounded) and :meth:`save` writes them to ``episodes.csv``. A frozen agent
        (``learn=False``) records none."""
        return list(self._episodes)

    def _count(self, reward: np.ndarray, done: np.ndarray) -> None:
        self._t += 1
        self._ep[0] += reward
        self._ep[1] += 1
        for i in np.flatnonzero(done):
            self._episodes.append((int(i), int(self._t[i]), float(self._ep[0][i]), int(self._ep[1][i])))
            self._ep[0][i], self._ep[1][i] = 0.0, 0

    # -- saving ---------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write a run directory at ``path`` (a new or empty directory): config.json, the
        episodes (:attr:`episodes`) in ``episodes.csv`` and a checkpoint of the whole learner
        state, in ``streamrl train``'s format (``streamrl plot`` / ``eval`` / ``train
        --resume`` read it). Returns it.

        Raises:
          ConfigError: ``path`` holds another run; the agent has not started (no state
            yet); or an episode ended and :meth:`reset` has not been called.
        """
        from streamrl import checkpoint
        from streamrl.results import RunLock, RunWriter

        if not self._started:
            raise ConfigError("Agent.save before the first reset: there is no learner state yet")
        if self._pending is not None:
            raise ConfigError("Agent.save after an episode ended: call reset(obs) first (the episode's last transition is learned then)")
        path = Path(path)
        lock = RunLock(path, new=True)
        try:
            writer = RunWriter.create(path, self.config, self.resolved, self.spec, extra={"online": {"batched": self._batched}})
            for i, end, episodic_return, length in self._episodes:
                writer.add_episode(agent=i, end_step=end, episodic_return=episodic_return, length=length)
            writer.flush()
            step = int(np.asarray(self._stepper.state.step).max())
            meta = dict(checkpoint.run_meta(self.config, self.resolved), episodes=writer.episodes_written)
            checkpoint.save(path, step, {"agents": self._stepper.state}, meta)
        finally:
            lock.release()
        return path

    # -- internals ------------------------------------------------------------------------
    def _learn(self, obs, reward, terminated, truncated, final_obs, new_episode):
        batch = HostBatch(obs, reward, terminated, truncated, final_obs, new_episode, None, ())
        actions, diverged = self._stepper.step(batch)
        if diverged.any():
            from streamrl.errors import NonFiniteError

            i = int(np.argmax(diverged))
            raise NonFiniteError(f"agent {i}'s TD error became non-finite; check the rewards and observations it was given", step=-1)
        return actions

    def _vec(self, x, dtype) -> np.ndarray:
        """A per-agent value as a [K] array (a scalar for a single agent)."""
        if np.ndim(x) == 0:
            return np.full(self.num_agents, x, dtype)
        return np.asarray(x, dtype).reshape(self.num_agents)

    def _batch_obs(self, obs) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        shape = self._obs_batch_shape
        if not self._batched and obs.size == self._obs_size:
            obs = obs.reshape(shape)
        if obs.shape != shape:
            raise ConfigError(f"observation of shape {obs.shape}; this agent takes {shape[1:] if not self._batched else shape}")
        if not np.isfinite(obs).all():
            from streamrl.errors import NonFiniteError

            raise NonFiniteError("a non-finite observation (NaN or inf) was given to the agent", step=-1)
        return obs

    def _unbatch(self, obs: np.ndarray):
        return obs if self._batched else obs[0]

    def _out(self, actions: np.ndarray):
        actions = np.asarray(actions)
        if not self.spec.discrete:
            actions = np.clip(actions, self._low, self._high).astype(np.float32)
        if self._batched:
            return actions
        return int(actions[0]) if self.spec.discrete else actions[0]

    def _frozen_fns(self) -> dict:
        if not hasattr(self, "_frozen_cache"):
            import jax
            import jax.numpy as jnp

            agent, n = self._agent, self.num_agents
            zeros = jnp.zeros((n, *self.resolved.agent.net_input_shape), jnp.float32)

            def one_input(state, hp, raw, x, t, new):
                return agent.frozen_observation(state.norm, x, raw, t, new, hp)

            def act(states, hps, raw, x, t, new):
                x = jax.vmap(one_input)(states, hps, raw, zeros if x is None else x, t, new)
                return jax.vmap(agent.greedy_action)(states.params, x), x

            def value(states, hps, raw, x, t, new):
                x = jax.vmap(one_input)(states, hps, raw, zeros if x is None else x, t, new)
                return jax.vmap(agent.value)(states.params, x)

            self._frozen_cache = {"act": jax.jit(act, static_argnums=()), "value": jax.jit(value)}
        return self._frozen_cache


def _recorded_episodes(run_dir: Path, until_step: int) -> list[tuple[int, int, float, int]]:
    """The episodes of ``run_dir``'s ``episodes.csv`` up to its checkpoint step, as
    :attr:`Agent.episodes` holds them (a loaded agent's saved run keeps its history)."""
    from streamrl.results import read_episodes

    if not (Path(run_dir) / "episodes.csv").is_file():
        return []
    df = read_episodes(run_dir)
    df = df[df.end_step <= until_step]
    return [(int(a), int(e), float(r), int(n)) for a, e, r, n in zip(df.agent, df.end_step, df.episodic_return, df.length)]


def _swept_fields(fleet: Agent) -> Sequence[tuple[str, str]]:
    """(TrainConfig field, HParams field) of the hyper-parameters swept in ``fleet``."""
    from streamrl.config import SWEEPABLE

    return [(field, name) for field, name in SWEEPABLE.items() if name in fleet.resolved.swept and field != "exploration_fraction"]
