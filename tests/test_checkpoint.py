"""Checkpoints and resume, failure behaviour, and the live diagnostics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from streamrl import checkpoint
from streamrl.agents import ALGORITHMS, AgentConfig, HParams, TimeStep
from streamrl.cli import main
from streamrl.config import TrainConfig, resolve
from streamrl.envs import make_envs
from streamrl.errors import CheckpointError
from streamrl.engine import HostStepper
from streamrl.run import train

TESTS = Path(__file__).parent


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _restore_agents(run: Path, cfg: TrainConfig, step=None):
    from streamrl.envs.device import make_device_env

    spec = make_device_env(cfg.env).spec if cfg.env.startswith("gymnax:") else make_envs(cfg.env, [0]).spec
    resolved = resolve(cfg, spec)
    return checkpoint.restore_fleet(run, cfg, resolved, ALGORITHMS[cfg.algo](resolved.agent), step=step)


def _cli(*args, **popen):
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.Popen([sys.executable, "-m", "streamrl", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


# -- resume ------------------------------------------------------------------------------


def test_device_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path):
    """2,000 steps straight against 1,000 + resume + 1,000 (the final checkpoint of a
    copy is removed, so the copy resumes from step 1,000): records and state identical."""
    cfg = TrainConfig(algo="q", env="gymnax:CartPole-v1", num_seeds=2, total_steps=2000, chunk_steps=500,
                      checkpoint_every=1000, run_dir=tmp_path / "straight", progress=False)
    train(cfg)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "2000")
    assert checkpoint.latest_step(tmp_path / "resumed") == 1000
    train(TrainConfig(resume=tmp_path / "resumed", progress=False))
    straight = (tmp_path / "straight" / "episodes.csv").read_text()
    assert (tmp_path / "resumed" / "episodes.csv").read_text() == straight and straight.count("\n") > 50
    a, _ = _restore_agents(tmp_path / "straight", cfg)
    b, meta = _restore_agents(tmp_path / "resumed", TrainConfig(**{**cfg.__dict__, "run_dir": tmp_path / "resumed"}))
    _leaves_equal(a, b)
    assert meta["step"] == 2000
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["resumed_from"] == 1000 and summary["status"] == "completed" and summary["steps"] == 2000


def test_host_agent_state_round_trips_through_a_checkpoint(tmp_path):
    cfg = TrainConfig(algo="ac", env="CartPole-v1", num_seeds=2)
    envs = make_envs(cfg.env, [0, 1])
    resolved = resolve(cfg, envs.spec)
    stepper = HostStepper(ALGORITHMS["ac"](resolved.agent), resolved.members)
    actions = stepper.start(envs.reset())
    for _ in range(300):
        actions, _ = stepper.step(envs.step(actions), diagnose=True)
    state = stepper.state
    checkpoint.save(tmp_path, 300, {"agents": state}, checkpoint.run_meta(cfg, resolved))
    target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    items, meta = checkpoint.restore(tmp_path, {"agents": target}, checkpoint.run_meta(cfg, resolved))
    _leaves_equal(items["agents"], state)
    assert meta["step"] == 300 and int(np.asarray(items["agents"].step)[0]) == 300


def test_host_resume_starts_a_fresh_episode_and_keeps_the_records(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "q", "--total-steps", "3000", "--checkpoint-every", "1000", "--run-dir", str(run), "--no-progress"]) == 0
    before = pd.read_csv(run / "episodes.csv")
    assert main(["train", "--resume", str(run), "--total-steps", "5000", "--no-progress"]) == 0
    assert "fresh episode" in capsys.readouterr().err
    after = pd.read_csv(run / "episodes.csv")
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)
    assert after.end_step.max() > 3000 and after.end_step.is_monotonic_increasing
    config = json.loads((run / "config.json").read_text())
    state, meta = _restore_agents(run, TrainConfig(algo="q", total_steps=3000, run_dir=run))
    assert meta["step"] == 5000 and int(np.asarray(state.step)[0]) == 5000
    # the ε schedule of the original 3,000-step run is kept when the run is extended
    assert config["hparams"]["eps_decay_steps"] == pytest.approx(0.05 * 3000)
    resolved = resolve(TrainConfig(algo="q", total_steps=5000, schedule_steps=3000), make_envs("CartPole-v1", [0]).spec)
    assert resolved.hparams.eps_decay_steps == pytest.approx(150.0)


@pytest.mark.parametrize("optimizer", ["obgd", "adaptive"])
def test_restart_zeroes_traces_and_starts_a_new_episode(optimizer):
    agent = ALGORITHMS["q"](AgentConfig(obs_shape=(4,), discrete=True, action_dim=2, hidden=(8,), time_limit=100, optimizer=optimizer))
    hp = HParams().as_arrays()
    f = jnp.asarray
    state = agent.init(jax.random.PRNGKey(0), f(np.ones(4, np.float32)), hp)
    rng = np.random.default_rng(0)
    for t in range(300):  # a few hundred AdaptiveObGD steps through the agent, episodes of 50
        obs = f(rng.normal(size=4).astype(np.float32))
        end = f((t + 1) % 50 == 0)
        state, _ = agent.step(state, TimeStep(obs, f(rng.normal()).astype(jnp.float32), end, f(False), obs), hp)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.params))
    if optimizer == "adaptive":
        assert int(state.opt_state["q"].count) == 300
        moments = jax.tree_util.tree_leaves(state.opt_state["q"].second_moment)
        assert any(np.asarray(m).any() for m in moments)
    obs = f(rng.normal(size=4).astype(np.float32))  # mid-episode: traces are non-zero before the restart
    state, _ = agent.step(state, TimeStep(obs, f(1.0), f(False), f(False), obs), hp)
    assert any(np.asarray(x).any() for x in jax.tree_util.tree_leaves(state.opt_state["q"].trace))
    fresh = agent.restart(state, f(np.full(4, 2.0, np.float32)), hp)
    for leaf in jax.tree_util.tree_leaves(fresh.opt_state["q"].trace):
        assert not np.asarray(leaf).any()
    if optimizer == "adaptive":  # AdaptiveObGD's second moments and count are learner state: kept
        _leaves_equal(fresh.opt_state["q"].second_moment, state.opt_state["q"].second_moment)
        assert int(fresh.opt_state["q"].count) == int(state.opt_state["q"].count)
    assert int(fresh.norm.episode_step) == 0 and float(fresh.norm.reward.trace) == 0.0
    assert int(fresh.norm.obs.count) == int(state.norm.obs.count) + 1  # the new observation was seen
    assert float(fresh.obs[-1]) == pytest.approx(-0.5)  # the time feature restarts
    _leaves_equal(fresh.params, state.params)
    assert int(fresh.step) == int(state.step)


# -- failure behaviour ---------------------------------------------------------------------


def _wait_for_checkpoint(run: Path, at_least: int, proc, timeout=180.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.communicate()}")
        done = [int(p.name) for p in (run / "checkpoints").glob("*") if p.name.isdigit()] if (run / "checkpoints").is_dir() else []
        if done and max(done) >= at_least:
            return max(done)
        time.sleep(0.2)
    raise AssertionError("no checkpoint in time")


def test_kill_9_loses_nothing_before_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _cli("train", "q", "--total-steps", "1000000", "--checkpoint-every", "3000", "--run-dir", str(run), "--no-progress")
    try:
        _wait_for_checkpoint(run, 9000, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    # the run directory stays readable
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "running"
    json.loads((run / "config.json").read_text())
    killed = pd.read_csv(run / "episodes.csv", on_bad_lines="skip")
    last = checkpoint.latest_step(run)
    assert last >= 9000 and last % 3000 == 0
    kept = killed[killed.end_step <= last]
    assert len(kept) > 0
    assert main(["train", "--resume", str(run), "--total-steps", str(last + 2000), "--no-progress"]) == 0
    resumed = pd.read_csv(run / "episodes.csv")
    pd.testing.assert_frame_equal(resumed.iloc[: len(kept)].reset_index(drop=True), kept.reset_index(drop=True))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    proc = _cli("train", "q", "--env", "gymnax:CartPole-v1", "--total-steps", "100000000", "--chunk-steps", "2000",
                "--checkpoint-every", "0", "--run-dir", str(run), "--no-progress")
    deadline = time.monotonic() + 180
    while not (run / "episodes.csv").exists() or (run / "episodes.csv").stat().st_size < 100:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "resume with: streamrl train --resume" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and checkpoint.latest_step(run) == summary["steps"] > 0
    assert main(["train", "--resume", str(run), "--total-steps", str(summary["steps"] + 4000), "--no-progress"]) == 0


def test_non_finite_learner_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    import envs_for_tests  # noqa: F401  (registers HugeReward-v0)

    run = tmp_path / "run"
    status = main(["train", "q", "--env", "envs_for_tests:HugeReward-v0", "--total-steps", "2000", "--kappa", "0",
                   "--lr", "1e-5", "--no-scale-reward", "--checkpoint-every", "100", "--run-dir", str(run), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"run directory: {run}" and lines[1].startswith("compiling the step of 1 agent")  # said at the start
    err = "\n".join(lines[2:])
    assert status == 1 and err.startswith("error: the TD error or the parameters became non-finite at step")
    assert "the last good checkpoint (step 200) is kept" in err and "\n" not in err
    assert checkpoint.latest_step(run) == 200
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(TrainConfig(algo="q", env="CartPole-v1", total_steps=500, run_dir=run, progress=False))
    return run


def _broken_copy(small_run, tmp_path) -> Path:
    run = tmp_path / "copy"
    shutil.copytree(small_run, run)
    return run


def test_corrupt_checkpoint_is_refused(small_run, tmp_path, capsys):
    run = _broken_copy(small_run, tmp_path)
    for f in (run / "checkpoints" / "500" / "agents").rglob("*"):
        if f.is_file() and "ocdbt" in str(f) and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage" * 8)
    assert main(["eval", str(run), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint") and "is unreadable" in err and "corrupt or incomplete" in err and "\n" not in err


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("algo", "sarsa", "belongs to another run: its algo is 'sarsa'"),
        ("env", "Acrobot-v1", "its env is 'Acrobot-v1'"),
        ("num_agents", 4, "its num_agents is 4"),
        ("streamrl", "0.0.1", "was written by streamrl 0.0.1"),
    ],
)
def test_mismatched_checkpoint_is_refused(small_run, tmp_path, capsys, key, value, message):
    run = _broken_copy(small_run, tmp_path)
    meta_file = next((run / "checkpoints" / "500" / "meta").glob("metadata"))
    meta = json.loads(meta_file.read_text())
    meta[key] = value
    meta_file.write_text(json.dumps(meta))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(run), "--total-steps", "600", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint") and message in err and "\n" not in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing touched


def test_resume_of_another_network_is_refused(small_run, tmp_path, capsys):
    run = _broken_copy(small_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["options"]["hidden"] = [16, 16]
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run), "--total-steps", "600", "--no-progress"]) == 2
    assert "belongs to another run: its agent is" in capsys.readouterr().err


# -- diagnostics and TensorBoard -----------------------------------------------------------


def test_overshooting_diagnostic_recomputes_the_td_error_with_the_new_parameters():
    agent = ALGORITHMS["q"](AgentConfig(obs_shape=(4,), discrete=True, action_dim=2, hidden=(8,), time_limit=100))
    hp = HParams(kappa=0.0, lr=3.0, normalize_obs=0.0, scale_reward=0.0).as_arrays()
    f = jnp.asarray
    rng = np.random.default_rng(0)
    state = agent.init(jax.random.PRNGKey(1), f(rng.standard_normal(4).astype(np.float32)), hp)
    checked = overshot = 0
    for t in range(40):
        obs = f(rng.standard_normal(4).astype(np.float32))
        new, _ = agent.step(state, TimeStep(obs, f(1.0), f(False), f(False), obs), hp, True)
        # independent recomputation of δ′ with the new parameters on the same sample
        x_next = new.obs  # the normalised s′ (with the time feature) the agent acts on
        q_s = agent.apply("q", new.params["q"], state.obs)[0][state.action]
        q_next = agent.apply("q", new.params["q"], x_next)[0].max()
        td_after = 1.0 + 0.99 * q_next - q_s
        overshot += int(float(new.td_error) * float(td_after) < 0)
        checked += 1
        assert int(new.diag.overshoots) == overshot and int(new.diag.overshoot_checks) == checked
        assert float(new.diag.step_size_sum) == pytest.approx(float(state.diag.step_size_sum) + 3.0)  # κ = 0: α = lr
        state = new
    assert 0 < overshot < checked  # lr 3 without the bound overshoots sometimes
    skipped, _ = agent.step(state, TimeStep(obs, f(1.0), f(False), f(False), obs), hp, jnp.bool_(False))
    assert int(skipped.diag.overshoot_checks) == checked and int(skipped.diag.count) == checked + 1


def _read_events(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard event file (TFRecord framing, tensorboardX's protos)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        offset += 12 + length + 4
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_scalars_per_agent(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(algo="ac", env="CartPole-v1", num_seeds=2, total_steps=2000, run_dir=run, progress=False))
    (events,) = (run / "tb").glob("events.out.tfevents.*")
    scalars = _read_events(events)
    episodes = pd.read_csv(run / "episodes.csv")
    for i in (0, 1):
        mine = episodes[episodes.agent == i]
        # each write holds the mean of the episodes that ended since the previous write
        previous, counted = 0, 0
        for (x, mean), (_, n) in zip(scalars[f"agent{i}/episodic_return"], scalars[f"agent{i}/episodes"]):
            window = mine[(mine.end_step > previous) & (mine.end_step <= x)]
            assert len(window) == n and mean == pytest.approx(window.episodic_return.mean())
            previous, counted = x, counted + n
        assert counted == len(mine)
        for name in ("abs_td_error_mean", "abs_td_error_max", "td_error_rms", "step_size", "policy_step_size",
                     "overshooting_rate"):
            values = [v for _, v in scalars[f"agent{i}/{name}"]]
            assert values and all(np.isfinite(values)), name
        assert all(0 <= v <= 1 for _, v in scalars[f"agent{i}/overshooting_rate"])
        assert all(0 < v <= 1.0 for _, v in scalars[f"agent{i}/step_size"])  # α ≤ lr = 1
    assert scalars["sps"] and all(v > 0 for _, v in scalars["sps"])
