"""Test-session settings: the CLI's persistent JAX compilation cache goes to a fresh
directory of this session (never the user's ~/.cache), shared by the subprocesses the
tests start (they inherit the environment)."""

import os
import tempfile

os.environ.setdefault("STREAMRL_COMPILATION_CACHE", tempfile.mkdtemp(prefix="streamrl-test-jax-cache-"))
