"""The paper's benchmark families through the one host adapter: Atari (ale-py with the
paper's preprocessing), MinAtar (the minatar package) and DM Control (shimmy), and the
network each gets from its observation shape."""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from streamrl.agents import ALGORITHMS, AgentConfig, HParams, TimeStep
from streamrl.config import TrainConfig, resolve
from streamrl.envs.atari import wrap_atari
from streamrl.envs.atari_scores import REFERENCE_SCORES, game_of, human_normalized
from streamrl.envs.gym import GymnasiumEnv, make_env

MINATAR_GAMES = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}


# -- Atari ------------------------------------------------------------------------------


class RawLog(gym.Wrapper):
    """Below the preprocessing: records every emulator frame's action and reward."""

    def __init__(self, env):
        super().__init__(env)
        self.actions, self.rewards = [], []

    def step(self, action):
        out = self.env.step(action)
        self.actions.append(int(action))
        self.rewards.append(float(out[1]))
        return out

    def reset(self, **kwargs):
        self.actions.clear()
        return self.env.reset(**kwargs)


def _logged_atari(env_id="ALE/Breakout-v5", seed=0, life_loss="continue"):
    """The adapter make_env builds, with a RawLog under the preprocessing."""
    spec = make_env(env_id, seed).spec
    raw = RawLog(gym.make(env_id, frameskip=1, disable_env_checker=True))
    return GymnasiumEnv(wrap_atari(raw, life_loss=life_loss), spec, seed), raw


def test_atari_spec_shapes_dtypes_and_preprocessing_settings():
    env = make_env("ALE/Breakout-v5", 0)
    assert env.spec.family == "atari" and env.spec.obs_shape == (84, 84, 1) and env.spec.frame_stack == 4
    assert env.spec.discrete and env.spec.action_dim == 4
    obs = env.reset()
    assert obs.shape == (84, 84, 1) and obs.dtype == np.float32
    assert obs.min() >= 0 and obs.max() <= 255 and np.all(obs == np.round(obs))  # raw grayscale, not scaled
    pre = env.env
    while not isinstance(pre, gym.wrappers.AtariPreprocessing):
        pre = pre.env
    assert (pre.noop_max, pre.frame_skip, pre.screen_size, pre.terminal_on_life_loss) == (30, 4, (84, 84), False)
    assert env.env.unwrapped._frameskip == 1  # the emulator steps single frames; the preprocessing skips 4
    resolved = resolve(TrainConfig(algo="q", env="ALE/Breakout-v5"), env.spec)
    assert resolved.agent.torso == "atari" and resolved.agent.net_input_shape == (84, 84, 4)
    assert resolved.agent.time_limit is None and resolved.total_steps == 10_000_000
    assert resolved.hparams.eps_decay_steps == pytest.approx(0.05 * 10_000_000)


def test_atari_reset_does_random_noops_then_fire():
    starts = set()
    for seed in range(8):
        env, raw = _logged_atari(seed=seed)
        env.reset()
        noops = len(raw.actions) - 8  # FIRE and then action 2, four frames each
        assert raw.actions[:noops] == [0] * noops and 1 <= noops <= 30
        assert raw.actions[noops:] == [1] * 4 + [2] * 4
        starts.add(noops)
    assert len(starts) > 1  # the number of no-ops is random


def test_freeway_has_no_fire_so_reset_does_not_press_it():
    env, raw = _logged_atari("ALE/Freeway-v5")
    env.reset()
    assert set(raw.actions) == {0}


def test_life_loss_restart_ends_the_learners_episode_but_not_the_reported_game():
    env, raw = _logged_atari(seed=3, life_loss="restart")
    env.reset()
    rng = np.random.default_rng(0)
    lives = env.env.unwrapped.ale.lives()
    life_losses, game_rewards, start = 0, [], 0
    while True:
        raw_before = len(raw.rewards)
        (obs, reward, terminated, truncated, final_obs, _), episode = env.step(rng.integers(4))
        assert reward == pytest.approx(sum(raw.rewards[raw_before : raw_before + 4]))  # max-and-skip sums 4 frames
        if terminated and episode is None:
            life_losses += 1
            assert env.env.unwrapped.ale.lives() == lives - 1  # the game went on with one life fewer
            lives -= 1
            # the soft reset: one no-op step, then FIRE and action 2
            assert raw.actions[-12:] == [0] * 4 + [1] * 4 + [2] * 4
        if episode is not None:
            game_rewards.append(episode[0])
            # the reported return is the whole game's score, every life and reset step included
            assert episode[0] == pytest.approx(sum(raw.rewards[start:]))
            break
    assert life_losses == 4  # Breakout: five lives, the last one ends the game


