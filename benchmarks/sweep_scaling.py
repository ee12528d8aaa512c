"""Aggregate agent-steps/s of one sweep run three ways, side by side in one process:

* direct: each sub-fleet trained one after another with ``streamrl.run.train`` (no Ray);
* Ray on 1 local node (1 CPU) and on 2 local nodes (1 CPU each), through ``streamrl sweep``;
* Ray on 2 nodes with one node killed after the first checkpoint came home (the time a
  node failure costs).

Local nodes are ``ray.cluster_utils.Cluster`` nodes on this machine: they share its cores,
so "2 nodes" is 2 cores here. Usage::

    python benchmarks/sweep_scaling.py                     # gymnax:CartPole-v1 Q, 2 tasks x 4 agents x 100k steps
    python benchmarks/sweep_scaling.py --env CartPole-v1 --total-steps 30000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path


def _agent_steps(sweep_dir: Path) -> int:
    tasks = json.loads((sweep_dir / "sweep.json").read_text())["tasks"]
    return sum(json.loads((sweep_dir / t["run"] / "summary.json").read_text())["steps"] * t["agents"] for t in tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="gymnax:CartPole-v1")
    parser.add_argument("--algo", default="q")
    parser.add_argument("--total-steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--no-failure", action="store_true", help="skip the node-failure run")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from streamrl.cli import _use_compilation_cache
    from streamrl.run import train
    from streamrl.sweep import SweepConfig, plan, sweep

    _use_compilation_cache()
    work = Path(tempfile.mkdtemp(prefix="streamrl-sweep-bench-"))
    base = dict(algo=args.algo, env=args.env, lambda_=(0.0, 0.8), num_seeds=args.seeds, total_steps=args.total_steps,
                checkpoint_every=max(args.total_steps // 5, 1000), agents_per_task=args.seeds, progress=False, tensorboard=False)
    rows = []

    # direct: no Ray (the warm-up run fills the compilation cache for every variant below)
    tasks = plan(SweepConfig(**base), work / "plan")
    for warm in (True, False):
        t0 = time.perf_counter()
        steps = 0
        for t in tasks:
            run = train(dataclasses.replace(t.cfg, run_dir=work / f"direct{warm}" / str(t.id)))
            steps += json.loads((run / "summary.json").read_text())["steps"] * t.agents
        if not warm:
            rows.append(("direct (no Ray), 1 process", time.perf_counter() - t0, steps, None))

    def on_cluster(name: str, nodes: int, kill: bool) -> None:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        workers = [c.add_node(num_cpus=1) for _ in range(nodes)]
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
        out = work / name.split(" ")[0]
        try:
            t0 = time.perf_counter()
            if not kill:
                sweep(SweepConfig(**base, run_dir=out))
            else:
                thread = threading.Thread(target=sweep, args=(SweepConfig(**base, run_dir=out),))
                thread.start()
                victim = None
                while victim is None and thread.is_alive():
                    time.sleep(0.1)
                    if list(out.glob("*/*/checkpoints/*/commit_success.txt")) and (out / "sweep.json").is_file():
                        running = [t for t in json.loads((out / "sweep.json").read_text())["tasks"] if t["status"] == "running"]
                        if running:
                            victim = next((w for w in workers if w.node_id == running[0]["node"]), None)
                if victim is not None:
                    c.remove_node(victim, allow_graceful=False)
                thread.join()
            wall = time.perf_counter() - t0
            retried = sum(t["attempts"] > 1 for t in json.loads((out / "sweep.json").read_text())["tasks"])
            rows.append((name, wall, _agent_steps(out), retried))
        finally:
            ray.shutdown()
            c.shutdown()

    on_cluster("ray1 (1 node x 1 CPU)", 1, False)
    on_cluster("ray2 (2 nodes x 1 CPU)", 2, False)
    if not args.no_failure:
        on_cluster("ray2-failure (2 nodes, one killed after the first checkpoint)", 2, True)

    direct_sps = rows[0][2] / rows[0][1]
    print(f"\nsweep: {args.algo} on {args.env}, lambda 0,0.8 x {args.seeds} seeds, {args.total_steps:,} steps per agent, "
          f"{len(tasks)} tasks of {tasks[0].agents} agents\n")
    print("| run | wall s | agent-steps | agent-steps/s | vs direct | tasks retried |")
    print("|---|---|---|---|---|---|")
    for name, wall, steps, retried in rows:
        print(f"| {name} | {wall:,.1f} | {steps:,} | {steps / wall:,.0f} | {steps / wall / direct_sps:.2f} | {'' if retried is None else retried} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
