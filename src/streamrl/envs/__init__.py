"""Environment adapters and the registry that resolves environment ids.

``make_env(env_id, seed)`` returns a host adapter (:class:`~streamrl.envs.gym.GymnasiumEnv`)
for any registered Gymnasium id with a Box observation space and Box or Discrete actions.
"""

from streamrl.envs.gym import EnvSpec, GymnasiumEnv, GymnasiumEnvs, make_env, make_envs

__all__ = ["EnvSpec", "GymnasiumEnv", "GymnasiumEnvs", "make_env", "make_envs"]
