"""Stream AC(λ): actor-critic with one ObGD per network.

Source: arXiv:2410.14606, Algorithm 3 (Stream AC(λ)); docs/algorithms.md "Algorithms".

One TD error from the critic, computed before either update, drives both:
  δ = r + γ(1 − done) v(s′) − v(s)
  critic: g = ∇v(s), ObGD with κ (2.0)
  actor:  g = ∇[log π(a|s) + c · sign(δ) · H(π(·|s))], ObGD with κ_policy (3.0)
The ObGD update multiplies g by δ, so the entropy term is always pushed up, weighted by
|δ|. Both traces reset at episode ends.

Policies: Gaussian for Box actions (μ linear, σ = softplus(linear); the sampled action is
kept unclipped for learning, clipped only when sent to the environment), categorical
(softmax over logits) for Discrete actions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from streamrl.agents.base import AgentState, HParams, Network, StreamAgent, TimeStep, action_key

__all__ = ["StreamAC"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class StreamAC(StreamAgent):
    """Stream AC(λ) for Discrete (categorical) or Box (Gaussian) actions."""

    @classmethod
    def default_hidden(cls, discrete: bool) -> tuple[int, ...]:
        """2 × 32 for Discrete actions (the official ``stream_ac_discrete.py`` passes
        ``hidden_size=32`` to actor and critic), 2 × 128 for Box actions."""
        return (32, 32) if discrete else (128, 128)

    @classmethod
    def evaluation_policy(cls, discrete: bool) -> str:
        return "most probable action" if discrete else "mean action"

    def network_specs(self):
        c = self.config
        actor = (c.action_dim,) if c.discrete else (c.action_dim, c.action_dim)
        return {"actor": Network(heads=actor, kappa="kappa_policy"), "critic": Network(heads=(1,), kappa="kappa")}

    def value(self, params, obs):
        """v(obs): float32 scalar."""
        return self.apply("critic", params["critic"], obs)[0][0]

    def policy(self, params, obs):
        """Distribution parameters at ``obs``: (logits,) for Discrete, (μ, σ) for Box."""
        out = self.apply("actor", params["actor"], obs)
        if self.config.discrete:
            return out
        mu, pre_std = out
        return mu, jax.nn.softplus(pre_std)

    def log_prob_and_entropy(self, actor_params, obs, action):
        """(log π(action|obs), H(π(·|obs))) as float32 scalars (Gaussian: summed over dims)."""
        if self.config.discrete:
            (logits,) = self.policy({"actor": actor_params}, obs)
            log_p = jax.nn.log_softmax(logits)
            return log_p[action], -jnp.sum(jnp.exp(log_p) * log_p)
        mu, std = self.policy({"actor": actor_params}, obs)
        log_std = jnp.log(std)
        log_prob = jnp.sum(-0.5 * jnp.square((action - mu) / std) - log_std - _HALF_LOG_2PI)
        entropy = jnp.sum(0.5 + _HALF_LOG_2PI + log_std)
        return log_prob, entropy

    def _act(self, params, obs, step, key, hp):
        if self.config.discrete:
            (logits,) = self.policy(params, obs)
            action = jax.random.categorical(key, logits).astype(jnp.int32)
        else:
            mu, std = self.policy(params, obs)
            action = mu + std * jax.random.normal(key, mu.shape)
        return action, jnp.zeros((), bool)

    def greedy_action(self, params, obs):
        """The evaluation action at normalised ``obs``: the most probable action (Discrete)
        or the mean μ (Box, unclipped; the adapter clips it)."""
        if self.config.discrete:
            (logits,) = self.policy(params, obs)
            return jnp.argmax(logits).astype(jnp.int32)
        return self.policy(params, obs)[0]

    def actor_objective(self, actor_params, obs, action, td_error, entropy_coef):
        """log π(a|s) + c · sign(δ) · H(π(·|s)): the actor's 'prediction' whose gradient
        enters its ObGD trace (the update then multiplies by δ)."""
        log_prob, entropy = self.log_prob_and_entropy(actor_params, obs, action)
        return log_prob + entropy_coef * jnp.sign(td_error) * entropy

    def step(self, state: AgentState, ts: TimeStep, hp: HParams, diagnose=True):
        """One Stream AC(λ) step (shapes and dtypes: :meth:`StreamAgent.step`); the action
        is int32 [] (Discrete) or float32 [action_dim] (Box, unclipped). δ is the critic's
        (:func:`~streamrl.agents.base.state_value_td_error`)."""
        norm, o = self.observe(state.norm, state.obs, ts, hp)
        step = state.step + 1

        td_error, critic_grads = self.state_value_td_error("critic", state.params["critic"], state.obs, o, hp)
        actor_grads = jax.grad(self.actor_objective)(
            state.params["actor"], state.obs, state.action, td_error, hp.entropy_coef
        )
        params, opt_state = {}, {}
        for name, grads in (("actor", actor_grads), ("critic", critic_grads)):
            params[name], opt_state[name] = self.apply_update(
                name, state.params[name], state.opt_state[name], grads, td_error, o.done, hp
            )
        action, nongreedy = self._act(params, o.act_obs, step, action_key(state.key, step), hp)
        overshoot = self.overshoot_check(
            diagnose, td_error, lambda: self.state_value_td_error_after("critic", params["critic"], state.obs, o, hp)
        )
        diag = state.diag.record(td_error, overshoot, opt_state["critic"].step_size, opt_state["actor"].step_size)
        new_state = AgentState(
            params=params, opt_state=opt_state, norm=norm, obs=o.act_obs, action=action, nongreedy=nongreedy,
            key=state.key, step=step, td_error=td_error, diag=diag,
        )
        return new_state, action
