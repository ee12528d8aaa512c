"""`streamrl sweep` on a local multi-node Ray cluster (ray.cluster_utils.Cluster): the same
records as each sub-fleet run alone, a worker node killed mid-sweep, and one-line errors."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from streamrl.cli import main  # noqa: E402
from streamrl.config import TrainConfig  # noqa: E402
from streamrl.run import train  # noqa: E402
from streamrl.sweep import SweepConfig, _read_sweep, split, sweep  # noqa: E402

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def cluster():
    """A head node that runs no task (the driver and its collector live there) and two
    worker nodes of one CPU each."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
    yield c, workers
    ray.shutdown()
    c.shutdown()


def _episodes(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "episodes.csv").sort_values(["agent", "end_step"]).reset_index(drop=True)


def test_split_cuts_a_grid_into_sub_fleets_that_cover_it_once():
    cfg = TrainConfig(lambda_=(0.0, 0.8, 0.9), kappa=(1.0, 2.0), num_seeds=3, seed=5)
    members = lambda c: {(l, k, c.seed + s) for l in c.lambda_ for k in c.kappa for s in range(c.num_seeds)}  # noqa: E731
    for per_task, count in ((100, 1), (6, 3), (4, 6), (3, 6), (2, 12), (1, 18)):
        parts = split(cfg, per_task)
        sizes = [len(p.lambda_) * len(p.kappa) * p.num_seeds for p in parts]
        assert len(parts) == count and max(sizes) <= per_task and sum(sizes) == 18
        assert set().union(*map(members, parts)) == members(cfg)


