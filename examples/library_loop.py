"""Drive a stream-x agent from your own loop: Stream Q(λ) on CartPole-v1, one transition,
one update, nothing stored.

    python examples/library_loop.py [--steps 20000]

The agent is a pure function of its state: ``agent.step`` learns from (s, a, r, s′) and
returns the next action, compiled once with ``jax.jit`` (one call per environment step).
"""

import argparse

import gymnasium as gym
import jax
import numpy as np

from streamrl.agents import AgentConfig, HParams, StreamQ, TimeStep


def main(steps: int) -> list[float]:
    env = gym.make("CartPole-v1")
    agent = StreamQ(AgentConfig(obs_shape=(4,), discrete=True, action_dim=2, hidden=(32, 32), time_limit=500))
    hp = HParams(eps_decay_steps=0.2 * steps).as_arrays()  # float32 leaves: traced, a sweep never recompiles
    obs, _ = env.reset(seed=0)
    state = agent.init(jax.random.PRNGKey(0), obs, hp)  # also picks the first action
    step = jax.jit(agent.step)
    action, returns, episodic_return = state.action, [], 0.0
    for _ in range(steps):
        final_obs, reward, terminated, truncated, _ = env.step(int(action))
        episodic_return += float(reward)
        obs = final_obs
        if terminated or truncated:
            returns.append(episodic_return)
            episodic_return = 0.0
            obs, _ = env.reset()
        # learn from (s, a, r, s') and pick the next action with the new parameters
        state, action = step(state, TimeStep(obs, np.float32(reward), terminated, truncated, final_obs), hp)
    return returns


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    returns = main(parser.parse_args().steps)
    tail = returns[-10:] or [float("nan")]
    print(f"{len(returns)} episodes; mean return of the last {len(tail)}: {np.mean(tail):.1f}")
