"""The training configuration (what ``streamrl train`` takes) and its resolution into an
agent description and hyper-parameters for one environment.

Defaults are the paper's single hyper-parameter set (arXiv:2410.14606, Table 2;
docs/algorithms.md "Hyper-parameters"); per-family values (network width, run length, ε
schedule) are filled in by :func:`resolve` when left as ``None``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Annotated, Literal

import tyro

from streamrl import families
from streamrl.agents import ALGORITHMS, AgentConfig, HParams
from streamrl.errors import ConfigError, UnsupportedSpaceError
from streamrl.nets import CONV_HIDDEN, TORSOS, torso_for_shape
from streamrl.types import EnvSpec

__all__ = [
    "TrainConfig", "Member", "Resolved", "resolve", "check_options", "validate_hparams", "config_from_json", "load_run_config",
    "SWEEPABLE", "RESUME_FLAGS", "config_file_args",
]

Algo = Literal[tuple(ALGORITHMS)]  # type: ignore[valid-type]  (the CLI's choices: the registry's names)


def _parse_values(args: list[str]) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in args[0].split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected a number or a comma-separated list of numbers, got {args[0]!r}") from None
    if not values:
        raise ValueError("expected at least one value")
    return values


Values = Annotated[
    tuple[float, ...],
    tyro.constructors.PrimitiveConstructorSpec(
        nargs=1,
        metavar="FLOAT[,FLOAT...]",
        instance_from_str=_parse_values,
        is_instance=lambda x: isinstance(x, tuple) and all(isinstance(v, (int, float)) for v in x),
        str_from_instance=lambda x: [",".join(f"{v:g}" for v in x)],
    ),
]
"""A hyper-parameter flag: one value, or a comma-separated list that becomes a grid axis."""

# TrainConfig field → HParams field for the hyper-parameters that can be swept.
SWEEPABLE = {
    "lr": "lr",
    "gamma": "gamma",
    "lambda_": "lambda_",
    "kappa": "kappa",
    "kappa_policy": "kappa_policy",
    "entropy_coef": "entropy_coef",
    "eps_start": "eps_start",
    "eps_end": "eps_end",
    "exploration_fraction": "eps_decay_steps",
    "beta2": "beta2",
    "adam_eps": "adam_eps",
    "target_update_every": "target_update_every",
}

CLASSIC = {"optimizer": "adam", "layer_norm": False, "sparsity": 0.0, "normalize_obs": False, "scale_reward": False}
"""The classic preset's switches (none of the stream-x ingredients; Adam on the trace
update): ``--preset classic``, DQN1's defaults and ``streamrl barrier``'s classic-adam."""

FLOAT32_MAX = 3.4028234663852886e38

DEFAULT_TIME_LIMIT = 1000
"""T of the time feature for environments without an episode limit."""


@dataclasses.dataclass
class TrainConfig:
    """Train a stream-x agent on one environment stream."""

    algo: tyro.conf.Positional[Algo] = "q"
    """ac: Stream AC(λ); q: Stream Q(λ); sarsa: Stream SARSA(λ); td: Stream TD(λ) prediction of
    the return under a uniform-random policy; dqn1: the batch-1 DQN baseline (target
    network, Adam; the classic settings by default)."""
    env: str = "CartPole-v1"
    """Environment id: Gymnasium (CartPole-v1, HalfCheetah-v5, MinAtar/Breakout-v1,
    ALE/Breakout-v5, dm_control/cheetah-run-v0, …), gymnax:<name>, brax:<name> or
    envpool:<task> (`streamrl envs` lists them)."""
    total_steps: int | None = None
    """Environment steps per agent (default, as in the paper: 500k classic control, 2M
    MuJoCo and DM Control, 5M MinAtar Q and 10M MinAtar AC/SARSA, 10M Atari (40M frames),
    1M otherwise)."""
    seed: int = 0
    """Seed of the first agent; a fleet of --num-seeds N uses seed, seed+1, …, seed+N-1."""
    num_seeds: int = 1
    """Independent seeds per hyper-parameter setting. Every flag below also takes a
    comma-separated list (--lambda 0.0,0.8,0.95 --kappa 1,2): the fleet is the grid of all
    lists × seeds, trained together as one vmapped fleet."""
    run_dir: Path | None = None
    """Run directory (default: runs/<env>_<algo>_s<seed>_<time>; a fleet of seeds
    _s<first>-<last>_, and each swept flag with its values: _lambda0,0.8_)."""

    lr: Values = (1.0,)
    """ObGD step size."""
    gamma: Values = (0.99,)
    """Discount γ."""
    lambda_: Annotated[Values, tyro.conf.arg(name="lambda")] = (0.8,)
    """Trace decay λ in [0, 1]."""
    kappa: Values = (2.0,)
    """ObGD bounding factor κ of the value / Q network (0 disables the bound)."""
    kappa_policy: Values = (3.0,)
    """κ of Stream AC's policy network."""
    entropy_coef: Values = (0.01,)
    """Entropy coefficient of Stream AC."""
    eps_start: Values = (1.0,)
    """ε-greedy start value (Q, SARSA)."""
    eps_end: Values = (0.01,)
    """ε-greedy final value."""
    exploration_fraction: Values | None = None
    """Fraction of the run over which ε decays linearly (default, as the official scripts
    run: 0.2 for MinAtar Q, 50,000 steps for MinAtar SARSA, 0.05 otherwise)."""
    life_loss: Literal["continue", "restart"] = "continue"
    """Atari: a lost life is terminal for the learner. continue: the game and the frame
    stack go on (the official code's, and the paper's numbers); restart: the learner starts
    a new episode (no-op, FIRE, fresh frame stack: OpenAI Baselines' wrappers)."""
    optimizer: Literal["obgd", "adaptive", "sgd", "adam"] = "obgd"
    """ObGD (the paper's), AdaptiveObGD (second-moment scaling), or the classic baselines:
    sgd (the trace update lr·δz with no bound) and adam (Adam on δz; β₁ 0.9, --beta2,
    --adam-eps). --lr is each one's step size: ObGD's 1.0 is far too large for sgd and
    adam (e.g. --lr 1e-3)."""
    layer_norm: bool = True
    """Parameter-free LayerNorm after every hidden layer (the paper's); --no-layer-norm is
    the LayerNorm ablation. (Sparse-init ablation: --sparsity 0, a dense init with the same
    ±1/√fan_in bound.)"""
    beta2: Values = (0.999,)
    """AdaptiveObGD second-moment decay."""
    adam_eps: Values = (1e-8,)
    """AdaptiveObGD ε (inside the square root)."""
    target_update_every: Values = (1000.0,)
    """dqn1: steps between copies of the online Q-network into the target network."""
    preset: Literal["stream-x", "classic"] = "stream-x"
    """classic: the classic baseline, i.e. --optimizer adam --lr 1e-3 --no-layer-norm --sparsity 0
    --no-normalize-obs --no-scale-reward, each only where its flag is left at stream-x's
    default (dqn1 always runs classic, with --lr 1e-4 and --lambda 0)."""
    hidden: tuple[int, ...] | None = None
    """Hidden widths (default: 32 32 for Q/SARSA, 128 128 for AC/TD; conv torsos 128 / 256)."""
    torso: Literal["auto", "mlp", "minatar", "atari"] = "auto"
    """Network torso; auto picks it from the observation shape."""
    sparsity: float = 0.9
    """Sparse-init fraction of zero weights per unit."""
    truncation: Literal["terminate", "bootstrap"] = "terminate"
    """terminate: no bootstrap at a truncated episode end (the paper's; the time feature
    compensates); bootstrap: bootstrap from v(s′) when truncated."""
    time_feature: Literal["auto", "on", "off"] = "auto"
    """Append τ = −0.5 + max(t − 1, 0)/T to observations (auto: on for vector observations)."""
    max_episode_steps: int | None = None
    """Episode cap (default 10,000 for classic control, the env's limit otherwise)."""
    normalize_obs: bool = True
    """Welford observation normalisation."""
    scale_reward: bool = True
    """Reward scaling by the discounted-return trace deviation."""
    progress: bool = True
    """Show the progress bar."""
    chunk_steps: int = 10_000
    """Device environments (gymnax:, brax:): steps per jitted lax.scan chunk; records and the
    progress bar update between chunks."""
    checkpoint_every: int = 100_000
    """Write a checkpoint (the whole learner state, atomically, with the episode records
    flushed) every this many steps, and at the end; 0: only at the end."""
    resume: Path | None = None
    """Continue the run in this directory from its last checkpoint, with its recorded
    options (only --total-steps, --checkpoint-every and --progress may change). Device
    runs (gymnax:, brax:) continue exactly; host environments start a fresh episode."""
    allow_env_import: bool = False
    """With --resume: allow a recorded `module:Env-v0` id to import its module (a run
    directory is never trusted to run code by default)."""
    schedule_steps: tyro.conf.Suppress[int | None] = None
    """(Set by --resume, not a flag.) The run length the ε schedule was laid out for, so a
    resumed run that changes --total-steps keeps its schedule."""
    tensorboard: bool = True
    """Write TensorBoard scalars per agent to <run dir>/tb (episodic return and length,
    |δ| statistics, ObGD step size, overshooting rate, SPS)."""
    wandb: bool = False
    """Also log the TensorBoard scalars to Weights & Biases (pip install 'streamrl[wandb]');
    WANDB_MODE=offline works without network (`wandb sync <run dir>/wandb/...` later)."""
    wandb_project: str = "streamrl"
    """W&B project of --wandb."""
    eval_every: int = 0
    """Every this many steps (and at the end), evaluate each agent: --eval-episodes episodes
    with its evaluation policy (greedy; AC: most probable action or mean), normalisers
    frozen, nothing learned, on environment seeds it does not train on; recorded in
    <run dir>/evaluations.csv and TensorBoard. Learning is unchanged. 0: off."""
    eval_episodes: int = 5
    """Episodes per agent of each --eval-every evaluation."""
    config: Path | None = None
    """Options from a TOML or YAML file (keys are the flag names: `lambda = [0.0, 0.8]`,
    `total-steps = 100000`), or a run's config.json to re-run it in a new run directory;
    flags given after it win."""