def test_life_loss_continue_is_terminal_for_the_learner_without_any_reset():
    """The default, as the official stream-x Atari scripts run (SB3's EpisodicLifeEnv, reset
    only when the game is over): a lost life is ``terminated`` for the learner, but nothing
    is reset: no no-op, no FIRE, the next observation is the next frame, the frame stack
    goes on (``new_episode`` False); the reported episode is the whole game."""
    env, raw = _logged_atari(seed=3)
    env.reset()
    rng = np.random.default_rng(0)
    lives, life_losses, fired_at_start = env.env.unwrapped.ale.lives(), 0, list(raw.actions)
    while True:
        before = len(raw.actions)
        ts, episode = env.step(rng.integers(4))
        if episode is None:  # one agent step = four emulator frames, never more (game over resets)
            assert len(raw.actions) == before + 4
        if ts.terminated and episode is None:
            life_losses += 1
            lives -= 1
            assert env.env.unwrapped.ale.lives() == lives and not ts.new_episode
            np.testing.assert_array_equal(ts.obs, ts.final_obs)  # the agent acts on the next frame
        if episode is not None:
            assert ts.new_episode and episode[0] == pytest.approx(sum(raw.rewards))
            break
    assert life_losses == 4 and fired_at_start[-8:] == [1] * 4 + [2] * 4
    # the agent: terminal for learning (no bootstrap, traces reset), the stack goes on
    spec = make_env("ALE/Breakout-v5").spec
    agent = ALGORITHMS["q"](resolve(TrainConfig(algo="q", env=spec.env_id), spec).agent)
    hp = HParams().as_arrays()
    frames = [np.full((84, 84, 1), v, np.float32) for v in (10.0, 20.0, 30.0)]
    state = agent.init(jax.random.PRNGKey(0), jnp.asarray(frames[0]), hp)
    ts = lambda f, terminated, new_episode: jax.tree_util.tree_map(  # noqa: E731
        jnp.asarray, TimeStep(f, np.float32(0.0), terminated, False, f, new_episode)
    )
    state, _ = agent.step(state, ts(frames[1], False, False), hp)
    norm, o = agent.observe(state.norm, state.obs, ts(frames[2], True, False), hp)
    assert float(o.bootstrap) == 0.0 and bool(o.done)
    np.testing.assert_array_equal(o.act_obs, o.next_obs)  # the stack continues: s′ is what the agent acts on
    assert int(norm.obs.count) == int(state.norm.obs.count) + 1  # the frame is counted once
    _, fresh = agent.observe(state.norm, state.obs, ts(frames[2], True, True), hp)
    assert not np.array_equal(fresh.act_obs, fresh.next_obs)  # a reset starts a fresh stack


def test_runs_written_before_life_loss_existed_keep_the_restart_behaviour():
    from streamrl.config import config_from_json

    assert config_from_json({"algo": "q", "env": "ALE/Breakout-v5"}).life_loss == "restart"
    assert TrainConfig().life_loss == "continue"


def test_atari_human_normalised_scores():
    assert len(REFERENCE_SCORES) == 57
    assert human_normalized("breakout", 30.5) == pytest.approx(1.0)
    assert human_normalized("breakout", 1.7) == pytest.approx(0.0)
    assert human_normalized("pong", (14.6 - 20.7) / 2) == pytest.approx(0.5)
    assert game_of("ALE/Breakout-v5") == game_of("BreakoutNoFrameskip-v4") == "breakout"
    assert game_of("ALE/MontezumaRevenge-v5") == "montezuma_revenge" and game_of("CartPole-v1") is None
    with pytest.raises(KeyError, match="57 standard"):
        human_normalized("pitfall2", 0.0)


# -- frame stacking in the agent --------------------------------------------------------


def _welford_reference(frames):
    """Per-frame normalisation of a stream, each frame with the statistics after it was
    seen (docs/algorithms.md): an independent NumPy computation."""
    out, data = [], []
    for f in frames:
        data.append(f)
        arr = np.stack(data).astype(np.float64)
        var = arr.var(axis=0, ddof=1) if len(data) > 1 else np.ones_like(f)
        out.append((f - arr.mean(axis=0)) / np.sqrt(var + 1e-8))
    return out