def test_a_sweep_gives_the_records_of_each_sub_fleet_run_alone(cluster, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "q", "--env", "gymnax:CartPole-v1,CartPole-v1", "--lambda", "0,0.8", "--num-seeds", "2",
            "--agents-per-task", "4", "--total-steps", "1000", "--checkpoint-every", "500", "--run-dir", str(out),
            "--no-progress", "--no-tensorboard"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| gymnax:CartPole-v1 | q | lambda=0 | 2 |" in printed and "| CartPole-v1 | q | lambda=0.8 | 2 |" in printed
    recorded = json.loads((out / "sweep.json").read_text())
    tasks = recorded["tasks"]
    assert len(tasks) == 2 and all(t["status"] == "completed" and t["attempts"] == 1 for t in tasks)
    assert len({t["node"] for t in tasks}) == 2  # both worker nodes took tasks
    for task in _read_sweep(out)[1]:
        run = out / task.run
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"
        alone = train(dataclasses.replace(task.cfg, run_dir=tmp_path / "alone" / str(task.id)))
        pd.testing.assert_frame_equal(_episodes(run), _episodes(alone))  # exactly, host and device
    # plot and report read a sweep unchanged
    assert main(["report", *map(str, sorted(out.glob("*/*"))), "--out", str(tmp_path / "report"), "--reps", "50"]) == 0


def test_a_worker_node_killed_mid_sweep_loses_and_repeats_nothing(cluster, tmp_path):
    c, workers = cluster
    out = tmp_path / "sweep"
    cfg = SweepConfig(algo="q", env="gymnax:CartPole-v1", num_seeds=2, total_steps=60_000, checkpoint_every=10_000,
                      chunk_steps=2_000, run_dir=out, progress=False, tensorboard=False)
    errors = []
    driver = threading.Thread(target=lambda: _catch(errors, sweep, cfg))
    driver.start()
    node = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and node is None:  # the first checkpoint is home: kill the task's node
        time.sleep(0.2)
        with_checkpoint = list(out.glob("*/*/checkpoints/*/commit_success.txt"))
        if with_checkpoint and (out / "sweep.json").is_file():
            task = json.loads((out / "sweep.json").read_text())["tasks"][0]
            if task["status"] == "running":
                node = task["node"]
    assert node is not None, "the task never shipped a checkpoint"
    victim = next(w for w in workers if w.node_id == node)
    c.remove_node(victim, allow_graceful=False)
    driver.join(timeout=240)
    assert not driver.is_alive() and not errors, errors
    task = json.loads((out / "sweep.json").read_text())["tasks"][0]
    assert task["status"] == "completed" and task["attempts"] == 2 and task["node"] != node
    run = out / task["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 60_000 and summary["resumed_from"] >= 10_000
    # a device environment resumes exactly: the records are those of an uninterrupted run
    alone = train(dataclasses.replace(_read_sweep(out)[1][0].cfg, run_dir=tmp_path / "alone"))
    pd.testing.assert_frame_equal(_episodes(run), _episodes(alone))
    workers.remove(victim)
    workers.append(c.add_node(num_cpus=1))
    c.wait_for_nodes()


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _one_line_error(capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if "authentication" not in line]  # Ray's own notice on start-up
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0], err[0]


def test_bad_sweeps_are_one_line(cluster, tmp_path, capsys):
    _one_line_error(capsys, ["sweep", "q", "--address", "127.0.0.1:1", "--run-dir", str(tmp_path / "a")],
                    "no Ray cluster answers there", "ray start --head")
    _one_line_error(capsys, ["sweep", "q,sarsaa", "--run-dir", str(tmp_path / "b")], "unknown algorithm 'sarsaa'", "sarsa")
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text('algo = ["q"]\nlamda = [0.0, 0.8]\n')
    _one_line_error(capsys, ["sweep", "--config", str(bad_key)], "unknown option 'lamda'", "lambda")
    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text('env = ["CartPole-v1"]\ntotal-steps = "many"\n')
    _one_line_error(capsys, ["sweep", "--config", str(bad_value)], "invalid value for total-steps")
    # an id this process can make (tests/ is on its path) but the workers cannot
    _one_line_error(capsys, ["sweep", "q", "--env", "envs_for_tests:NaNRewardEnv", "--allow-env-import", "--total-steps", "100",
                             "--run-dir", str(tmp_path / "c"), "--no-progress"],
                    "task 0 (", "failed on node", "streamrl sweep --resume")


def test_with_shared_storage_tasks_write_the_sweep_directory_themselves(cluster, tmp_path):
    out = tmp_path / "shared"
    cfg = SweepConfig(algo="q,td", env="gymnax:CartPole-v1", total_steps=800, checkpoint_every=400, storage=out,
                      progress=False, tensorboard=False)
    assert sweep(cfg) == out
    tasks = json.loads((out / "sweep.json").read_text())["tasks"]
    assert [t["status"] for t in tasks] == ["completed", "completed"]
    for t in tasks:
        assert json.loads((out / t["run"] / "summary.json").read_text())["steps"] == 800
    assert not list(out.glob("*/.incoming-*"))


def test_resume_finishes_a_sweep_whose_driver_died(cluster, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    c, _ = cluster
    out = tmp_path / "sweep"
    argv = ["q", "--env", "gymnax:CartPole-v1", "--num-seeds", "2", "--total-steps", "60000", "--checkpoint-every", "10000",
            "--chunk-steps", "2000", "--run-dir", str(out), "--no-progress", "--no-tensorboard"]
    driver = subprocess.Popen([sys.executable, "-m", "streamrl", "sweep", *argv, "--address", c.address],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("*/*/checkpoints/*/commit_success.txt")):
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    task = json.loads((out / "sweep.json").read_text())["tasks"][0]
    assert task["status"] != "completed"
    checkpointed = json.loads((out / task["run"] / "summary.json").read_text())["steps"]
    assert 10_000 <= checkpointed < 60_000
    assert main(["sweep", "--resume", str(out), "--no-progress"]) == 0
    task = json.loads((out / "sweep.json").read_text())["tasks"][0]
    run = out / task["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert task["status"] == "completed" and summary["steps"] == 60_000 and summary["resumed_from"] >= checkpointed
    alone = train(dataclasses.replace(_read_sweep(out)[1][0].cfg, run_dir=tmp_path / "alone"))
    pd.testing.assert_frame_equal(_episodes(run), _episodes(alone))