def config_from_json(options: dict) -> TrainConfig:
    """The TrainConfig a run directory's ``config.json`` recorded under ``options``
    (JSON lists become tuples, paths become Path). Raises ConfigError for an unknown
    option (a run written by another streamrl version)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"config.json has options this streamrl does not know: {', '.join(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    # Runs written before --life-loss existed restarted the learner's episode at a lost life.
    values.setdefault("life_loss", "restart")
    if values.get("run_dir") is not None:
        values["run_dir"] = Path(values["run_dir"])
    return TrainConfig(**values)


def load_run_config(run_dir: Path) -> tuple[TrainConfig, dict]:
    """The TrainConfig a run directory was trained with, and its whole ``config.json``
    (read by :func:`streamrl.results.load_config`).

    Raises:
      ConfigError: no ``config.json`` (not a run directory), or a damaged one.
    """
    from streamrl.results import load_config

    recorded = load_config(run_dir)
    if recorded.get("kind") == "prediction":
        raise ConfigError(
            f"{run_dir} is a `streamrl predict` run: `streamrl plot` draws it; eval and --resume take `streamrl train` runs"
        )
    try:
        return config_from_json(recorded["options"]), recorded
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{Path(run_dir) / 'config.json'} is damaged ({type(exc).__name__}: {exc})") from None


@dataclasses.dataclass(frozen=True)
class Member:
    """One agent of a fleet: its seed and hyper-parameters (Python floats)."""

    seed: int
    hparams: HParams


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A TrainConfig made concrete for one environment.

    Attributes:
      agent: the static agent description (shared by every member).
      members: the fleet, grid-major then seed (one member for a plain run).
      swept: names of the HParams fields that take more than one value in the fleet.
      total_steps: environment steps per agent.
    """

    agent: AgentConfig
    members: tuple[Member, ...]
    swept: tuple[str, ...]
    total_steps: int

    @property
    def hparams(self) -> HParams:
        """The first member's hyper-parameters (a plain run's)."""
        return self.members[0].hparams


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def validate_hparams(hp: HParams) -> None:
    """Raise ``ValueError`` (the config layer: messages name the CLI flags) with a one-line, actionable message for an invalid setting.

    Checks: lr > 0, γ and λ in [0, 1], κ ≥ 0 (0 disables the ObGD bound), entropy ≥ 0,
    ε ends in [0, 1], ε decay steps > 0, β₂ in [0, 1), adam ε > 0, flags 0 or 1, all finite.
    """
    for name, value in hp._asdict().items():
        v = float(value)
        _check(math.isfinite(v), f"--{_flag(name)} must be a finite number, got {value}")
        # the jitted step computes in float32: 1e39 would become inf there
        _check(abs(v) <= FLOAT32_MAX, f"--{_flag(name)} must be a float32 number (|x| <= {FLOAT32_MAX:.3g}), got {value}")
    _check(hp.lr > 0, f"--lr must be > 0, got {hp.lr}")
    _check(0 <= hp.gamma <= 1, f"--gamma must be in [0, 1], got {hp.gamma}")
    _check(0 <= hp.lambda_ <= 1, f"--lambda must be in [0, 1], got {hp.lambda_}")
    _check(hp.kappa >= 0, f"--kappa must be >= 0 (0 disables the ObGD bound), got {hp.kappa}")
    _check(hp.kappa_policy >= 0, f"--kappa-policy must be >= 0, got {hp.kappa_policy}")
    _check(hp.entropy_coef >= 0, f"--entropy-coef must be >= 0, got {hp.entropy_coef}")
    _check(0 <= hp.eps_start <= 1, f"--eps-start must be in [0, 1], got {hp.eps_start}")
    _check(0 <= hp.eps_end <= 1, f"--eps-end must be in [0, 1], got {hp.eps_end}")
    _check(hp.eps_decay_steps > 0, f"epsilon decay steps must be > 0, got {hp.eps_decay_steps}")
    _check(0 <= hp.beta2 < 1, f"--beta2 must be in [0, 1), got {hp.beta2}")
    _check(hp.adam_eps > 0, f"--adam-eps must be > 0, got {hp.adam_eps}")
    _check(hp.target_update_every >= 1, f"--target-update-every must be >= 1, got {hp.target_update_every}")
    for flag in ("bootstrap_truncated", "normalize_obs", "scale_reward"):
        _check(float(getattr(hp, flag)) in (0.0, 1.0), f"{flag} must be 0 or 1")