def test_frames_are_normalised_one_by_one_then_stacked_newest_last():
    config = AgentConfig(obs_shape=(84, 84, 1), discrete=True, action_dim=4, torso="atari", hidden=(256,), frame_stack=4)
    agent = ALGORITHMS["q"](config)
    hp = HParams().as_arrays()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (84, 84, 1)).astype(np.float32) for _ in range(7)]
    state = jax.jit(agent.init)(jax.random.PRNGKey(0), jnp.asarray(frames[0]), hp)
    norm = _welford_reference(frames)
    np.testing.assert_allclose(state.obs, np.concatenate([norm[0]] * 4, axis=-1), rtol=1e-4, atol=1e-4)
    step = jax.jit(agent.step)
    f = jnp.asarray
    for t in range(1, 5):
        ts = TimeStep(f(frames[t]), f(0.0), f(False), f(False), f(frames[t]))
        state, _ = step(state, ts, hp)
        expected = [norm[max(0, k)] for k in range(t - 3, t + 1)]  # oldest first, padded with the first frame
        np.testing.assert_allclose(state.obs, np.concatenate(expected, axis=-1), rtol=1e-4, atol=1e-4)
    # an episode end (a life loss in Atari): s′ still stacks, the reset frame starts a new stack
    ts = TimeStep(f(frames[6]), f(1.0), f(True), f(False), f(frames[5]))
    state, _ = step(state, ts, hp)
    np.testing.assert_allclose(state.obs, np.concatenate([norm[6]] * 4, axis=-1), rtol=1e-4, atol=1e-4)


# -- MinAtar ----------------------------------------------------------------------------


@pytest.mark.parametrize("game", sorted(MINATAR_GAMES))
def test_minatar_games_spaces_and_episode_records(game):
    env = make_env(f"MinAtar/{game}-v1", seed=1)
    spec = env.spec
    assert spec.family == "minatar" and spec.obs_shape == (10, 10, MINATAR_GAMES[game]) and spec.discrete
    assert spec.frame_stack == 1
    obs = env.reset()
    assert obs.dtype == np.float32 and set(np.unique(obs)) <= {0.0, 1.0}
    rng = np.random.default_rng(0)
    total, length = 0.0, 0
    for _ in range(5000):  # random play ends every game well within this
        (obs, reward, terminated, truncated, final_obs, _), episode = env.step(rng.integers(spec.action_dim))
        total, length = total + reward, length + 1
        if episode is not None:
            break
    assert episode == (pytest.approx(total), length) and (terminated or truncated)
    resolved = resolve(TrainConfig(algo="q", env=spec.env_id), spec)
    assert resolved.agent.torso == "minatar" and resolved.agent.hidden == (128,)
    assert resolved.agent.time_limit is None  # no time feature for MinAtar
    assert resolved.hparams.normalize_obs == 1.0
    assert resolved.total_steps == 5_000_000 and resolved.hparams.eps_decay_steps == pytest.approx(1_000_000)
    assert resolve(TrainConfig(algo="ac", env=spec.env_id), spec).total_steps == 10_000_000
    # the official MinAtar SARSA script decays ε over 50,000 steps, whatever the run length
    sarsa = resolve(TrainConfig(algo="sarsa", env=spec.env_id), spec)
    assert sarsa.total_steps == 10_000_000 and sarsa.hparams.eps_decay_steps == pytest.approx(50_000)
    assert resolve(TrainConfig(algo="sarsa", env=spec.env_id, total_steps=20_000), spec).hparams.eps_decay_steps == pytest.approx(20_000)


# -- DM Control -------------------------------------------------------------------------


def test_dm_control_flattened_observations_time_feature_and_episode_records():
    env = make_env("dm_control/cheetah-run-v0", seed=0)
    spec = env.spec
    assert spec.family == "dmc" and spec.obs_shape == (17,) and not spec.discrete and spec.action_dim == 6
    assert spec.time_limit == 1000
    raw = gym.make("dm_control/cheetah-run-v0")
    expected, _ = raw.reset(seed=0)
    obs = env.reset()
    np.testing.assert_allclose(obs, np.concatenate([expected["position"], expected["velocity"]]).astype(np.float32))
    total = 0.0
    for t in range(1, 1001):
        (obs, reward, terminated, truncated, final_obs, _), episode = env.step(np.zeros(6, np.float32))
        total += reward
        if t < 1000:
            assert episode is None and not (terminated or truncated)
    assert truncated and not terminated and episode == (pytest.approx(total), 1000)
    resolved = resolve(TrainConfig(algo="ac", env=spec.env_id), spec)
    assert resolved.agent.torso == "mlp" and resolved.agent.hidden == (128, 128)
    assert resolved.agent.time_limit == 1000 and resolved.agent.net_input_shape == (18,)
    assert resolved.total_steps == 2_000_000


