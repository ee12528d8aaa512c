"""Evaluation of trained agents: ``streamrl eval RUN_DIR``.

Loads the final agent state that ``streamrl train`` checkpointed in the run directory,
then runs each agent for a number of episodes with its evaluation policy (greedy for
Q(λ) and SARSA(λ); the most probable action or the Gaussian mean μ for AC(λ)) and its
normalisers frozen: observations are normalised with the statistics the agent ended with,
and nothing is learned. Episodes are the reported kind (Atari: full games, not lives).
Optionally writes a video (MP4 or GIF) of the first evaluation episode.

Results go to ``eval.json`` in the run directory: per agent, the episodic returns and
lengths, their mean, and for Atari the human-normalised mean
(:mod:`streamrl.envs.atari_scores`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from streamrl.agents import ALGORITHMS
from streamrl.config import load_run_config, resolve
from streamrl.errors import ConfigError, MissingExtraError, StreamRLError

__all__ = ["evaluate", "Evaluator", "write_video", "EVAL_SEED_OFFSET", "EVAL_EPISODE_CAP"]

EVAL_SEED_OFFSET = 1_000_003
"""Evaluation environments use seed ``agent seed + EVAL_SEED_OFFSET``: episodes the agent
did not train on, reproducible from the run's seeds."""

EVAL_EPISODE_CAP = 27_000
"""Evaluation episodes of environments without a time limit (MinAtar) are cut after this
many agent steps (108,000 frames at frame skip 4, the Atari convention of Machado et al.
2018), so a policy that never loses cannot hang the evaluation; such episodes are marked
``"cut": true``."""


def _env_factory(env_id: str, max_episode_steps: int | None, life_loss: str):
    """(spec, make(seed, render) -> one environment with the GymnasiumEnv interface) for
    a Gymnasium or device id (the id's source, :mod:`streamrl.families`)."""
    from streamrl import families

    source = families.source_of(env_id)
    if families.SOURCES[source].driver == "device":
        from streamrl.envs.device import make_device_env

        env = make_device_env(env_id, max_episode_steps)
        return env.spec, lambda seed, render: _DeviceEpisodes(env, seed, render)
    if source != "gymnasium":
        raise ConfigError(
            f"evaluate {env_id} on its Gymnasium twin: pass --env with a Gymnasium id (e.g. --env {env_id.split(':', 1)[1]})"
        )
    from streamrl.envs.gym import make_env

    probe = make_env(env_id, 0, max_episode_steps, life_loss=life_loss)
    spec = probe.spec
    probe.close()
    return spec, lambda seed, render: make_env(env_id, seed, max_episode_steps, "rgb_array" if render else None, life_loss=life_loss)


class _DeviceEpisodes:
    """A JAX-native environment stepped from Python with the host adapter's interface."""

    def __init__(self, env, seed: int, render: bool):
        if render:
            raise ConfigError(f"{env.spec.env_id}: videos need a Gymnasium environment (gymnax and brax do not render frames)")
        self.spec = env.spec
        self._reset = jax.jit(env.reset)
        self._step = jax.jit(env.step)
        self._key = jax.random.PRNGKey(seed)
        self._t = 0
        self._return, self._length = 0.0, 0

    def reset(self):
        self._state, obs = self._reset(jax.random.fold_in(self._key, 0))
        return np.asarray(obs)

    def step(self, action):
        self._t += 1
        self._state, ts = self._step(jax.random.fold_in(self._key, self._t), self._state, jnp.asarray(action))
        ts = jax.tree_util.tree_map(np.asarray, ts)
        self._return += float(ts.reward)
        self._length += 1
        episode = None
        if bool(ts.terminated) or bool(ts.truncated):
            episode = (self._return, self._length)
            self._return, self._length = 0.0, 0
        return ts, episode

    def close(self) -> None:
        """Nothing to release: a JAX environment holds no outside resources."""


