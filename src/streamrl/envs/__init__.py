"""Environment adapters: one per source of ids (Gymnasium, EnvPool, gymnax and brax), each
making its environments with the settings of their family (:mod:`streamrl.families`).

Host adapters implement :class:`~streamrl.types.HostEnvs` (:func:`make_host_envs`);
device adapters are pure JAX functions (:func:`streamrl.envs.device.make_device_env`).
"""

from streamrl.envs.gym import GymnasiumEnv, GymnasiumEnvs, make_env, make_envs
from streamrl.types import EnvSpec, HostEnvs

__all__ = ["EnvSpec", "GymnasiumEnv", "GymnasiumEnvs", "HostEnvs", "make_env", "make_envs", "make_host_envs"]


def make_host_envs(env_id: str, seeds, max_episode_steps: int | None = None, *, life_loss: str = "continue") -> HostEnvs:
    """The host adapter for ``env_id`` with one environment per seed: EnvPool for
    ``envpool:<task>``, Gymnasium otherwise. Raises what the adapters' factories raise
    (UnknownEnvError, MissingExtraError, UnsupportedSpaceError)."""
    from streamrl import families

    if families.source_of(env_id) == "envpool":
        from streamrl.envs.pool import make_envpool

        return make_envpool(env_id, seeds, max_episode_steps)
    return make_envs(env_id, seeds, max_episode_steps, life_loss=life_loss)
