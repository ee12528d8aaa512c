"""What a newcomer from CleanRL / SB3 / PureJaxRL expects (issue 12): --version, --config
files with the flags' meaning, re-running a recorded config.json, --eval-every, the W&B
logger, the compilation cache, honest video output."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamrl import __version__
from streamrl.cli import main

TESTS = Path(__file__).parent
SHORT = ["--total-steps", "1500", "--no-progress", "--no-tensorboard"]


def _one_line(capsys, argv, match, status=2):
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and match in err, err
    return err


def _options(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["options"]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"streamrl {__version__}"


def test_a_config_file_means_what_the_flags_mean(tmp_path):
    """The same options from a TOML file, a YAML file and flags: the same resolved options
    and the same learning, step for step; flags after --config win."""
    (tmp_path / "c.toml").write_text(
        'algo = "sarsa"\nenv = "Acrobot-v1"\ntotal-steps = 1500\nlambda = [0.0, 0.8]\nkappa = 3\n'
        "hidden = [16, 16]\nnormalize_obs = true\ntensorboard = false\nprogress = false\n"
    )
    (tmp_path / "c.yaml").write_text(
        "algo: sarsa\nenv: Acrobot-v1\ntotal_steps: 1500\nlambda: '0,0.8'\nkappa: 2\nhidden: [16, 16]\n"
        "tensorboard: false\nprogress: false\n"
    )
    flags = ["train", "sarsa", "--env", "Acrobot-v1", "--lambda", "0,0.8", "--kappa", "2", "--hidden", "16", "16", *SHORT]
    assert main(flags + ["--run-dir", str(tmp_path / "flags")]) == 0
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--kappa", "2", "--run-dir", str(tmp_path / "toml")]) == 0
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "yaml")]) == 0
    reference = _options(tmp_path / "flags")
    for name in ("toml", "yaml"):
        got = _options(tmp_path / name)
        assert got["config"] == str(tmp_path / f"c.{name}")
        differ = {k for k in reference if reference[k] != got[k]} - {"run_dir", "config"}
        assert not differ, {k: (reference[k], got[k]) for k in differ}
        assert (tmp_path / name / "episodes.csv").read_bytes() == (tmp_path / "flags" / "episodes.csv").read_bytes()


def test_a_recorded_config_json_re_runs_the_run_exactly(tmp_path):
    assert main(["train", "q", "--seed", "3", "--lambda", "0.5", *SHORT, "--run-dir", str(tmp_path / "a")]) == 0
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--no-progress", "--run-dir", str(tmp_path / "b")]) == 0
    a, b = _options(tmp_path / "a"), _options(tmp_path / "b")
    assert {k for k in a if a[k] != b[k]} == {"run_dir", "config"}
    assert (tmp_path / "a" / "episodes.csv").read_bytes() == (tmp_path / "b" / "episodes.csv").read_bytes()


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("c.yaml", "env: CartPole-v1\nlamda: 0.5\n", "unknown option 'lamda'; did you mean lambda"),
        ("c.toml", 'total-steps = "lots"\n', "invalid value for total-steps: lots"),
        ("c.toml", 'algo = "dqn"\n', "invalid value for algo"),
        ("c.toml", 'run-dir = "elsewhere"\n', "give --run-dir on the command line"),
        ("c.toml", "allow-env-import = true\n", "give --allow-env-import on the command line"),
        ("c.toml", "lambda = [0.0, \n", "not valid TOML"),
        ("c.yaml", "- 1\n- 2\n", "expected a table of options"),
        ("c.ini", "[x]\n", "use a .toml, .yaml or .json file"),
        ("missing.toml", None, "cannot read it"),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path, capsys, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    _one_line(capsys, ["train", "--config", str(path), "--run-dir", str(tmp_path / "run")], match)
    assert not (tmp_path / "run").exists()


def _evaluations(run: Path) -> list[dict]:
    with open(run / "evaluations.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_eval_every_records_greedy_episodes_and_leaves_learning_unchanged(tmp_path, capsys):
    base = ["train", "q", "--num-seeds", "2", "--total-steps", "3000", "--checkpoint-every", "2000", "--no-progress", "--no-tensorboard"]
    assert main(base + ["--run-dir", str(tmp_path / "plain")]) == 0
    assert main(base + ["--eval-every", "1000", "--eval-episodes", "2", "--run-dir", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "episodes.csv").read_bytes() == (tmp_path / "plain" / "episodes.csv").read_bytes()
    rows = _evaluations(tmp_path / "eval")
    assert [(int(r["step"]), int(r["agent"]), int(r["episode"])) for r in rows] == [
        (s, a, e) for s in (1000, 2000, 3000) for a in (0, 1) for e in (0, 1)
    ]
    assert all(int(r["seed"]) == int(r["agent"]) and float(r["episodic_return"]) == int(r["length"]) for r in rows)  # CartPole: +1 a step
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    last = [float(r["episodic_return"]) for r in rows if r["step"] == "3000"]
    assert summary["eval_step"] == 3000 and summary["eval_mean_return"] == pytest.approx(sum(last) / len(last))
    assert "evaluation at step 3,000" in " ".join(capsys.readouterr().err.split())
    # A resume from the checkpoint at 2,000 drops the evaluation recorded after it, and redoes it.
    (tmp_path / "eval" / "summary.json").unlink()
    import shutil

    shutil.rmtree(tmp_path / "eval" / "checkpoints" / "3000")
    assert main(["train", "--resume", str(tmp_path / "eval"), "--no-progress"]) == 0
    steps = [int(r["step"]) for r in _evaluations(tmp_path / "eval")]
    assert steps.count(3000) == 4 and steps.count(2000) == 4


def test_eval_every_refuses_td_and_bad_values(tmp_path, capsys):
    _one_line(capsys, ["train", "td", "--eval-every", "100", "--run-dir", str(tmp_path / "r")], "no policy to evaluate")
    _one_line(capsys, ["train", "--eval-episodes", "0", "--run-dir", str(tmp_path / "r")], "--eval-episodes must be >= 1")
    assert not (tmp_path / "r").exists()


def test_wandb_offline_logs_the_scalars_without_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    assert main(["train", "q", *SHORT, "--eval-every", "1000", "--eval-episodes", "1", "--wandb", "--run-dir", str(run)]) == 0
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb")), list((run / "wandb").iterdir())


def test_wandb_without_the_package_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    _one_line(capsys, ["train", "q", *SHORT, "--wandb", "--run-dir", str(tmp_path / "run")], "pip install 'streamrl[wandb]'")


def test_the_compilation_cache_is_used_and_can_be_turned_off(tmp_path, monkeypatch):
    import jax

    from streamrl.cli import _use_compilation_cache

    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.setenv("STREAMRL_COMPILATION_CACHE", "off")
        assert _use_compilation_cache() is None
        monkeypatch.setenv("STREAMRL_COMPILATION_CACHE", str(tmp_path / "cache"))
        assert _use_compilation_cache() == tmp_path / "cache" and jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
        # A program compiled by one process is loaded by the next.
        env = dict(os.environ, PYTHONPATH=str(TESTS), STREAMRL_COMPILATION_CACHE=str(tmp_path / "cache2"))
        for k in (1, 2):
            subprocess.run([sys.executable, "-m", "streamrl", "train", "q", *SHORT, "--run-dir", str(tmp_path / f"r{k}")],
                           env=env, check=True, capture_output=True, timeout=600)
            if k == 1:
                entries = sorted(p.name for p in (tmp_path / "cache2").iterdir())
                assert entries
        assert sorted(p.name for p in (tmp_path / "cache2").iterdir()) == entries  # the second run added nothing: it loaded
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_a_video_on_a_headless_machine_is_quiet_and_says_when_it_is_cut(tmp_path):
    pytest.importorskip("imageio")
    run = tmp_path / "run"
    assert main(["train", "q", *SHORT, "--run-dir", str(run)]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER", "XDG_RUNTIME_DIR")}
    proc = subprocess.run(
        [sys.executable, "-m", "streamrl", "eval", str(run), "--episodes", "1", "--video-file", str(tmp_path / "v.gif"),
         "--video-frames", "5"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    assert "cut at 5 of the episode's" in proc.stdout and "raise --video-frames" in proc.stdout
    note = json.loads((run / "eval.json").read_text())["video_frames"]
    assert note["frames"] == 5 and note["cut"] and note["episode_frames"] > 5
