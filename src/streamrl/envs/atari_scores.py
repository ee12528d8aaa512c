"""Reference random/human scores for the 57-game Atari (ALE) benchmark.

A human-normalised score maps a raw game score linearly so that a uniformly
random policy scores 0 and the human reference scores 1::

    normalised = (score - random) / (human - random)

Sources
-------
* V. Mnih et al., "Human-level control through deep reinforcement learning",
  Nature, 2015 -- introduced the random/human protocol on 49 games.
* A. P. Badia et al., "Agent57: Outperforming the Atari Human Benchmark",
  ICML 2020 (arXiv:2003.13350), Appendix H ("Atari 57 table of scores") --
  the full 57-game "Random" and "Average Human" columns.

The numbers below are the DeepMind Atari-57 set (no-op starts, episodes capped
at 108,000 frames), as tabulated in google-deepmind/dqn_zoo
``dqn_zoo/atari_data.py``; they were cross-checked value by value against an
independent transcription of the Agent57 Appendix H table and against several
other public tables keyed by Gymnasium/EnvPool names.  All 114 numbers agree
except one:

* ``video_pinball`` random score: dqn_zoo gives 16256.9 (the random score
  reported since Mnih et al. 2015), whereas the Agent57 appendix table lists
  0.0.  We keep 16256.9, the value used by dqn_zoo and most DeepMind/Google
  tooling; note that with it the denominator for Video Pinball is small
  (1411.0), so its normalised scores are very large.

Note that the "human" column is the later professional-tester set used since
the Double/Dueling DQN papers (e.g. Breakout 30.5, Pong 14.6), which differs
slightly from the human column printed in the 2015 Nature paper.

Keys are ale-py ROM ids (snake_case, e.g. ``montezuma_revenge``,
``up_n_down``).
"""

from __future__ import annotations

# game -> (random_score, human_score)
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4),
    "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9),
    "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4),
    "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4),
    "hero": (1027.0, 30826.4),
    "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6),
    "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0),
    "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7),
    "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3),
    "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5),
    # Agent57's appendix lists 0.0 as the random score here; see docstring.
    "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}

# Lower-case name with underscores removed -> canonical key, so that
# Gymnasium CamelCase ids ("UpNDown", "MsPacman") resolve unambiguously.
_COMPACT: dict[str, str] = {k.replace("_", ""): k for k in REFERENCE_SCORES}


def human_normalized(game: str, score: float) -> float:
    """Return ``(score - random) / (human - random)`` for ``game``."""
    try:
        random_score, human_score = REFERENCE_SCORES[game]
    except KeyError:
        raise KeyError(
            f"no reference scores for Atari game {game!r}: only the 57 standard "
            "ALE benchmark games (snake_case ale-py names) have them"
        ) from None
    return (score - random_score) / (human_score - random_score)


def game_of(env_id: str) -> str | None:
    """Map a Gymnasium ALE id to its ``REFERENCE_SCORES`` key, or ``None``.

    Examples: ``'ALE/Breakout-v5'`` and ``'BreakoutNoFrameskip-v4'`` map to
    ``'breakout'``; ``'ALE/MontezumaRevenge-v5'`` to ``'montezuma_revenge'``.
    Ids outside the 57-game benchmark (e.g. ``'ALE/Pitfall2-v5'``) give
    ``None``, and so does every id of another namespace: ``'MinAtar/Breakout-v1'``,
    ``'dm_control/…'`` (MinAtar's Breakout is not Atari's; its returns are not on the
    human-normalised scale).
    """
    namespace, _, name = env_id.rpartition("/")
    if namespace and namespace != "ALE":
        return None
    head, sep, version = name.rpartition("-v")
    if sep and version.isdigit():
        name = head
    for suffix in ("NoFrameskip", "Deterministic"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.endswith("-ram"):
        name = name[: -len("-ram")]
    return _COMPACT.get(name.replace("_", "").lower())
