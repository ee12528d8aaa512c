"""Latency of `streamrl.Agent.step` (one learning step: the update of the last transition
and the next action, one jitted call) against the environment's own step, side by side in
one run, per algorithm and network.

    python benchmarks/latency.py [--steps 5000]

For each case: an agent made for the environment id (the CLI's network for it), driven on
the plain Gymnasium environment; wall time of every `agent.step` / `agent.reset` and of
every `env.step`, after a warm-up of 500 steps. Prints p50 / p99 / max in microseconds and
the agent's share of the loop.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

CASES = [
    ("q", "CartPole-v1", "MLP 2×32 (Q)"),
    ("ac", "CartPole-v1", "MLP 2×32 actor + critic (AC, Discrete)"),
    ("ac", "HalfCheetah-v5", "MLP 2×128 actor + critic (AC, MuJoCo)"),
    ("td", "CartPole-v1", "MLP 2×128 (TD prediction)"),
    ("q", "MinAtar/Breakout-v1", "MinAtar conv + 1024×128 (Q)"),
]


def measure(algo: str, env_id: str, steps: int, warmup: int = 500) -> dict:
    import streamrl
    from streamrl.envs.gym import make_env

    env = make_env(env_id, 0)  # streamrl's adapter: the family's wrappers, as the CLI sees the environment
    agent = streamrl.Agent.create(algo, env_id=env_id, seed=0)
    action = agent.reset(env.reset())
    agent_s, env_s = [], []
    for t in range(warmup + steps):
        t0 = time.perf_counter()
        ts, _ = env.step(action)
        t1 = time.perf_counter()
        if ts.terminated or ts.truncated:
            action = agent.step(ts.reward, ts.final_obs, ts.terminated, ts.truncated, reset_obs=ts.obs)
        else:
            action = agent.step(ts.reward, ts.final_obs, False, False)
        t2 = time.perf_counter()
        if t >= warmup:
            env_s.append(t1 - t0)
            agent_s.append(t2 - t1)
    env.close()
    us = lambda x, q: float(np.percentile(np.asarray(x) * 1e6, q))  # noqa: E731
    return {
        "agent": (us(agent_s, 50), us(agent_s, 99), max(agent_s) * 1e6),
        "env": (us(env_s, 50), us(env_s, 99), max(env_s) * 1e6),
        "share": sum(agent_s) / (sum(agent_s) + sum(env_s)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    print("| case | agent.step p50 / p99 / max (µs) | env.step p50 / p99 / max (µs) | agent share of the loop |")
    print("|---|---|---|---|")
    for algo, env_id, what in CASES:
        try:
            r = measure(algo, env_id, args.steps)
        except Exception as exc:  # noqa: BLE001  (a missing extra: say so, go on)
            print(f"| {env_id} {what} | skipped: {exc} | | |")
            continue
        cell = lambda t: " / ".join(f"{v:,.0f}" for v in t)  # noqa: E731
        print(f"| {env_id}, {what} | {cell(r['agent'])} | {cell(r['env'])} | {r['share']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