def _flag(name: str) -> str:
    return "lambda" if name == "lambda_" else name.replace("_", "-")


RESUME_FLAGS = ("resume", "total_steps", "checkpoint_every", "progress", "schedule_steps", "allow_env_import")
"""The TrainConfig fields ``--resume`` takes from the command line; every other option is
the recorded run's."""


def flag_name(field: str) -> str:
    """The CLI flag of a TrainConfig field (``lambda_`` → ``--lambda``)."""
    return "--" + ("lambda" if field == "lambda_" else field.replace("_", "-"))


def ignored_on_resume(cfg: TrainConfig) -> list[str]:
    """The flags of ``cfg`` (a ``--resume`` command line) that differ from the defaults and
    that a resume would not use: the run continues with its recorded options."""
    defaults = TrainConfig()
    return [
        flag_name(f.name) for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUME_FLAGS and getattr(cfg, f.name) != getattr(defaults, f.name)
    ]


def apply_preset(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the classic preset's settings (:data:`CLASSIC`, Adam's step size
    ``classic_lr`` of the algorithm, and λ = 0 for DQN1) in every option left at stream-x's
    default, when ``--preset classic`` is given or the algorithm is a classic baseline
    (DQN1); otherwise ``cfg`` unchanged. An option given explicitly keeps its value, unless
    it equals stream-x's default (a flag cannot tell "given" from "default")."""
    import dataclasses

    algorithm = ALGORITHMS.get(cfg.algo)
    if algorithm is None or not (cfg.preset == "classic" or algorithm.classic):
        return cfg
    default = TrainConfig()
    changes = {k: v for k, v in CLASSIC.items() if getattr(cfg, k) == getattr(default, k)}
    if tuple(cfg.lr) == default.lr:
        changes["lr"] = (algorithm.classic_lr,)
    if algorithm.classic and tuple(cfg.lambda_) == default.lambda_:
        changes["lambda_"] = (0.0,)
    return dataclasses.replace(cfg, preset="classic", **changes)


