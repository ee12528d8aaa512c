"""An independent float64 NumPy transcription of one whole stream-x agent step, for the
differential tests in ``test_parity.py``.

Written from the algorithm description in ``docs/algorithms.md`` (paper arXiv:2410.14606,
Algorithms 3-5, with the official code's conventions where they differ), not from
streamrl's code: no JAX, no Flax, hand-written backward passes. Everything is float64,
as the official code's normaliser statistics are. The conventions it pins down:

* observations: Welford statistics updated with a sample BEFORE it is normalised,
  x̂ = (x − μ)/√(σ² + 1e-8), σ² = 1 until two samples; the reset observation too;
* reward: u ← γ(1 − done)u + r, r̂ = r/√(Var[u] + 1e-8);
* time feature: −0.5 on the reset observation AND on the first s′ of an episode, then
  +1/T per step (the official ``AddTimeInfo`` appends before it increments);
* network: Linear → LayerNorm (no affine, biased variance, ε = 1e-5) → LeakyReLU(0.01)
  whose derivative at exactly 0 is the slope (PyTorch's ``x > 0`` convention);
* ObGD: z ← γλz + g; α = min(lr, 1/(κ·max(|δ|,1)·‖z‖₁)) (lr = 1); w ← w + αδz; reset after
  (AdaptiveObGD: z scaled by 1/√(v̂ + ε) in the bound and the step, v̂ the bias-corrected
  running mean of (δz)²);
* truncation: no bootstrap by default, like termination; optionally bootstrap from s′.

Parameters use streamrl's Flax layout (``{"params": {"Dense_i": {"kernel": (in, out),
"bias": (out,)}}}``) only at the boundary (:func:`from_flax`), so both sides can start
from the same weights.
"""

from __future__ import annotations

import numpy as np

LN_EPS = 1e-5
SLOPE = 0.01
NORM_EPS = 1e-8


# -- network -------------------------------------------------------------------------
def pairs_of(tree):
    """Flax Dense params (or a tree shaped like them, e.g. a trace) → [(W, b)] in layer
    order, float64."""
    layers = tree["params"]
    names = sorted(layers, key=lambda n: int(n.split("_")[1]))
    return [(np.asarray(layers[n]["kernel"], np.float64), np.asarray(layers[n]["bias"], np.float64)) for n in names]


def from_flax(tree, n_hidden: int):
    """Flax Dense params → (hidden [(W, b)], heads [(W, b)]) as float64 arrays."""
    pairs = pairs_of(tree)
    return pairs[:n_hidden], pairs[n_hidden:]


def forward(net, x):
    """Head outputs and the cache for :func:`backward`."""
    hidden, heads = net
    cache = []
    for w, b in hidden:
        pre = x @ w + b
        mu = pre.mean()
        sigma = np.sqrt(((pre - mu) ** 2).mean() + LN_EPS)
        y = (pre - mu) / sigma
        out = np.where(y > 0, y, SLOPE * y)
        cache.append((x, y, sigma))
        x = out
    return [x @ w + b for w, b in heads], (cache, x)


def backward(net, cache, d_heads):
    """Gradient of Σₖ d_heads[k] · head_k with respect to every parameter, as a list of
    (dW, db) pairs in (hidden..., heads...) order."""
    hidden, heads = net
    layer_cache, feat = cache
    grads_heads = [(np.outer(feat, d), d.copy()) for d in d_heads]
    d = sum(w @ dh for (w, _), dh in zip(heads, d_heads))
    grads_hidden = []
    for (w, _), (x, y, sigma) in zip(reversed(hidden), reversed(layer_cache)):
        d = d * np.where(y > 0, 1.0, SLOPE)
        d_pre = (d - d.mean() - y * (d * y).mean()) / sigma
        grads_hidden.append((np.outer(x, d_pre), d_pre))
        d = w @ d_pre
    return grads_hidden[::-1] + grads_heads


def params_of(net):
    hidden, heads = net
    return list(hidden) + list(heads)


def with_params(net, flat):
    n = len(net[0])
    return (flat[:n], flat[n:])


