"""streamrl: streaming deep reinforcement learning (the stream-x algorithms) in JAX.

JAX runs on the CPU unless ``JAX_PLATFORMS`` says otherwise: one stream is a chain of tiny
sequential updates, which a CPU runs faster than an accelerator.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

__version__ = "0.1.0"
