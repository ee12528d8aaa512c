"""What live metrics cost the learning loop, measured side by side in one process.

1. End to end: ``streamrl train`` with TensorBoard on (the default: diagnostics read and
   written every few seconds) and off, alternating, best of ``--repeats`` each.
2. Per step: the host driver's jitted call with the overshooting check (δ′ recomputed
   after the update: two extra forward passes) and without it, on a fixed transition. The
   drivers check every 16th step, so the loop pays 1/16 of the difference on average.

    python benchmarks/metrics_overhead.py
    python benchmarks/metrics_overhead.py --algo ac --env HalfCheetah-v5 --steps 20000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from streamrl.agents import ALGORITHMS
from streamrl.config import TrainConfig, resolve
from streamrl.envs import make_envs
from streamrl.engine import DIAGNOSE_EVERY, HostStepper
from streamrl.run import train


def end_to_end_sps(algo, env_id, steps, tensorboard) -> float:
    with tempfile.TemporaryDirectory() as d:
        run = train(TrainConfig(algo=algo, env=env_id, total_steps=steps, run_dir=d, progress=False,
                                tensorboard=tensorboard, checkpoint_every=0))
        return json.loads((run / "summary.json").read_text())["sps"]


def step_us(algo, env_id, diagnose: bool, n=1000, reps=5) -> float:
    envs = make_envs(env_id, [0])
    resolved = resolve(TrainConfig(algo=algo, env=env_id), envs.spec)
    stepper = HostStepper(ALGORITHMS[algo](resolved.agent), resolved.members)
    actions = stepper.start(envs.reset())
    step = envs.step(actions)
    batch = step._replace(**{k: np.array(getattr(step, k)) for k in ("obs", "reward", "terminated", "truncated", "final_obs", "new_episode")})
    for _ in range(200):
        stepper.step(batch, diagnose=diagnose)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            stepper.step(batch, diagnose=diagnose)
        best = min(best, (time.perf_counter() - t0) / n)
    envs.close()
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="q")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    on, off = [], []
    for _ in range(args.repeats):
        on.append(end_to_end_sps(args.algo, args.env, args.steps, True))
        off.append(end_to_end_sps(args.algo, args.env, args.steps, False))
    plain, checked = step_us(args.algo, args.env, False), step_us(args.algo, args.env, True)
    print(f"# {args.algo} on {args.env}, {args.steps:,} steps, best of {args.repeats}")
    print("| measure | metrics | without | ratio |")
    print("|---|---|---|---|")
    print(f"| end-to-end SPS, TensorBoard on / off | {max(on):,.0f} | {max(off):,.0f} | {max(on) / max(off):.3f} |")
    print(f"| agent step µs, overshooting check / none | {checked:,.0f} | {plain:,.0f} | {checked / plain:.3f} |")
    print(f"| mean over steps (check on 1 in {DIAGNOSE_EVERY}) | {plain + (checked - plain) / DIAGNOSE_EVERY:,.0f} | "
          f"{plain:,.0f} | {(plain + (checked - plain) / DIAGNOSE_EVERY) / plain:.3f} |")


if __name__ == "__main__":
    main()
