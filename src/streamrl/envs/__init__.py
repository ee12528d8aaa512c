"""Environment adapters and the registry that resolves environment ids.

``make_env(env_id, seed)`` returns a host adapter (:class:`~streamrl.envs.gym.GymnasiumEnv`)
for any registered Gymnasium id with a Box observation space and Box or Discrete actions.
"""

from streamrl.envs.gym import EnvSpec, GymnasiumEnv, make_env

__all__ = ["EnvSpec", "GymnasiumEnv", "make_env"]
