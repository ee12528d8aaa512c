"""Stream Q(λ) and Stream SARSA(λ): action-value control with ObGD.

Source: arXiv:2410.14606, Algorithms 5 (Stream Q(λ)) and 6 (Stream SARSA(λ));
docs/algorithms.md section "Algorithms".

Stream Q(λ) (Watkins): δ = r + γ(1 − done) maxₐ q(s′, a) − q(s, a), g = ∇q(s, a),
ε-greedy behaviour; the trace is reset after the update when the episode ended OR the
action a taken at s was non-greedy (a random action that equals the greedy one is greedy).

Stream SARSA(λ): δ = r + γ(1 − done) q(s′, a′) − q(s, a) with a′ the ε-greedy action
chosen at s′ before the update, which is then the action taken; traces reset only at
episode ends. When the episode ended, the next action is chosen from the reset
observation (the official script carried the terminal a′ over: a bug, not reproduced).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from streamrl.agents.base import AgentState, HParams, Network, StreamAgent, TimeStep, action_key, epsilon_at

__all__ = ["StreamQ", "StreamSARSA", "epsilon_greedy"]


def epsilon_greedy(q_values: jax.Array, epsilon: jax.Array, key: jax.Array):
    """ε-greedy action from ``q_values`` (float32 [n]).

    One uniform draw u decides both: explore when u < ε, and then the action is
    ⌊u/ε · n⌋, uniform over the n actions (u/ε is uniform on [0, 1) given u < ε).
    Returns (action int32 scalar, nongreedy bool scalar: action ≠ argmax q).
    """
    n = q_values.shape[-1]
    greedy = jnp.argmax(q_values).astype(jnp.int32)
    u = jax.random.uniform(key)
    explore = u < epsilon
    random_action = jnp.minimum((u / jnp.maximum(epsilon, 1e-12) * n).astype(jnp.int32), n - 1)
    action = jnp.where(explore, random_action, greedy)
    return action, action != greedy


class StreamQ(StreamAgent):
    """Stream Q(λ). ``AgentConfig.discrete`` must be True."""

    sarsa = False
    requires_discrete = True

    @classmethod
    def default_hidden(cls, discrete: bool) -> tuple[int, ...]:
        """2 × 32, the official classic-control Q and SARSA scripts' width."""
        return (32, 32)

    def network_specs(self):
        return {"q": Network(heads=(self.config.action_dim,), kappa="kappa")}

    def td_error(self, o, hp: HParams, q_sa, q_next, next_action):
        """δ = r + γ·bootstrap·Q′ − q(s, a) from q_sa = q(s, a) (float32 []) and the
        Q-values at s′ (float32 [n_actions]): Q′ = maxₐ′ q(s′, a′) for Q(λ), q(s′, a′) of
        the next action a′ (int32 []) for SARSA(λ). The update and the overshooting
        diagnostic both use it."""
        bootstrap_q = q_next[next_action] if self.sarsa else jnp.max(q_next)
        return o.reward + hp.gamma * o.bootstrap * bootstrap_q - q_sa

    def q_values(self, params, obs):
        """q(obs, ·): float32 [n_actions] for one normalised observation."""
        return self.apply("q", params["q"], obs)[0]

    def greedy_action(self, params, obs):
        """The evaluation action at normalised ``obs``: argmaxₐ q(obs, a), int32 scalar."""
        return jnp.argmax(self.q_values(params, obs)).astype(jnp.int32)

    def _act(self, params, obs, step, key, hp):
        return epsilon_greedy(self.q_values(params, obs), epsilon_at(step, hp), key)

    def step(self, state: AgentState, ts: TimeStep, hp: HParams, diagnose=True):
        """One Stream Q(λ) / SARSA(λ) step (shapes and dtypes: :meth:`StreamAgent.step`);
        the action is int32 []."""
        norm, o = self.observe(state.norm, state.obs, ts, hp)
        step = state.step + 1
        # a′ (SARSA, episode goes on) and the reset action (episode ended) are the same
        # time step's choice and never both used, so they share one key.
        key = action_key(state.key, step)

        q_sa, grads, (q_next,) = self.paired_value_and_grad(
            "q", state.params["q"], state.obs, o.next_obs, lambda heads: heads[0][state.action]
        )
        next_action = None
        if self.sarsa:
            # a′ at s′ with the pre-update parameters: both the bootstrap and the next action.
            next_action, next_nongreedy = epsilon_greedy(q_next, epsilon_at(step, hp), key)
            reset = o.done
        else:
            reset = jnp.logical_or(o.done, state.nongreedy)
        td_error = jax.lax.stop_gradient(self.td_error(o, hp, q_sa, q_next, next_action))
        q_params, q_opt = self.apply_update("q", state.params["q"], state.opt_state["q"], grads, td_error, reset, hp)
        params, opt_state = {"q": q_params}, {"q": q_opt}

        action, nongreedy = self._act(params, o.act_obs, step, key, hp)
        if self.sarsa:
            action = jnp.where(o.done, action, next_action)
            nongreedy = jnp.where(o.done, nongreedy, next_nongreedy)

        def td_after():  # the overshooting diagnostic: δ′ on the same sample, new parameters
            (q_s_new,), (q_next_new,) = self.forward_pair("q", q_params, state.obs, o.next_obs)
            return self.td_error(o, hp, q_s_new[state.action], q_next_new, next_action)

        diag = state.diag.record(td_error, self.overshoot_check(diagnose, td_error, td_after), q_opt.step_size)
        new_state = AgentState(
            params=params, opt_state=opt_state, norm=norm, obs=o.act_obs, action=action, nongreedy=nongreedy,
            key=state.key, step=step, td_error=td_error, diag=diag,
        )
        return new_state, action


class StreamSARSA(StreamQ):
    """Stream SARSA(λ). ``AgentConfig.discrete`` must be True."""

    sarsa = True
