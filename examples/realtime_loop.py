"""A stream-x agent on a wall-clock control cycle, as on a robot: every cycle (40 ms by
default, a common rate for robot arms) the loop reads the observation, the agent learns
from the last transition and returns the next action, and the loop sleeps until the next
cycle. Reports the agent's time per cycle and the deadlines missed.

    python examples/realtime_loop.py [--env Pendulum-v1] [--algo ac] [--cycle-ms 40] [--seconds 20]

Here the "robot" is a Gymnasium environment (it steps instantly); on hardware, `env.step`
is replaced by sending the action and reading the sensors at the next cycle.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import streamrl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--algo", default="ac")
    parser.add_argument("--cycle-ms", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    import gymnasium as gym

    env = gym.make(args.env)
    agent = streamrl.Agent.create(args.algo, env.observation_space, env.action_space, seed=0,
                                  time_limit=env.spec.max_episode_steps)  # compiles now, not in the loop
    cycle = args.cycle_ms / 1000.0
    obs, _ = env.reset(seed=0)
    action = agent.reset(obs)
    busy, missed, returns, total = [], 0, [], 0.0
    deadline = time.perf_counter() + cycle
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        obs, reward, terminated, truncated, _ = env.step(action)  # on hardware: act, then read sensors
        total += float(reward)
        t0 = time.perf_counter()
        action = agent.step(reward, obs, terminated, truncated)
        if terminated or truncated:
            returns.append(total)
            total = 0.0
            action = agent.reset(env.reset()[0])
        busy.append(time.perf_counter() - t0)
        now = time.perf_counter()
        if now > deadline:
            missed += 1
            deadline = now + cycle  # start the next cycle at once
        else:
            time.sleep(deadline - now)
            deadline += cycle
    ms = np.asarray(busy) * 1e3
    print(f"{len(busy)} cycles of {args.cycle_ms:g} ms; agent per cycle: p50 {np.percentile(ms, 50):.3f} ms, "
          f"p99 {np.percentile(ms, 99):.3f} ms, max {ms.max():.3f} ms; deadlines missed: {missed}; "
          f"episodes: {len(returns)}" + (f", last return {returns[-1]:.1f}" if returns else ""))


if __name__ == "__main__":
    main()