# -- network by observation shape --------------------------------------------------------


@pytest.mark.parametrize(
    "env_id, algo, torso, net_input",
    [
        ("CartPole-v1", "q", "mlp", (5,)),
        ("MinAtar/Breakout-v1", "q", "minatar", (10, 10, 4)),
        ("ALE/Breakout-v5", "ac", "atari", (84, 84, 4)),
    ],
)
def test_network_chosen_from_observation_shape_and_overridable(env_id, algo, torso, net_input):
    spec = make_env(env_id).spec
    resolved = resolve(TrainConfig(algo=algo, env=env_id), spec)
    assert resolved.agent.torso == torso and resolved.agent.net_input_shape == net_input
    if torso == "minatar":
        override = resolve(TrainConfig(algo=algo, env=env_id, torso="mlp", hidden=(64, 64)), spec).agent
        assert override.torso == "mlp" and override.hidden == (64, 64)


def test_atari_run_summary_adds_the_human_normalised_score(tmp_path):
    from streamrl.config import Member
    from streamrl.results import RunWriter

    members = [Member(0, HParams()), Member(1, HParams())]
    writer = RunWriter(tmp_path, members, (), "ALE/Breakout-v5")
    (tmp_path / "episodes.csv").write_text("agent,seed,end_step,episodic_return,length\n")
    for agent, score in ((0, 10.0), (1, 30.5)):
        writer.add_episode(agent=agent, end_step=100, episodic_return=score, length=100)
    summary = writer.finish(steps=100, wall_time_s=1.0, status="completed")
    assert summary["mean_return_last10pct"] == pytest.approx(20.25)
    assert summary["human_normalized_last10pct"] == pytest.approx((20.25 - 1.7) / (30.5 - 1.7))
    assert "human_normalized_last10pct" not in RunWriter(tmp_path, members, (), "CartPole-v1").write_summary(
        steps=1, wall_time_s=1.0, status="running"
    )


# -- the family table ---------------------------------------------------------------------


def test_family_table_recognises_ids_of_every_source():
    from streamrl import families
    from streamrl.envs.gym import family_of

    assert family_of("CartPole-v1").name == "classic_control" and family_of("HalfCheetah-v4").name == "mujoco"
    assert family_of("MinAtar/Breakout-v1").name == "minatar" and family_of("BreakoutNoFrameskip-v4").name == "atari"
    assert family_of("ALE/Breakout-v5").name == "atari" and family_of("dm_control/cheetah-run-v0").name == "dmc"
    assert families.of_task("gymnax", "CartPole-v1").name == "classic_control"
    assert families.of_task("gymnax", "Breakout-MinAtar").name == "minatar"
    assert families.of_task("gymnax", "FourRooms-misc").name == "gymnax"
    assert families.of_task("envpool", "Acrobot-v1").name == "classic_control"
    assert families.of_task("brax", "ant").name == "brax"
    assert families.get("no-such-family").name == "other"  # a run directory of another version
    assert {families.SOURCES[families.source_of(i)].driver for i in ("gymnax:CartPole-v1", "brax:ant")} == {"device"}
    assert {families.SOURCES[families.source_of(i)].driver for i in ("envpool:CartPole-v1", "CartPole-v1")} == {"host"}


def test_no_id_outside_atari_is_ever_human_normalised():
    from streamrl import families

    non_atari = [
        "MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1", "gymnax:Breakout-MinAtar", "gymnax:SpaceInvaders-MinAtar",
        "CartPole-v1", "HalfCheetah-v4", "dm_control/cheetah-run-v0", "brax:ant", "envpool:Pong-v5", "gymnax:Pong-misc",
    ]
    for env_id in non_atari:
        assert families.human_game(env_id) is None, env_id
    assert families.human_game("BreakoutNoFrameskip-v4") == families.human_game("ALE/Breakout-v5") == "breakout"
    assert [f.name for f in families.FAMILIES.values() if f.human_normalized] == ["atari"]