# -- ObGD ----------------------------------------------------------------------------
class ObGD:
    """ObGD, or with ``adaptive=True`` AdaptiveObGD: v ← β₂v + (1 − β₂)(δz)², v̂ = v/(1 − β₂ᵗ),
    z scaled by 1/√(v̂ + ε) in both the bound and the step."""

    def __init__(self, net, gamma, lambda_, kappa, lr=1.0, adaptive=False, beta2=0.999, eps=1e-8):
        self.trace = [(np.zeros_like(w), np.zeros_like(b)) for w, b in params_of(net)]
        self.second = [(np.zeros_like(w), np.zeros_like(b)) for w, b in params_of(net)]
        self.count = 0
        self.gamma, self.lambda_, self.kappa, self.lr = gamma, lambda_, kappa, lr
        self.adaptive, self.beta2, self.eps = adaptive, beta2, eps

    def step(self, net, grads, td_error, reset):
        decay = self.gamma * self.lambda_
        self.trace = [(decay * zw + gw, decay * zb + gb) for (zw, zb), (gw, gb) in zip(self.trace, grads)]
        direction = self.trace
        if self.adaptive:
            self.count += 1
            b2 = self.beta2
            self.second = [
                (b2 * vw + (1 - b2) * (td_error * zw) ** 2, b2 * vb + (1 - b2) * (td_error * zb) ** 2)
                for (vw, vb), (zw, zb) in zip(self.second, self.trace)
            ]
            correction = 1.0 - b2**self.count
            direction = [
                (zw / np.sqrt(vw / correction + self.eps), zb / np.sqrt(vb / correction + self.eps))
                for (zw, zb), (vw, vb) in zip(self.trace, self.second)
            ]
        norm = sum(np.abs(dw).sum() + np.abs(db).sum() for dw, db in direction)
        bound = self.lr * self.kappa * max(abs(td_error), 1.0) * norm
        alpha = self.lr / bound if bound > 1.0 else self.lr
        new = [(w + alpha * td_error * dw, b + alpha * td_error * db) for (w, b), (dw, db) in zip(params_of(net), direction)]
        if reset:
            self.trace = [(np.zeros_like(zw), np.zeros_like(zb)) for zw, zb in self.trace]
        return with_params(net, new), alpha


# -- normalisation of the stream -----------------------------------------------------
class Welford:
    def __init__(self, shape):
        self.n, self.mean, self.m2 = 0, np.zeros(shape), np.zeros(shape)

    def update(self, x):
        self.n += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.n
        self.m2 = self.m2 + delta * (x - self.mean)

    @property
    def var(self):
        return np.ones_like(self.m2) if self.n < 2 else self.m2 / (self.n - 1)

    def normalize(self, x):
        self.update(x)
        return (x - self.mean) / np.sqrt(self.var + NORM_EPS)


class Stream:
    """Observation normaliser, reward scaler and time feature of one stream."""

    def __init__(self, obs_shape, gamma, time_limit):
        self.obs = Welford(obs_shape)
        self.ret = Welford(())
        self.trace = 0.0
        self.gamma, self.time_limit = gamma, time_limit
        self.tau = -0.5

    def _with_time(self, x):
        if self.time_limit is None:
            return x
        return np.concatenate([x.reshape(-1), [self.tau]])

    def reset(self, raw_obs):
        self.tau = -0.5
        return self._with_time(self.obs.normalize(np.asarray(raw_obs, np.float64)))

    def step(self, raw_next_obs, reward, done):
        """Normalised s′ (with τ, then τ grows) and the scaled reward."""
        x = self._with_time(self.obs.normalize(np.asarray(raw_next_obs, np.float64)))
        if self.time_limit is not None:
            self.tau += 1.0 / self.time_limit
        self.trace = self.gamma * (1.0 - float(done)) * self.trace + float(reward)
        self.ret.update(self.trace)
        return x, float(reward) / np.sqrt(self.ret.var + NORM_EPS)


