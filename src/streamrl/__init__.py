"""streamrl: streaming deep reinforcement learning (the stream-x algorithms) in JAX.

Two JAX defaults are set on import, before JAX creates its CPU backend:

* ``JAX_PLATFORMS=cpu`` (unless the environment sets it): one stream is a chain of tiny
  sequential updates, which a CPU runs faster than an accelerator;
* ``jax_cpu_enable_async_dispatch=False`` (unless ``STREAMRL_ASYNC_DISPATCH=1``): the host
  driver needs each step's action before it can step the environment, so every call is
  synchronous anyway; running it inline instead of handing it to JAX's runtime thread
  halves the cost of a call (measured 111 → 55 µs for a Stream Q(λ) step on a 2-core CPU,
  docs/benchmarks.md).

JAX reads both when it creates its CPU client, so they only take effect if streamrl is
imported before the first JAX computation of the process.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

if os.environ.get("STREAMRL_ASYNC_DISPATCH", "0") != "1":
    jax.config.update("jax_cpu_enable_async_dispatch", False)

__version__ = "0.1.0"


def __getattr__(name: str):
    """``streamrl.Agent`` (:class:`streamrl.online.Agent`), imported when first used."""
    if name == "Agent":
        from streamrl.online import Agent

        return Agent
    raise AttributeError(f"module 'streamrl' has no attribute {name!r}")
