"""The benchmark families, one entry each: everything that differs between them lives here,
and every other module asks this table (no module compares family names).

A family says how its ids are recognised (Gymnasium namespace or entry-point package, or
the task names of a prefixed source such as ``gymnax:``), which adapter makes them and
which driver runs them, the wrappers it needs, its network torso, episode cap and
time-feature T, its default run length and ε schedule per algorithm, whether
human-normalised scores apply, and how its videos and rendering errors look.
The values are the paper's and the official scripts' (docs/algorithms.md
"Hyper-parameters" and "Benchmark families").

Adding a family: one :class:`Family` entry in :data:`FAMILIES` (plus an adapter in
``streamrl.envs`` if its ids come from a new source). docs/architecture.md has the recipe.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Literal

__all__ = [
    "Family", "FAMILIES", "SOURCES", "Source", "get", "of_id", "source_of", "human_game", "imported_module",
    "check_recorded_id", "PAPER_EPISODE_CAP", "EXTRA_MODULES", "Unlisted", "UNLISTED", "extra_for", "extra_installed",
    "unlisted_reason", "trainable_ids", "registered_ids",
]

PAPER_EPISODE_CAP = 10_000
"""The paper's episode cap for classic control with Discrete actions (CartPole, Acrobot,
MountainCar): 10,000 agent steps."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Where ids come from and which driver runs them.

    Attributes:
      prefix: the id prefix (``"gymnax:"``), or ``""`` for Gymnasium's registry.
      driver: ``"host"`` (Gymnasium and EnvPool adapters, stepped from Python) or
        ``"device"`` (JAX environments stepped inside ``lax.scan``).
      extra: the pip extra that installs it (None: always installed).
    """

    prefix: str
    driver: Literal["host", "device"]
    extra: str | None = None


SOURCES = {
    "gymnasium": Source("", "host"),
    "envpool": Source("envpool:", "host", "envpool"),
    "gymnax": Source("gymnax:", "device", "gymnax"),
    "brax": Source("brax:", "device", "brax"),
}


@dataclasses.dataclass(frozen=True)
class Family:
    """One benchmark family.

    Attributes:
      name: the name recorded in :class:`~streamrl.types.EnvSpec` ``family``.
      title: for people.
      extra: the pip extra its Gymnasium ids need (None: none), named by errors.
      namespaces: Gymnasium id namespaces (``MinAtar`` in ``MinAtar/Breakout-v1``).
      entry_points: Gymnasium entry-point packages of its registered ids.
      tasks: source name → regular expression of the task names (after the prefix) of
        that source that belong to this family (``{"gymnax": r".*-MinAtar"}``).
      register: registers its Gymnasium ids (imports the package that does), called on
        first use so ``import streamrl`` stays fast and the extras stay optional.
      names: recognises its ids without a namespace from the id text alone (Atari's
        ``BreakoutNoFrameskip-v4``), for records read back without the registry.
      episode_cap: default episode cap in agent steps for tasks with Discrete actions
        (the paper's 10,000 for classic control); None: the environment's own limit.
      episode_length: the episode length the environment enforces itself where its
        spec does not say (dm_control and brax: 1,000 steps); used as T of the time feature.
      torso: network torso (``streamrl.nets.TORSOS``); None: picked from the shape.
      frame_stack: observations the agent stacks (4 for Atari).
      total_steps: default environment steps per agent, by algorithm (``"*"``: others).
      exploration: default ε decay by algorithm (``"*"``: others): a float is a fraction
        of the run, an int a number of steps.
      human_normalized: returns can be human-normalised (Atari reference scores).
      make_kwargs: extra ``gymnasium.make`` arguments.
      cap_in_wrapper: the episode cap is applied by ``wrap`` (in agent steps), not by
        ``gymnasium.make``.
      wrap: ``wrap(env, max_episode_steps, options) -> env`` after ``gymnasium.make``.
      video_fps: frames per second of evaluation videos: a number, or a function of the
        environment's ``render_fps``; None: ``render_fps``.
      render_hint: what to do when rendering fails.
    """

    name: str
    title: str
    extra: str | None = None
    namespaces: tuple[str, ...] = ()
    entry_points: tuple[str, ...] = ()
    tasks: dict[str, str] = dataclasses.field(default_factory=dict)
    register: Callable[[], None] | None = None
    names: Callable[[str], bool] | None = None
    episode_cap: int | None = None
    episode_length: int | None = None
    torso: str | None = None
    frame_stack: int = 1
    total_steps: dict[str, int] = dataclasses.field(default_factory=lambda: {"*": 1_000_000})
    exploration: dict[str, float | int] = dataclasses.field(default_factory=lambda: {"*": 0.05})
    human_normalized: bool = False
    make_kwargs: dict = dataclasses.field(default_factory=dict)
    cap_in_wrapper: bool = False
    wrap: Callable | None = None
    video_fps: float | Callable[[float], float] | None = None
    render_hint: str = "install the environment's rendering dependencies"

    def default_total_steps(self, algo: str) -> int:
        """Environment steps per agent when ``--total-steps`` is not given."""
        return self.total_steps.get(algo, self.total_steps["*"])

    def exploration_fraction(self, algo: str, run_steps: int) -> float:
        """The default ε decay as a fraction of a run of ``run_steps`` (at most 1)."""
        value = self.exploration.get(algo, self.exploration["*"])
        return min(1.0, value / run_steps) if isinstance(value, int) else float(value)

    def fps(self, render_fps: float | None) -> float:
        """Frames per second of an evaluation video (one frame per agent step)."""
        base = float(render_fps or 30.0)
        if self.video_fps is None:
            return base
        return self.video_fps(base) if callable(self.video_fps) else float(self.video_fps)


def _register_minatar() -> None:
    import gymnasium as gym
    from minatar.gym import register_envs

    if "MinAtar/Breakout-v1" not in gym.registry:
        register_envs()


def _register_ale() -> None:
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)


def _register_dmc() -> None:
    import warnings

    with warnings.catch_warnings():  # dm_control probes an X11 display for rendering on import
        warnings.filterwarnings("ignore", module="glfw")
        import shimmy  # noqa: F401  (registers dm_control/<domain>-<task>-v0)


def _flatten(env, max_episode_steps, options):
    import gymnasium as gym

    return gym.wrappers.FlattenObservation(env)


def _atari(env, max_episode_steps, options):
    from streamrl.envs.atari import wrap_atari

    return wrap_atari(env, max_episode_steps, life_loss=options.get("life_loss", "continue"))


def _atari_name(env_id: str) -> bool:
    from streamrl.envs.atari_scores import game_of

    return "/" not in env_id and ":" not in env_id and game_of(env_id) is not None


_GYMNAX_CLASSIC = r"CartPole-v1|Acrobot-v1|MountainCar-v0|Pendulum-v1|MountainCarContinuous-v0"
_MUJOCO_HINT = "MuJoCo and DM Control render through OpenGL: set MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa (CPU, needs libOSMesa)"

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "classic_control", "Classic control",
            entry_points=("gymnasium.envs.classic_control",),
            tasks={"gymnax": _GYMNAX_CLASSIC, "envpool": r"CartPole-v[01]|Acrobot-v1|MountainCar-v0"},
            episode_cap=PAPER_EPISODE_CAP, torso="mlp", total_steps={"*": 500_000},
            render_hint="classic control renders with pygame: pip install 'gymnasium[classic-control]'",
        ),
        Family(
            "mujoco", "MuJoCo", extra="streamrl[mujoco]", entry_points=("gymnasium.envs.mujoco",),
            torso="mlp", total_steps={"*": 2_000_000}, render_hint=_MUJOCO_HINT,
        ),
        Family(
            "dmc", "DM Control", extra="streamrl[dmc]", namespaces=("dm_control",), entry_points=("shimmy.dm_control",),
            register=_register_dmc, episode_length=1000, torso="mlp", total_steps={"*": 2_000_000}, wrap=_flatten, render_hint=_MUJOCO_HINT,
        ),
        Family(
            "minatar", "MinAtar", extra="streamrl[minatar]", namespaces=("MinAtar",), entry_points=("minatar.gym",),
            register=_register_minatar, tasks={"gymnax": r".*-MinAtar"}, torso="minatar",
            total_steps={"q": 5_000_000, "*": 10_000_000},
            # Q: 20% of the run; SARSA: its script passes the 0.05 fraction but not the run
            # length, so 0.05 × the class's default 1M = 50,000 steps.
            exploration={"q": 0.2, "sarsa": 50_000, "*": 0.05},
            video_fps=10.0,
        ),
        Family(
            "atari", "Atari (ALE)", extra="streamrl[atari]", namespaces=("ALE",), entry_points=("ale_py",),
            register=_register_ale, names=_atari_name, torso="atari", frame_stack=4, total_steps={"*": 10_000_000},
            human_normalized=True, make_kwargs={"frameskip": 1}, cap_in_wrapper=True, wrap=_atari,
            video_fps=lambda render_fps: render_fps / 4,  # one frame per agent step (frame skip 4)
        ),
        Family("box2d", "Box2D", extra="gymnasium[box2d]", entry_points=("gymnasium.envs.box2d",)),
        Family("toy_text", "Toy text", entry_points=("gymnasium.envs.toy_text",)),
        Family("brax", "brax", tasks={"brax": r".*"}, episode_length=1000, torso="mlp", total_steps={"*": 2_000_000}),
        Family("gymnax", "gymnax (other tasks)", tasks={"gymnax": r".*"}),
        Family("envpool", "EnvPool (other tasks)", tasks={"envpool": r".*"}),
        Family("other", "Other Gymnasium environments"),
    ]
}
"""Family name → entry. Order matters for recognition: the first entry whose ``tasks``
pattern matches a prefixed id wins (MinAtar before the catch-all gymnax entry)."""


def get(name: str) -> Family:
    """The entry of family ``name`` (an :class:`EnvSpec` ``family``); unknown names (a
    run directory written by another version) get the ``other`` entry."""
    return FAMILIES.get(name, FAMILIES["other"])


def source_of(env_id: str) -> str:
    """The source name of an id: ``gymnax``, ``brax``, ``envpool`` (by prefix) or ``gymnasium``."""
    for name, source in SOURCES.items():
        if source.prefix and env_id.startswith(source.prefix):
            return name
    return "gymnasium"


def of_task(source: str, task: str) -> Family:
    """The family of task ``task`` of a prefixed source (``of_task("gymnax", "Breakout-MinAtar")``)."""
    for family in FAMILIES.values():
        pattern = family.tasks.get(source)
        if pattern is not None and re.fullmatch(pattern, task):
            return family
    return FAMILIES["other"]


def of_namespace(namespace: str | None) -> Family | None:
    """The family that owns a Gymnasium id namespace (``"MinAtar"``), or None."""
    return next((f for f in FAMILIES.values() if namespace is not None and namespace in f.namespaces), None)


def of_gymnasium(namespace: str | None, entry_point: str) -> Family:
    """The family of a registered Gymnasium id, from its namespace and entry point."""
    family = of_namespace(namespace)
    if family is not None:
        return family
    for family in FAMILIES.values():
        if any(entry_point.startswith(p) for p in family.entry_points):
            return family
    return FAMILIES["other"]


def of_id(env_id: str) -> Family | None:
    """The family of ``env_id`` from the id text alone, without importing any environment
    package (what records and reports use); None for a Gymnasium id that only the
    registry can place (``CartPole-v1``: :func:`streamrl.envs.gym.family_of` asks it)."""
    source = source_of(env_id)
    if source != "gymnasium":
        return of_task(source, env_id[len(SOURCES[source].prefix):])
    namespace, _, name = env_id.rpartition("/")
    if namespace:
        return of_namespace(namespace) or FAMILIES["other"]
    return next((f for f in FAMILIES.values() if f.names is not None and f.names(env_id)), None)


def imported_module(env_id: str) -> str | None:
    """The Python module a Gymnasium ``module:Env-v0`` id imports to register itself, or None."""
    if source_of(env_id) != "gymnasium" or ":" not in env_id:
        return None
    return env_id.split(":", 1)[0]


def check_recorded_id(env_id: str, where, allowed: bool) -> None:
    """Refuse to import code named by a run directory (``where``) unless ``allowed``: a
    ``module:Env-v0`` id recorded in a run's config.json would run that module.

    Raises:
      ConfigError: the id imports a module and ``allowed`` is False.
    """
    module = imported_module(env_id)
    if module is not None and not allowed:
        from streamrl.errors import ConfigError

        raise ConfigError(
            f"{where} names the environment {env_id!r}, which imports the Python module {module!r}; "
            "pass --allow-env-import if you trust that run directory"
        )


def human_game(env_id: str) -> str | None:
    """The Atari game whose reference scores human-normalise ``env_id``'s returns, or None
    for every id of a family without human-normalised scores (MinAtar's Breakout among
    them). Source: :mod:`streamrl.envs.atari_scores`."""
    family = of_id(env_id)
    if family is None or not family.human_normalized:
        return None
    from streamrl.envs.atari_scores import game_of

    return game_of(env_id)


# ---------------------------------------------------------------------------------------
# What `streamrl envs` lists: which pip extra each family needs, and which registered ids
# streamrl cannot train on, decided without making any environment.

EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "streamrl[mujoco]": ("mujoco",),
    "streamrl[gymnax]": ("gymnax", "six"),
    "streamrl[brax]": ("brax", "mujoco"),
    "streamrl[envpool]": ("envpool",),
    "streamrl[minatar]": ("minatar",),
    "streamrl[atari]": ("ale_py", "cv2"),
    "streamrl[dmc]": ("shimmy", "dm_control", "mujoco"),
    "gymnasium[box2d]": ("Box2D",),
}
"""pip extra → the top-level modules it installs (the extras of pyproject.toml, plus
Gymnasium's own box2d extra): an extra is installed when all of them can be found."""


def extra_for(family: Family, source: str) -> str | None:
    """The pip extra that ids of ``family`` from ``source`` need (None: none beyond
    streamrl itself): a Gymnasium id needs its family's extra, a prefixed id its source's
    (``gymnax:CartPole-v1`` needs ``streamrl[gymnax]`` although classic control needs none)."""
    if source == "gymnasium":
        return family.extra
    extra = SOURCES[source].extra
    return None if extra is None else f"streamrl[{extra}]"


def extra_installed(extra: str | None) -> bool:
    """Whether the modules of pip extra ``extra`` can be imported (found, not imported)."""
    import importlib.util

    return extra is None or all(importlib.util.find_spec(m) is not None for m in EXTRA_MODULES.get(extra, ()))


@dataclasses.dataclass(frozen=True)
class Unlisted:
    """Registered ids streamrl cannot train on, known without making them.

    Attributes:
      source: the source of the ids (``gymnasium``, ``gymnax``, ``envpool``, ``brax``).
      reason: why, for people.
      pattern: regular expression of the task names (after the prefix; Gymnasium: the whole
        id) it covers; None: any.
      family: only ids of this family (``toy_text``); None: any.
      module: EnvPool only: only tasks that EnvPool registers from this module.
    """

    source: str
    reason: str
    pattern: str | None = None
    family: str | None = None
    module: str | None = None

    def covers(self, source: str, task: str, family: str, module: str | None = None) -> bool:
        return (
            source == self.source
            and (self.pattern is None or re.fullmatch(self.pattern, task) is not None)
            and (self.family is None or family == self.family)
            and (self.module is None or module == self.module)
        )


UNLISTED: tuple[Unlisted, ...] = (
    Unlisted("gymnasium", "Gymnasium's toy-text environments have Discrete or Tuple observations; streamrl needs Box observations",
             family="toy_text"),
    Unlisted("gymnasium", "Gymnasium's tabular environments put a state index (and integer actions) in Box spaces: "
             "tables, not observations a network can use", pattern=r"tabular/.*"),
    Unlisted("gymnasium", "Gymnasium's Pusher-v4 runs only on MuJoCo < 3, and the mujoco extra installs MuJoCo 3 (use Pusher-v5)",
             pattern=r"Pusher-v4"),
    Unlisted("gymnasium", "action 0 of these games is not NOOP, which the Atari preprocessing (no-op starts) needs",
             pattern=r"(ALE/)?(Backgammon|VideoCheckers)(NoFrameskip|Deterministic)?-v\d+"),
    Unlisted("gymnasium", "shimmy's wrapper of a dm_control environment object given to it, not a task",
             pattern=r"dm_control/compatibility-env-v0"),
    Unlisted("gymnasium", "shimmy's adapters of an environment of the old gym package (named by an env_id argument), not tasks",
             pattern=r"GymV2[16]Environment-v0"),
    Unlisted("gymnax", "downloads MNIST when made, and streamrl has no network for its 28×28 observations",
             pattern=r"MNISTBandit-bsuite"),
    Unlisted("envpool", "EnvPool's Atari frames come stacked channels-first (4, 84, 84); streamrl's Atari network "
             "takes (84, 84, 4): use the ALE ids (BreakoutNoFrameskip-v4, ALE/Breakout-v5)", module="envpool.atari"),
)
"""Ids every installation registers that streamrl cannot train on, with the reason; the
other checks of :func:`trainable_ids` (entry points, spaces) need no entry here."""


def unlisted_reason(source: str, task: str, family: Family, module: str | None = None) -> str | None:
    """Why :data:`UNLISTED` leaves an id out, or None."""
    return next((u.reason for u in UNLISTED if u.covers(source, task, family.name, module)), None)


def _network_for(family: Family, obs_shape) -> bool:
    """Whether a torso fits observations of ``obs_shape`` (as :func:`streamrl.config.resolve` picks it)."""
    import math

    from streamrl.nets import torso_for_shape

    shape = tuple(int(d) for d in obs_shape)
    if not shape or math.prod(shape) == 0:
        return False
    if family.torso is not None:
        return True
    stacked = (*shape[:-1], shape[-1] * family.frame_stack) if family.frame_stack > 1 else shape
    try:
        torso_for_shape(stacked)
    except ValueError:
        return False
    return True


class _Quiet:
    """Silence what libraries print or warn while they are imported or asked for their
    registries (MuJoCo's "Failed to import warp", Gymnasium's deprecation warnings)."""

    def __enter__(self):
        import contextlib
        import io
        import warnings

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        self._stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


def _gymnasium_ids() -> list[tuple[Family, str, bool]]:
    """(family, id, trainable) for every id of Gymnasium's registry (optional families
    registered where installed). Untrainable: an entry point that cannot load (its module
    or the family's extra is missing, or it only raises, as Gymnasium's mujoco-py v2/v3
    and gym-compatibility placeholders do) or an :data:`UNLISTED` id."""
    import importlib

    import gymnasium as gym

    from streamrl.envs.gym import register_optional_families

    register_optional_families()
    modules: dict[str, object] = {}
    rows = []
    for env_id, spec in gym.registry.items():
        family = of_gymnasium(spec.namespace, str(spec.entry_point))
        entry = spec.entry_point
        if callable(entry):
            loads = not getattr(entry, "__name__", "").startswith("_raise")
        else:
            module, _, attr = str(entry).partition(":")
            if module not in modules:
                try:
                    modules[module] = importlib.import_module(module)
                except Exception:  # ImportError, gymnasium's DependencyNotInstalled, …
                    modules[module] = None
            loads = modules[module] is not None and hasattr(modules[module], attr)
        ok = loads and extra_installed(family.extra) and unlisted_reason("gymnasium", env_id, family) is None
        rows.append((family, env_id, ok))
    return rows


def _gymnax_ids() -> list[tuple[Family, str, bool]]:
    """gymnax ids, each checked as the device adapter checks it (Box observations,
    Discrete or at most 1-D Box actions) plus a network for the observation shape: the
    spaces come from ``gymnax.make`` (no reset, no step)."""
    import gymnax
    from gymnax.environments import spaces

    rows = []
    for name in gymnax.registered_envs:
        family = of_task("gymnax", name)
        ok = unlisted_reason("gymnax", name, family) is None
        if ok:
            try:
                env, params = gymnax.make(name)
                obs, act = env.observation_space(params), env.action_space(params)
            except Exception:
                ok = False
            else:
                ok = (
                    isinstance(obs, spaces.Box)
                    and (isinstance(act, spaces.Discrete) or (isinstance(act, spaces.Box) and len(act.shape) <= 1))
                    and _network_for(family, obs.shape)
                )
        rows.append((family, SOURCES["gymnax"].prefix + name, ok))
    return rows


def _envpool_ids() -> list[tuple[Family, str, bool]]:
    """EnvPool ids, each checked from its spec (``envpool.make_spec``: spaces without
    making an environment) with the Gymnasium adapter's space check and a network for
    the observation shape."""
    import envpool

    from streamrl.envs.gym import _check_spaces

    try:
        from envpool.registration import registry

        modules = {task: entry[0] for task, entry in registry.specs.items()}
    except (ImportError, AttributeError):
        modules = {}
    rows = []
    for task in envpool.list_all_envs():
        family = of_task("envpool", task)
        ok = unlisted_reason("envpool", task, family, modules.get(task)) is None
        if ok:
            try:
                spec = envpool.make_spec(task)
                _check_spaces(task, spec.observation_space, spec.action_space)
                ok = _network_for(family, spec.observation_space.shape)
            except Exception:  # UnsupportedSpaceError, or a task whose spec cannot load (Procgen without Qt)
                ok = False
        rows.append((family, SOURCES["envpool"].prefix + task, ok))
    return rows


def _brax_ids() -> list[tuple[Family, str, bool]]:
    """brax ids: every brax task has vector observations and Box actions in [-1, 1]."""
    from brax import envs as brax_envs

    return [(of_task("brax", name), SOURCES["brax"].prefix + name, True) for name in sorted(brax_envs._envs)]


_LISTERS = {"gymnasium": _gymnasium_ids, "gymnax": _gymnax_ids, "envpool": _envpool_ids, "brax": _brax_ids}


def registered_ids(sources=None) -> list[tuple[Family, str, str, bool]]:
    """(family, source, id, trainable) for every id registered by the installed sources
    (``sources``: the source names to ask; None: all), in no particular order. Nothing is
    made: the checks are the cheap ones described by each source's lister and
    :data:`UNLISTED`. Library output printed meanwhile is silenced."""
    rows = []
    with _Quiet():
        for source, lister in _LISTERS.items():
            if sources is not None and source not in sources:
                continue
            if source != "gymnasium" and not extra_installed(extra_for(FAMILIES["other"], source)):
                continue
            rows += [(family, source, env_id, ok) for family, env_id, ok in lister()]
    return rows


def trainable_ids(sources=None) -> list[tuple[Family, str, str]]:
    """(family, source, id) of the registered ids streamrl can train on (:func:`registered_ids`)."""
    return [(family, source, env_id) for family, source, env_id, ok in registered_ids(sources) if ok]
