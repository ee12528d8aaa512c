"""Networks of the stream-x agents: sparse init, affine-free LayerNorm, leaky ReLU.

Source: arXiv:2410.14606, Section 4 and Appendix (network sizes); docs/algorithms.md
section "Networks". Built with Flax Linen.

Every network here maps ONE unbatched observation to its head outputs; fleets use
``jax.vmap``. Hidden layers are Linear/Conv → LayerNorm over the whole layer output
(no learnable scale or bias, ε = 1e-5 as PyTorch's ``F.layer_norm``) → LeakyReLU(0.01).
Output heads are plain Linear layers. Every Linear and Conv weight is sparse-initialised
(:func:`sparse_init`) and every bias starts at zero. Convolutions use 'VALID' padding
(PyTorch's default of zero padding).

Torsos (the paper's sizes):
  * ``mlp``: Linear(h₁) → … → Linear(hₖ), e.g. 2 × 128 (AC, TD) or 2 × 32 (classic-control Q).
  * ``minatar`` (10×10×C): Conv(16, 3×3, stride 1) → flatten(1024) → Linear(128).
  * ``atari`` (84×84×4): Conv(32, 8×8, /5) → Conv(64, 4×4, /3) → Conv(64, 3×3, /2)
    → flatten(256) → Linear(256).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["sparse_init", "num_sparse_zeros", "leaky_relu", "StreamNet", "torso_for_shape", "TORSOS"]

TORSOS = ("mlp", "minatar", "atari")

CONV_HIDDEN = {"minatar": (128,), "atari": (256,)}
"""Default width of the Linear layer after each conv torso (the official MinAtar and Atari
scripts: 128 and 256)."""
LAYER_NORM_EPS = 1e-5
LEAKY_SLOPE = 0.01


def num_sparse_zeros(fan_in: int, sparsity: float) -> int:
    """⌈sparsity · fan_in⌉, computed on the decimal value of ``sparsity`` so that float
    rounding of the product can never add a zero (the paper's definition is exact)."""
    return math.ceil(Fraction(str(sparsity)) * fan_in)


def sparse_init(sparsity: float = 0.9):
    """Flax kernel initialiser: uniform in ±1/√fan_in, then exactly ⌈sparsity·fan_in⌉
    zeros per output unit, their positions drawn without replacement.

    Works for Dense kernels ``(fan_in, out)`` and Conv kernels ``(kh, kw, c_in, out)``
    (fan_in = kh·kw·c_in). Raises ``ValueError`` if ``sparsity`` is outside [0, 1).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
        key_w, key_mask = jax.random.split(key)
        bound = 1.0 / math.sqrt(fan_in)
        w = jax.random.uniform(key_w, (fan_in, fan_out), dtype, -bound, bound)
        # Rank fan_in i.i.d. uniforms per output unit: the lowest ranks are a uniformly
        # random subset of exactly num_zeros distinct inputs.
        ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key_mask, (fan_in, fan_out)), axis=0), axis=0)
        w = jnp.where(ranks < num_sparse_zeros(fan_in, sparsity), jnp.zeros_like(w), w)
        return w.reshape(shape)

    return init


def _hidden(x, reduction_axes, layer_norm: bool = True):
    if layer_norm:
        x = nn.LayerNorm(
            epsilon=LAYER_NORM_EPS,
            use_bias=False,
            use_scale=False,
            use_fast_variance=False,
            reduction_axes=reduction_axes,
        )(x)
    return leaky_relu(x)


def leaky_relu(x):
    """LeakyReLU(0.01) with PyTorch's derivative at exactly 0: the slope, not 1.

    ``flax.linen.leaky_relu`` selects with ``x >= 0`` and so has derivative 1 at 0. Sparse
    init makes exact zeros common: a layer whose fan-in is at most 9 (classic control's
    first layer) starts with all weights 0, so every pre-activation, and its LayerNorm
    output, is exactly 0 until the first updates, where the two conventions give gradients
    100× apart (and the LayerNorm Jacobian at 0 scales them by 1/√ε). The official code
    (PyTorch, ``x > 0``) learns Acrobot-v1 far better with the slope (docs/learning.md).
    """
    return jnp.where(x > 0, x, LEAKY_SLOPE * x)


def torso_for_shape(obs_shape: Sequence[int]) -> str:
    """Pick the torso from an observation shape: vector → ``mlp``, (10, 10, C) →
    ``minatar``, (84, 84, 4) → ``atari``. Raises ``ValueError`` for any other shape."""
    shape = tuple(obs_shape)
    if len(shape) == 1:
        return "mlp"
    if len(shape) == 3 and shape[:2] == (10, 10):
        return "minatar"
    if shape == (84, 84, 4):
        return "atari"
    raise ValueError(
        f"no network for observations of shape {shape}: streamrl supports vectors, "
        "10x10xC (MinAtar) and 84x84x4 (Atari); flatten the observation or pass --torso"
    )


class StreamNet(nn.Module):
    """Torso plus one or more linear heads, for a single unbatched observation.

    Attributes:
      torso: one of ``TORSOS``.
      hidden: widths of the Linear hidden layers (for ``mlp``; the conv torsos use the
        last entry as their Linear width, default 128 for MinAtar and 256 for Atari).
      heads: output sizes of the linear heads, e.g. ``(n_actions,)`` for Q or
        ``(d, d)`` for a Gaussian policy's μ and pre-softplus σ.
      sparsity: fraction of zero weights per output unit (0.9 in the paper; 0 is a dense
        init with the same ±1/√fan_in bound, the sparse-init ablation).
      layer_norm: the parameter-free LayerNorm after each hidden layer (the paper's);
        False is the LayerNorm ablation (Linear/Conv → LeakyReLU).

    Call: ``x`` float32 of the observation shape (vector for ``mlp``, H×W×C for conv
    torsos) → tuple of float32 vectors, one per head.
    """

    torso: str = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    heads: tuple[int, ...] = (1,)
    sparsity: float = 0.9
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x):
        dense = lambda n: nn.Dense(n, kernel_init=sparse_init(self.sparsity))  # noqa: E731
        conv = lambda c, k, s: nn.Conv(  # noqa: E731
            c, (k, k), strides=(s, s), padding="VALID", kernel_init=sparse_init(self.sparsity)
        )
        if self.torso == "mlp":
            x = x.reshape(-1)
            for width in self.hidden:
                x = _hidden(dense(width)(x), -1, self.layer_norm)
        elif self.torso in ("minatar", "atari"):
            layers = [(16, 3, 1)] if self.torso == "minatar" else [(32, 8, 5), (64, 4, 3), (64, 3, 2)]
            for channels, kernel, stride in layers:
                x = _hidden(conv(channels, kernel, stride)(x), (-3, -2, -1), self.layer_norm)
            x = x.reshape(-1)
            x = _hidden(dense(self.hidden[-1])(x), -1, self.layer_norm)
        else:
            raise ValueError(f"unknown torso {self.torso!r}; choose one of {TORSOS}")
        return tuple(dense(n)(x) for n in self.heads)
