"""Stream TD(λ): prediction of a cumulant with ObGD.

Source: arXiv:2410.14606, Algorithm 1 (Stream TD(λ)); docs/algorithms.md "Algorithms".

δ = c + γ(1 − done) v(s′) − v(s), g = ∇v(s), trace reset at episode ends. The cumulant c
is the TimeStep's ``reward`` (scaled like a reward unless ``scale_reward`` = 0).

On a Gymnasium task the agent predicts the discounted return of a uniform-random
behaviour policy (policy evaluation); the actions it returns are that policy's draws.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from streamrl.agents.base import AgentState, HParams, Network, StreamAgent, TimeStep, action_key
from streamrl.errors import ConfigError

__all__ = ["StreamTD"]


class StreamTD(StreamAgent):
    """Stream TD(λ) with a uniform-random behaviour policy over the action space."""

    has_policy = False

    def network_specs(self):
        return {"v": Network(heads=(1,), kappa="kappa")}

    def value(self, params, obs):
        """v(obs): float32 scalar for one normalised observation."""
        return self.apply("v", params["v"], obs)[0][0]

    def _act(self, params, obs, step, key, hp):
        c = self.config
        if c.discrete:
            action = jax.random.randint(key, (), 0, c.action_dim, jnp.int32)
        else:
            low, high = jnp.asarray(c.action_low, jnp.float32), jnp.asarray(c.action_high, jnp.float32)
            action = jax.random.uniform(key, (c.action_dim,), jnp.float32, low, high)
        return action, jnp.zeros((), bool)

    def greedy_action(self, params, obs):
        """Stream TD(λ) predicts; its behaviour is a fixed uniform-random policy.

        Raises:
          ConfigError: always (``streamrl eval`` refuses TD runs before calling this).
        """
        raise ConfigError("Stream TD(λ) learns the value of a fixed random policy: it has no policy to evaluate")

    def step(self, state: AgentState, ts: TimeStep, hp: HParams, diagnose=True):
        """One Stream TD(λ) step (shapes and dtypes: :meth:`StreamAgent.step`): δ is
        :func:`~streamrl.agents.base.state_value_td_error`; the action is the uniform
        policy's draw."""
        norm, o = self.observe(state.norm, state.obs, ts, hp)
        step = state.step + 1
        td_error, grads = self.state_value_td_error("v", state.params["v"], state.obs, o, hp)
        v_params, v_opt = self.apply_update("v", state.params["v"], state.opt_state["v"], grads, td_error, o.done, hp)
        params, opt_state = {"v": v_params}, {"v": v_opt}
        action, nongreedy = self._act(params, o.act_obs, step, action_key(state.key, step), hp)
        overshoot = self.overshoot_check(
            diagnose, td_error, lambda: self.state_value_td_error_after("v", v_params, state.obs, o, hp)
        )
        diag = state.diag.record(td_error, overshoot, v_opt.step_size)
        new_state = AgentState(
            params=params, opt_state=opt_state, norm=norm, obs=o.act_obs, action=action, nongreedy=nongreedy,
            key=state.key, step=step, td_error=td_error, diag=diag,
        )
        return new_state, action
