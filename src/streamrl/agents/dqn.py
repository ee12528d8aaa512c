"""DQN1: the paper's batch-1 baseline, one-step Q-learning with a replay buffer of one
transition (the current one), batch 1, a target network and Adam.

Source: arXiv:2410.14606, Section 5 (the "DQN1" baseline of the stream-barrier figure:
DQN with its buffer and batch cut to one); DQN's target network (Mnih et al., 2015).
docs/algorithms.md "Ablations and classic baselines".

δ = r + γ(1 − done) maxₐ′ q_target(s′, a′) − q(s, a), and Adam on the semi-gradient of ½δ²,
i.e. on δ∇q(s, a) (``optim.trace_adam`` with λ = 0, whose trace is the gradient itself);
q_target ← q every ``target_update_every`` steps (after that step's update). ε-greedy
behaviour on the Q schedule. The network is Stream Q's 2 × 32 (conv torsos as for Q);
the classic settings (Adam at 1e-4, no LayerNorm, dense init, no observation or reward
normalisation, λ = 0) are its defaults (:func:`streamrl.config.apply_preset`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from streamrl.agents.base import AgentState, HParams, TimeStep, action_key
from streamrl.agents.control import StreamQ

__all__ = ["DQN1"]


class DQN1(StreamQ):
    """DQN1. ``AgentConfig.discrete`` must be True; the state's parameters are
    ``{"q": online, "q_target": target}`` (the target is never updated by the optimiser)."""

    sarsa = False
    classic = True
    classic_lr = 1e-4
    schedule_as = "q"

    def init(self, key: jax.Array, obs: jax.Array, hp: HParams) -> AgentState:
        """As Stream Q's, with the target network a copy of the online one."""
        state = super().init(key, obs, hp)
        return state._replace(params={**state.params, "q_target": state.params["q"]})

    def step(self, state: AgentState, ts: TimeStep, hp: HParams, diagnose=True):
        """One DQN1 step (shapes and dtypes: :meth:`StreamAgent.step`); the action is int32 []."""
        norm, o = self.observe(state.norm, state.obs, ts, hp)
        step = state.step + 1
        key = action_key(state.key, step)
        online, target = state.params["q"], state.params["q_target"]

        q_sa, grads = jax.value_and_grad(lambda p: self.q_values({"q": p}, state.obs)[state.action])(online)
        q_next = self.q_values({"q": target}, o.next_obs)
        td_error = jax.lax.stop_gradient(o.reward + hp.gamma * o.bootstrap * jnp.max(q_next) - q_sa)
        online, q_opt = self.apply_update("q", online, state.opt_state["q"], grads, td_error, o.done, hp)
        period = jnp.maximum(hp.target_update_every, 1.0).astype(jnp.int32)
        sync = step % period == 0
        target = jax.tree_util.tree_map(lambda t, q: jnp.where(sync, q, t), target, online)

        action, nongreedy = self._act({"q": online}, o.act_obs, step, key, hp)

        def td_after():  # the overshooting diagnostic: δ′ on the same sample, new online parameters
            return o.reward + hp.gamma * o.bootstrap * jnp.max(q_next) - self.q_values({"q": online}, state.obs)[state.action]

        diag = state.diag.record(td_error, self.overshoot_check(diagnose, td_error, td_after), q_opt.step_size)
        new_state = AgentState(
            params={"q": online, "q_target": target}, opt_state={"q": q_opt}, norm=norm, obs=o.act_obs, action=action,
            nongreedy=nongreedy, key=state.key, step=step, td_error=td_error, diag=diag,
        )
        return new_state, action
