"""`streamrl envs`: only ids streamrl can train on, grouped by family with a count, the
pip extra of each family and whether it is installed; no library noise; `--all` keeps the
raw registry. The sample test makes listed ids with the factory training uses."""

import contextlib
import importlib.util
import io
import random
import re

import pytest

from streamrl import families
from streamrl.cli import main

SECTION = re.compile(r"^(?P<title>\S.*) \((?P<count>[\d,]+) ids?\)$")


def _run(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["envs", *args]) == 0
    return out.getvalue()


def _sections(text: str) -> dict[str, tuple[int, list[str]]]:
    """Family title → (the count its header states, the ids listed under it)."""
    sections: dict[str, tuple[int, list[str]]] = {}
    current = None
    for line in text.splitlines():
        match = SECTION.match(line)
        if match:
            current = match["title"]
            sections[current] = (int(match["count"].replace(",", "")), [])
        elif current is not None and line.startswith("  "):
            sections[current][1].append(line.strip())
    return sections


def _table(text: str) -> dict[tuple[str, str], int]:
    """(family title, source) → ids, from the summary table at the top."""
    rows = {}
    for line in text.split("\n\n")[1].splitlines()[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if cells[2].isdigit():
            rows[(cells[0], cells[1])] = int(cells[2])
    return rows


@pytest.fixture(scope="module")
def listing() -> str:
    return _run()


def test_ids_are_grouped_by_family_with_counts(listing):
    assert "Failed to import" not in listing and "WARN" not in listing
    sections = _sections(listing)
    classic = families.FAMILIES["classic_control"].title
    assert "CartPole-v1" in sections[classic][1]
    for title, (count, ids) in sections.items():
        assert count == len(ids) > 0, title
        assert sum(n for (t, _), n in _table(listing).items() if t == title) == count, title
        for env_id in ids:  # every id sits under its own family
            family = families.of_id(env_id)
            if family is None:
                from streamrl.envs.gym import family_of

                family = family_of(env_id)
            assert family.title == title, (env_id, title)
    first = listing.splitlines()[0]
    assert f"{sum(c for c, _ in sections.values()):,} environment ids" in first
    assert "streamrl[mujoco]" in listing or importlib.util.find_spec("mujoco") is None


def test_untrainable_ids_are_left_out_but_registered(listing):
    listed = {env_id for _, ids in _sections(listing).values() for env_id in ids}
    left_out = ["HalfCheetah-v2", "HalfCheetah-v3", "tabular/CliffWalking-v0", "tabular/Blackjack-v0", "FrozenLake-v1", "Blackjack-v1"]
    if importlib.util.find_spec("gymnax"):
        left_out += ["gymnax:SimpleBandit-bsuite", "gymnax:FrozenLake-misc", "gymnax:Catch-bsuite", "gymnax:MNISTBandit-bsuite"]
    assert not listed & set(left_out)
    registered = set(_run("--all").split())
    assert set(left_out) <= registered  # the filter, not the registry, left them out
    assert listed <= registered


def test_filter_keeps_matching_ids_only():
    sections = _sections(_run("cartpole"))
    ids = [env_id for _, listed in sections.values() for env_id in listed]
    assert "CartPole-v1" in ids and all("cartpole" in env_id.lower() for env_id in ids)
    if importlib.util.find_spec("gymnax"):
        assert "gymnax:CartPole-v1" in ids


def test_a_sample_of_listed_ids_can_be_made_and_trained(listing):
    """One id drawn from each family's list (seeded), plus a gymnax one where installed:
    each must pass what `streamrl train` does before its first step (the driver makes the
    environment with streamrl's factory; the config finds a network for its spaces)."""
    from streamrl.config import TrainConfig, resolve
    from streamrl.drivers import driver_for

    rng = random.Random(0)
    sample = []
    for title, (_, ids) in sorted(_sections(listing).items()):
        if title == families.FAMILIES["brax"].title:
            continue  # brax compiles for tens of seconds; its ids are brax's own registry
        sample.append(rng.choice(ids))
    gymnax_ids = [i for _, ids in _sections(listing).values() for i in ids if i.startswith("gymnax:")]
    if gymnax_ids and not any(i.startswith("gymnax:") for i in sample):
        sample.append(rng.choice(gymnax_ids))
    assert "CartPole-v1" in listing and len(sample) >= 1
    failures = []
    for env_id in sample:
        try:
            cfg = TrainConfig(algo="ac", env=env_id, total_steps=10)
            driver = driver_for(cfg)
            try:
                resolve(cfg, driver.spec)
            finally:
                driver.close()
        except Exception as exc:  # noqa: BLE001  (collect every failure, then report)
            failures.append(f"{env_id}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
