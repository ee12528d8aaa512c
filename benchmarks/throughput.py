"""Single-stream throughput: streamrl's host driver against the environment alone.

For each (algorithm, task) it runs, in this one process:
  * the environment alone: the same adapter (auto-reset, episode bookkeeping) stepped with
    uniformly random actions: the ceiling any agent could reach;
  * streamrl: ``streamrl.run.train`` (the real driver: environment, non-finite checks,
    one jitted agent call per step, episode records), SPS from its summary (compile excluded).
and prints both with their ratio, plus the official PyTorch implementation's figure on the
same 2-core machine class (docs/benchmarks.md), streamrl's speed-up over it, and the steady-state
SPS of the bare per-step loop (best 4,000-step window: no run directory, no warm-up).

    python benchmarks/throughput.py                 # all rows, 20k steps each
    python benchmarks/throughput.py --steps 50000 --only q:CartPole-v1
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np

from streamrl.config import TrainConfig
from streamrl.envs import make_env
from streamrl.run import train

# Official stream-x PyTorch code, steps/s including the environment (measured on this machine class). No
# DM Control figure was measured; its row is compared with the official HalfCheetah-v5 AC
# figure (the same 2 × 128 actor-critic; the environments cost 61 and 50 µs a step).
OFFICIAL = {
    ("q", "CartPole-v1"): 1140,
    ("ac", "CartPole-v1"): 568,
    ("ac", "HalfCheetah-v5"): 508,
    ("q", "MinAtar/Breakout-v1"): 728,
    ("q", "ALE/Breakout-v5"): 173,
    ("ac", "ALE/Breakout-v5"): 111,
    ("ac", "dm_control/cheetah-run-v0"): 508,
}
ROWS = [
    ("q", "CartPole-v1"),
    ("sarsa", "CartPole-v1"),
    ("ac", "CartPole-v1"),
    ("td", "CartPole-v1"),
    ("ac", "HalfCheetah-v5"),
    ("ac", "dm_control/cheetah-run-v0"),
    ("q", "MinAtar/Breakout-v1"),
    ("q", "ALE/Breakout-v5"),
    ("ac", "ALE/Breakout-v5"),
]


def env_alone_sps(env_id: str, steps: int, seed: int = 0) -> float:
    env = make_env(env_id, seed)
    rng = np.random.default_rng(seed)
    spec = env.spec
    if spec.discrete:
        actions = rng.integers(0, spec.action_dim, size=steps)
    else:
        actions = rng.uniform(spec.action_low, spec.action_high, size=(steps, spec.action_dim)).astype(np.float32)
    env.reset()
    t0 = time.perf_counter()
    for i in range(steps):
        env.step(actions[i])
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def steady_sps(algo: str, env_id: str, windows: int = 5, window: int = 4000) -> float:
    """The bare loop (environment + one jitted agent call, no run directory), best of
    ``windows`` windows after a warm-up: what the driver's per-step path can do."""
    from streamrl.agents import ALGORITHMS
    from streamrl.config import resolve
    from streamrl.envs import make_envs
    from streamrl.engine import HostStepper

    envs = make_envs(env_id, [0])
    resolved = resolve(TrainConfig(algo=algo, env=env_id), envs.spec)
    stepper = HostStepper(ALGORITHMS[algo](resolved.agent), resolved.members)
    actions = stepper.start(envs.reset())
    best = float("inf")
    for i in range(windows + 1):
        t0 = time.perf_counter()
        for _ in range(window):
            actions, _ = stepper.step(envs.step(actions))
        if i:  # the first window is the warm-up
            best = min(best, time.perf_counter() - t0)
    envs.close()
    return window / best


def streamrl_sps(algo: str, env_id: str, steps: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        run = train(TrainConfig(algo=algo, env=env_id, total_steps=steps, run_dir=d, progress=False))
        summary = json.loads((run / "summary.json").read_text())
    return summary["sps"], summary["compile_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--only", action="append", help="algo:env, e.g. q:CartPole-v1 (repeatable)")
    args = parser.parse_args()
    rows = [tuple(r.split(":", 1)) for r in args.only] if args.only else ROWS
    print(f"# single-stream throughput, {args.steps} steps per row, {platform.processor() or platform.machine()}, "
          f"{time.strftime('%Y-%m-%d')}")
    header = ("| algo | task | env alone SPS | streamrl SPS | streamrl / env | compile s | official SPS | "
              "speed-up vs official | steady-state SPS |")
    print(header)
    print("|" + "---|" * 9)
    for algo, env_id in rows:
        env_sps = env_alone_sps(env_id, args.steps)
        sps, compile_s = streamrl_sps(algo, env_id, args.steps)
        official = OFFICIAL.get((algo, env_id))
        speedup = f"{sps / official:.1f}x" if official else "–"
        steady = steady_sps(algo, env_id, window=min(4000, max(500, args.steps // 5)))
        print(f"| {algo} | {env_id} | {env_sps:,.0f} | {sps:,.0f} | {sps / env_sps:.3f} | {compile_s:.1f} | "
              f"{official or '–'} | {speedup} | {steady:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