# -- agents --------------------------------------------------------------------------
class ReferenceQ:
    """Stream Q(λ): δ = r̂ + γ(1 − cut) maxₐ q(s′, a) − q(s, a), cut = terminated, or
    truncated unless truncations bootstrap; g = ∇q(s, a); the trace is cut when the episode
    ended (either way) or the action taken was non-greedy."""

    def __init__(
        self, flax_params, n_hidden, obs_shape, time_limit, gamma=0.99, lambda_=0.8, kappa=2.0,
        adaptive=False, bootstrap_truncated=False,
    ):
        self.net = from_flax(flax_params, n_hidden)
        self.opt = ObGD(self.net, gamma, lambda_, kappa, adaptive=adaptive)
        self.stream = Stream(obs_shape, gamma, time_limit)
        self.gamma, self.bootstrap_truncated = gamma, bootstrap_truncated

    def q(self, x):
        return forward(self.net, x)[0][0]

    def reset(self, raw_obs, action):
        self.s, self.a = self.stream.reset(raw_obs), int(action)
        self.nongreedy = self.a != int(np.argmax(self.q(self.s)))

    def step(self, raw_final_obs, reward, terminated, truncated, raw_obs, next_action):
        """Learn from (s, a, r, s′); ``next_action`` is the action the agent under test took
        next (its exploration draws are its own). Returns δ."""
        done = bool(terminated or truncated)
        s_next, r = self.stream.step(raw_final_obs, reward, done)
        (q_s,), cache = forward(self.net, self.s)
        (q_next,), _ = forward(self.net, s_next)
        cut = terminated or (truncated and not self.bootstrap_truncated)
        td_error = r + self.gamma * (1.0 - float(cut)) * q_next.max() - q_s[self.a]
        d_head = np.zeros_like(q_s)
        d_head[self.a] = 1.0
        grads = backward(self.net, cache, [d_head])
        self.net, self.alpha = self.opt.step(self.net, grads, td_error, done or self.nongreedy)
        if done:
            self.reset(raw_obs, next_action)
        else:
            self.s, self.a = s_next, int(next_action)
            self.nongreedy = self.a != int(np.argmax(self.q(self.s)))
        return td_error


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class ReferenceAC:
    """Stream AC(λ): one δ from the critic drives both ObGDs; actor g = ∇[log π(a|s) +
    c·sign(δ)·H(π(·|s))]; Gaussian (μ, softplus σ) or categorical policy."""

    def __init__(
        self, actor_params, critic_params, n_hidden, obs_shape, time_limit, discrete,
        gamma=0.99, lambda_=0.8, kappa=2.0, kappa_policy=3.0, entropy_coef=0.01,
        adaptive=False, bootstrap_truncated=False,
    ):
        self.actor, self.critic = from_flax(actor_params, n_hidden), from_flax(critic_params, n_hidden)
        self.actor_opt = ObGD(self.actor, gamma, lambda_, kappa_policy, adaptive=adaptive)
        self.critic_opt = ObGD(self.critic, gamma, lambda_, kappa, adaptive=adaptive)
        self.stream = Stream(obs_shape, gamma, time_limit)
        self.gamma, self.entropy_coef, self.discrete = gamma, entropy_coef, discrete
        self.bootstrap_truncated = bootstrap_truncated

    def reset(self, raw_obs, action):
        self.s, self.a = self.stream.reset(raw_obs), np.asarray(action, np.float64)

    def policy_grads(self, td_error):
        heads, cache = forward(self.actor, self.s)
        c = self.entropy_coef * np.sign(td_error)
        if self.discrete:
            logits = heads[0]
            log_p = logits - np.logaddexp.reduce(logits)
            p = np.exp(log_p)
            entropy = -(p * log_p).sum()
            d_logits = -p.copy()
            d_logits[int(self.a)] += 1.0  # ∇ log π(a)
            d_logits += c * (-p * (log_p + entropy))  # ∇ H
            d_heads = [d_logits]
        else:
            mu, pre = heads
            std = _softplus(pre)
            diff = self.a - mu
            d_mu = diff / std**2
            d_std = -1.0 / std + diff**2 / std**3 + c / std  # log π and H = Σ log σ + const
            d_heads = [d_mu, d_std * _sigmoid(pre)]
        return backward(self.actor, cache, d_heads)

    def step(self, raw_final_obs, reward, terminated, truncated, raw_obs, next_action):
        done = bool(terminated or truncated)
        s_next, r = self.stream.step(raw_final_obs, reward, done)
        (v_s,), cache = forward(self.critic, self.s)
        (v_next,), _ = forward(self.critic, s_next)
        cut = terminated or (truncated and not self.bootstrap_truncated)
        td_error = r + self.gamma * (1.0 - float(cut)) * v_next[0] - v_s[0]
        critic_grads = backward(self.critic, cache, [np.ones(1)])
        actor_grads = self.policy_grads(td_error)
        self.actor, self.actor_alpha = self.actor_opt.step(self.actor, actor_grads, td_error, done)
        self.critic, self.alpha = self.critic_opt.step(self.critic, critic_grads, td_error, done)
        if done:
            self.reset(raw_obs, next_action)
        else:
            self.s, self.a = s_next, np.asarray(next_action, np.float64)
        return td_error