def check_options(cfg: TrainConfig) -> None:
    """Refuse options that are invalid whatever the environment, before anything is made
    or written (``streamrl train`` calls it first; :func:`resolve` again).

    Raises:
      ConfigError: one line naming the flag.
    """
    if cfg.algo not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {cfg.algo!r}; choose one of {', '.join(ALGORITHMS)}")
    for flag, value, bound in (
        ("--total-steps", cfg.total_steps, "> 0"),
        ("--max-episode-steps", cfg.max_episode_steps, "> 0"),
        ("--num-seeds", cfg.num_seeds, ">= 1"),
        ("--eval-every", cfg.eval_every, ">= 0"),
        ("--eval-episodes", cfg.eval_episodes, ">= 1"),
        ("--chunk-steps", cfg.chunk_steps, "> 0"),
        ("--checkpoint-every", cfg.checkpoint_every, ">= 0 (0: only at the end)"),
    ):
        if value is not None and value < (0 if bound.startswith(">= 0") else 1):
            raise ConfigError(f"{flag} must be {bound}, got {value}")
    algorithm = ALGORITHMS[cfg.algo]
    if algorithm.classic and any(v != 0 for v in cfg.lambda_):
        raise ConfigError(f"{cfg.algo} is one-step Q-learning with a target network: --lambda must be 0, got {','.join(f'{v:g}' for v in cfg.lambda_)}")
    if not algorithm.classic and tuple(cfg.target_update_every) != TrainConfig.target_update_every:
        raise ConfigError(f"--target-update-every: {cfg.algo} has no target network (dqn1 has)")
    if cfg.eval_every and not ALGORITHMS[cfg.algo].has_policy:
        raise ConfigError(f"--eval-every: {cfg.algo} learns the value of a fixed random policy and has no policy to evaluate")
    if cfg.hidden is not None and (not cfg.hidden or any(h <= 0 for h in cfg.hidden)):
        raise ConfigError(f"--hidden must list positive layer widths, got {tuple(cfg.hidden)}")
    if cfg.resume is None and cfg.run_dir is not None and str(cfg.run_dir).strip() in ("", "."):
        raise ConfigError("--run-dir is empty; name a directory for the run (default: runs/<env>_<algo>_s<seed>_<time>)")