def _to_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    """A rendered frame as uint8 RGB with even sides, small frames (MinAtar's 10×10)
    scaled up by an integer factor (nearest neighbour) to at least 160 pixels."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255).astype(np.uint8) if frame.max(initial=0) <= 1.0 else np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        frame = np.stack([frame] * 3, axis=-1)
    scale = max(1, math.ceil(160 / frame.shape[0]))
    if scale > 1:
        frame = frame.repeat(scale, axis=0).repeat(scale, axis=1)
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    """Write ``frames`` (uint8 RGB [H, W, 3] or anything :func:`_to_rgb_uint8` takes) to
    ``path``: ``.gif`` (Pillow, through imageio) or ``.mp4`` (H.264, through imageio-ffmpeg).

    Raises:
      MissingExtraError: imageio (or imageio-ffmpeg for MP4) is not installed.
      ConfigError: another suffix, or no frames.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ConfigError(f"--video-file must end in .mp4 or .gif, got {path.name!r}")
    if not frames:
        raise ConfigError("no frames to write")
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise MissingExtraError("writing videos needs imageio: pip install 'streamrl[video]'") from None
    frames = [_to_rgb_uint8(f) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        imageio.mimsave(path, frames, format="GIF", duration=1000.0 / fps, loop=0)
        return path
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise MissingExtraError("MP4 videos need imageio-ffmpeg: pip install 'streamrl[video]' (or pass --video-file x.gif)") from None
    import warnings

    with warnings.catch_warnings():  # ffmpeg runs as a subprocess; the fork warning does not apply to exec
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        imageio.mimsave(path, frames, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)
    return path


def _default_video_path(run_dir: Path, agent: int) -> Path:
    try:
        import imageio_ffmpeg  # noqa: F401

        suffix = ".mp4"
    except ImportError:
        suffix = ".gif"
    return Path(run_dir) / "videos" / f"eval_agent{agent}{suffix}"


def _fps(env, family: str) -> float:
    from streamrl import families

    return families.get(family).fps((getattr(getattr(env, "env", None), "metadata", {}) or {}).get("render_fps"))


def evaluate(
    run_dir: Path,
    *,
    episodes: int = 10,
    agents: tuple[int, ...] | None = None,
    video: bool = False,
    video_file: Path | None = None,
    env_id: str | None = None,
    seed_offset: int = EVAL_SEED_OFFSET,
    max_video_frames: int = 5_000,
    allow_env_import: bool = False,
) -> dict:
    """Evaluate the agents of ``run_dir`` and write ``eval.json``; returns its contents.

    Args:
      run_dir: a run directory written by ``streamrl train`` (with ``checkpoints/``).
      episodes: episodes per agent (≥ 1).
      agents: indices of the fleet members to evaluate (default: all).
      video: record the first episode of the first evaluated agent.
      video_file: where (``.mp4`` or ``.gif``; default ``videos/eval_agent<i>.mp4``).
      env_id: evaluate on another id with the same spaces (e.g. the Gymnasium twin of an
        ``envpool:`` task); default: the run's.
      seed_offset: environment seed = agent seed + ``seed_offset``.
      max_video_frames: the video stops after this many frames (a long episode of
        CartPole at the 10,000-step cap would make a 5-minute video); ``eval.json``'s
        ``video_frames`` says whether it cut the episode (``--video-frames``).
      allow_env_import: let a recorded ``module:Env-v0`` id import its module.

    Raises:
      ConfigError: not a run directory, bad arguments (``episodes`` or ``max_video_frames`` < 1), or an algorithm without a policy
        (Stream TD(λ)).
      CheckpointError: no final state, or a corrupt or mismatched one.
      MissingExtraError: video writing or rendering needs an extra.
    """
    from streamrl import checkpoint, families
    from streamrl.engine import stack_hparams

    import os

    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame (classic-control rendering) needs no sound card
    if video and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # Headless: pygame would look for a display (the "XDG_RUNTIME_DIR is invalid" line) and
        # MuJoCo would try GLFW; render off-screen instead (a user's own setting wins).
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("MUJOCO_GL", "egl")
    if max_video_frames < 1:
        raise ConfigError(f"--video-frames must be >= 1, got {max_video_frames}")
    from streamrl.results import check_no_links

    run_dir = Path(run_dir)
    cfg, _ = load_run_config(run_dir)
    check_no_links(run_dir)
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    if not ALGORITHMS[cfg.algo].has_policy:
        raise ConfigError("Stream TD(λ) learns the value of a fixed random policy: it has no policy to evaluate")
    if env_id is None:
        families.check_recorded_id(cfg.env, run_dir / "config.json", allow_env_import)
    spec, make = _env_factory(env_id or cfg.env, cfg.max_episode_steps, cfg.life_loss)
    resolved = resolve(cfg, spec)
    members = resolved.members
    agents = tuple(range(len(members))) if agents is None else tuple(agents)
    for i in agents:
        if not 0 <= i < len(members):
            raise ConfigError(f"--agents: {i} is not an agent of this run (it has {len(members)}: 0..{len(members) - 1})")
    agent = ALGORITHMS[cfg.algo](resolved.agent)
    hparams = stack_hparams(members)
    states, meta = checkpoint.restore_fleet(run_dir, cfg, resolved, agent)
    evaluator = Evaluator(agent, resolved, spec, make, seed_offset)
    results, video_path, video_note = [], None, None
    for n, i in enumerate(agents):
        record = video and n == 0
        done_episodes, frames = evaluator.episodes(states, hparams, i, episodes, max_video_frames if record else 0)
        if record:
            video_path = write_video(video_file or _default_video_path(run_dir, i), frames, evaluator.fps)
            first = done_episodes[0]["length"] + 1  # frames of the first episode: its reset and each step
            video_note = {"frames": len(frames), "episode_frames": first, "cut": len(frames) < first}
        returns = [e["episodic_return"] for e in done_episodes]
        results.append({
            "agent": i,
            "seed": members[i].seed,
            "env_seed": members[i].seed + seed_offset,
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "episodes": done_episodes,
        })
    out = {
        "env": env_id or cfg.env,
        "algo": cfg.algo,
        "checkpoint_step": meta.get("step"),
        "policy": ALGORITHMS[cfg.algo].evaluation_policy(spec.discrete),
        "episodes_per_agent": episodes,
        "mean_return": float(np.mean([r["mean_return"] for r in results])),
        "agents": results,
        "video": None if video_path is None else str(video_path),
        **({"video_frames": video_note} if video_note else {}),
    }
    game = families.human_game(spec.env_id)
    if game is not None:
        from streamrl.envs.atari_scores import human_normalized

        out["human_normalized_mean"] = human_normalized(game, out["mean_return"])
        for r in results:
            r["human_normalized"] = human_normalized(game, r["mean_return"])
    (run_dir / "eval.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


class Evaluator:
    """Evaluation episodes of a fleet's agents: each agent acts with its evaluation policy
    (greedy for Q and SARSA, most probable action or mean for AC; ``greedy_action``), its
    observation normaliser frozen (``frozen_observation``), nothing learned, on environment
    seed ``agent seed + seed_offset``. Used by ``streamrl eval`` and by ``streamrl train
    --eval-every`` (the fleet state is read, never changed: learning is the same with and
    without evaluations). One jitted policy call per environment step.

    Args:
      agent: the fleet's agent (a :class:`~streamrl.agents.StreamAgent`).
      resolved: the run's :class:`~streamrl.config.Resolved`.
      spec, make: the environment factory of :func:`_env_factory`.
    """

    def __init__(self, agent, resolved, spec, make, seed_offset: int = EVAL_SEED_OFFSET):
        self.agent, self.resolved, self.spec, self._make = agent, resolved, spec, make
        self.seed_offset = seed_offset
        self.fps = None

        @jax.jit
        def policy(state, hp, raw_obs, prev_x, episode_step, new_episode):
            x = agent.frozen_observation(state.norm, prev_x, raw_obs, episode_step, new_episode, hp)
            return agent.greedy_action(state.params, x), x

        self._policy = policy

    @classmethod
    def for_run(cls, agent, resolved, env_id: str, max_episode_steps: int | None, life_loss: str) -> "Evaluator":
        """The evaluator of a training run on ``env_id`` (an ``envpool:`` task is evaluated
        on its Gymnasium twin)."""
        from streamrl import families

        if families.source_of(env_id) == "envpool":
            env_id = env_id.split(":", 1)[1]
        spec, make = _env_factory(env_id, max_episode_steps, life_loss)
        return cls(agent, resolved, spec, make)

    def episodes(self, states, hparams, i: int, episodes: int, video_frames: int = 0) -> tuple[list[dict], list]:
        """``episodes`` evaluation episodes of agent ``i`` of the fleet ``states`` (leaves
        [N, ...]) with hyper-parameters ``hparams`` (leaves [N]): a list of
        ``{"episodic_return", "length"}`` (``"cut": true`` when :data:`EVAL_EPISODE_CAP`
        ended it), and up to ``video_frames`` rendered frames of the first episode."""
        state_i = jax.tree_util.tree_map(lambda x: x[i], states)
        hp_i = jax.tree_util.tree_map(lambda x: x[i], hparams)
        record = video_frames > 0
        env = self._make(self.resolved.members[i].seed + self.seed_offset, record)
        frames = []
        try:
            raw = env.reset()
            if record:
                frames.append(_render(env, self.spec))
                self.fps = _fps(env, self.spec.family)
            x = jnp.zeros(self.resolved.agent.net_input_shape, jnp.float32)
            episode_step, new_episode, done_episodes = 0, True, []
            cap = None if self.spec.time_limit else EVAL_EPISODE_CAP
            total, length = 0.0, 0
            while len(done_episodes) < episodes:
                action, x = self._policy(state_i, hp_i, jnp.asarray(raw), x, jnp.int32(episode_step), jnp.bool_(new_episode))
                ts, episode = env.step(np.asarray(action))
                raw, total, length = ts.obs, total + float(ts.reward), length + 1
                new_episode = bool(ts.new_episode)
                episode_step = 0 if new_episode else episode_step + 1
                if record and not done_episodes and len(frames) < video_frames:
                    frames.append(_render(env, self.spec))
                if episode is not None:
                    done_episodes.append({"episodic_return": float(episode[0]), "length": int(episode[1])})
                    total, length = 0.0, 0
                elif cap is not None and length >= cap:
                    done_episodes.append({"episodic_return": float(total), "length": length, "cut": True})
                    raw, total, length, episode_step, new_episode = env.reset(), 0.0, 0, 0, True
        finally:
            env.close()
        return done_episodes, frames


def _render(env, spec) -> np.ndarray:
    try:
        frame = env.render()
    except Exception as exc:  # noqa: BLE001  (rendering back ends raise anything)
        from streamrl import families

        hint = families.get(spec.family).render_hint
        raise StreamRLError(f"rendering {spec.env_id} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}); {hint}") from None
    if frame is None:
        raise StreamRLError(f"{spec.env_id} rendered no frame; it may not support render_mode='rgb_array'")
    return frame