def resolve(cfg: TrainConfig, spec: EnvSpec) -> Resolved:
    """Fill the defaults of the environment's family (:mod:`streamrl.families`) and validate.

    Raises:
      ConfigError: an invalid hyper-parameter, or an algorithm that cannot run on the
        environment's action space.
      UnsupportedSpaceError: no network for the observation shape.
    """
    check_options(cfg)
    algorithm = ALGORITHMS[cfg.algo]
    if algorithm.requires_discrete and not spec.discrete:
        raise ConfigError(
            f"Stream {cfg.algo.upper()}(λ) needs Discrete actions and {spec.env_id} has Box actions; "
            "use `streamrl train ac`"
        )
    family = families.get(spec.family)
    schedule_as = algorithm.schedule_as or cfg.algo
    total_steps = family.default_total_steps(schedule_as) if cfg.total_steps is None else cfg.total_steps
    # The ε schedules the official scripts actually run (docs/algorithms.md "Hyper-parameters").
    fractions = cfg.exploration_fraction or (family.exploration_fraction(schedule_as, cfg.schedule_steps or total_steps),)
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise ConfigError(f"--exploration-fraction must be in (0, 1], got {fraction}")
    if not 0 <= cfg.sparsity < 1:
        raise ConfigError(f"--sparsity must be in [0, 1), got {cfg.sparsity}")
    from streamrl.optim import OPTIMIZERS

    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    frame_stack = spec.frame_stack
    stacked = (*spec.obs_shape[:-1], spec.obs_shape[-1] * frame_stack) if frame_stack > 1 else spec.obs_shape
    try:
        torso = (family.torso or torso_for_shape(stacked)) if cfg.torso == "auto" else cfg.torso
    except ValueError as exc:
        raise UnsupportedSpaceError(f"{spec.env_id}: {exc}") from None
    assert torso in TORSOS
    if cfg.hidden is not None:
        hidden = tuple(cfg.hidden)
    elif torso in CONV_HIDDEN:
        hidden = CONV_HIDDEN[torso]
    else:
        hidden = algorithm.default_hidden(spec.discrete)
    use_time = cfg.time_feature == "on" or (cfg.time_feature == "auto" and torso == "mlp")
    flags = dict(
        bootstrap_truncated=1.0 if cfg.truncation == "bootstrap" else 0.0,
        normalize_obs=1.0 if cfg.normalize_obs else 0.0,
        scale_reward=1.0 if cfg.scale_reward else 0.0,
    )
    grid = [fractions if field == "exploration_fraction" else tuple(getattr(cfg, field)) for field in SWEEPABLE]
    swept = tuple(SWEEPABLE[f] for f, values in zip(SWEEPABLE, grid) if len(values) > 1)
    members = []
    for values in itertools.product(*grid):
        hp = dict(zip(SWEEPABLE.values(), values))
        # a fraction on the CLI, of the run length the schedule was laid out for
        hp["eps_decay_steps"] = max(hp["eps_decay_steps"] * (cfg.schedule_steps or total_steps), 1.0)
        hparams = HParams(**hp, **flags)
        try:
            validate_hparams(hparams)  # once per setting: the seeds share it
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        members.extend(Member(cfg.seed + i, hparams) for i in range(cfg.num_seeds))
    try:
        agent = AgentConfig(
            obs_shape=spec.obs_shape,
            discrete=spec.discrete,
            action_dim=spec.action_dim,
            torso=torso,
            hidden=hidden,
            optimizer=cfg.optimizer,
            time_limit=(spec.time_limit or DEFAULT_TIME_LIMIT) if use_time else None,
            sparsity=cfg.sparsity,
            layer_norm=cfg.layer_norm,
            action_low=spec.action_low,
            action_high=spec.action_high,
            frame_stack=frame_stack,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Resolved(agent, tuple(members), swept, int(total_steps))


CONFIG_FILE_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
_NOT_FROM_FILES = ("run_dir", "resume", "schedule_steps", "config", "allow_env_import")
"""Options a config file does not set: where to write and what to resume are the command
line's; so is permission to import code (a config file is not trusted to run code)."""


def _read_config_file(path: Path) -> dict:
    """The mapping a TOML, YAML or JSON file holds (a run's ``config.json``: its recorded
    ``options``, without where it was written)."""
    suffix = path.suffix.lower()
    if suffix not in CONFIG_FILE_SUFFIXES:
        raise ConfigError(f"--config {path}: use a .toml, .yaml or .json file (a run's config.json re-runs that run)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not UTF-8 text") from None
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            import json

            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001  (each parser has its own error class)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"--config {path}: not valid {suffix[1:].upper()} ({type(exc).__name__}: {first[:120]})") from None
    if suffix == ".json" and isinstance(data, dict) and isinstance(data.get("options"), dict):
        # a run's config.json: its options, not where it was written or how it was watched
        data = {k: v for k, v in data["options"].items() if k not in (*_NOT_FROM_FILES, "progress")}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a table of options (flag = value), got {type(data).__name__}")
    return data


def config_file_args(path: Path) -> list[str]:
    """The ``streamrl train`` arguments that the config file ``path`` means: a TOML or YAML
    table of options named as the flags (``lambda = [0.0, 0.8]``, ``total-steps = 100000``;
    ``total_steps`` also works), or a run's ``config.json`` (re-runs that run's options in a
    new run directory). A list is a comma-separated flag value (a sweep axis); ``true`` /
    ``false`` are ``--flag`` / ``--no-flag``; ``algo`` is the positional algorithm. Flags
    given on the command line after ``--config`` win over the file's.

    Raises:
      ConfigError: an unreadable or invalid file, an unknown option (with close matches),
        an option a file may not set (run-dir, resume, allow-env-import), or a value the
        flag would refuse — one line naming the file and the option.
    """
    path = Path(path)
    return config_mapping_args(_read_config_file(path), path)


def config_mapping_args(data: dict, path: Path) -> list[str]:
    """:func:`config_file_args` of an already-read table ``data`` (``path`` names it in errors)."""
    import difflib

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    by_flag = {flag_name(name)[2:]: name for name in fields}
    args: list[str] = []
    for key, value in data.items():
        name = key if key in fields else by_flag.get(str(key).replace("_", "-"))
        if name is None or name in _NOT_FROM_FILES:
            if name in _NOT_FROM_FILES:
                if value is None or (name == "allow_env_import" and value is False):
                    continue
                raise ConfigError(f"--config {path}: {key} cannot come from a file; give {flag_name(name)} on the command line")
            close = difflib.get_close_matches(str(key).replace("_", "-"), list(by_flag), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see streamrl train --help"
            raise ConfigError(f"--config {path}: unknown option {key!r}{hint}")
        if value is None:
            continue
        if name == "algo":
            args.insert(0, str(value))  # the positional first
        else:
            args += _file_value_args(name, fields[name].type, value)
    _check_file_args(path, args)
    return args


def _file_value_args(name: str, kind: str, value) -> list[str]:
    flag = flag_name(name)
    if kind == "bool" or isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, (list, tuple)):
        if "Values" in str(kind):
            return [flag, ",".join(str(v) for v in value)]
        return [flag, *(str(v) for v in value)]
    return [flag, str(value)]


def _check_file_args(path: Path, args: list[str]) -> None:
    """Parse the file's arguments as the command line would; a value the flag refuses is one
    line naming the option (tyro's own message is a multi-line box)."""
    import contextlib
    import io

    def refused(argv: list[str]) -> str | None:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                tyro.cli(TrainConfig, args=argv, console_outputs=False)
        except SystemExit:
            return err.getvalue() or "invalid"
        return None

    if refused(args) is None:
        return
    i = 0
    while i < len(args):  # find the option: parse each on its own
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        if refused(args[i:j]) is not None:
            option = args[i][2:] if args[i].startswith("--") else "algo"
            raise ConfigError(f"--config {path}: invalid value for {option}: {' '.join(args[i + 1:j] or args[i:j])}")
        i = j
    raise ConfigError(f"--config {path}: its options do not parse together: {' '.join(args)}")
