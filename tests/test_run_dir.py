"""A run directory you can trust (issue 11): one writer, never overwritten, corruption
refused, never runs or writes through what it holds, every refusal one line — and nothing
in or outside the run directory changes when streamrl refuses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamrl.cli import main
from streamrl.config import TrainConfig
from streamrl.run import train

TESTS = Path(__file__).parent


def _snapshot(*roots: Path) -> dict:
    """Path → SHA-256 of every file under ``roots`` (links recorded as their target)."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_symlink():
                out[str(path)] = "link:" + os.readlink(path)
            elif path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _refused(capsys, argv, match: str) -> str:
    """``streamrl argv`` exits 2 with one line, ``error: …`` containing ``match``."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err
    return err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "small"
    train(TrainConfig(total_steps=600, checkpoint_every=300, run_dir=run, progress=False))
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run, dst, symlinks=True)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


# -- 1. one writer, never overwritten -------------------------------------------------------


def test_a_directory_holding_a_run_is_refused_and_left_untouched(small_run, tmp_path, capsys):
    run = _copy(small_run, tmp_path)
    before = _snapshot(run)
    _refused(capsys, ["train", "--total-steps", "300", "--run-dir", str(run), "--no-progress"], "already holds files")
    assert _snapshot(run) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("not a run")
    _refused(capsys, ["train", "--total-steps", "300", "--run-dir", str(other), "--no-progress"], "--resume")
    assert (other / "mine.txt").read_text() == "not a run" and sorted(p.name for p in other.iterdir()) == ["mine.txt"]


def test_a_second_writer_is_refused(small_run, tmp_path, capsys):
    from streamrl.results import RunLock

    run = _copy(small_run, tmp_path)
    held = RunLock(run, new=False)  # another process writing it (flock conflicts across open files)
    try:
        before = _snapshot(run)
        _refused(capsys, ["train", "--resume", str(run), "--total-steps", "900", "--no-progress"], "another streamrl process is writing")
        assert _snapshot(run) == before
    finally:
        held.release()
    assert main(["train", "--resume", str(run), "--total-steps", "900", "--no-progress"]) == 0  # free again


def test_a_refused_new_run_leaves_no_directory(tmp_path, capsys):
    run = tmp_path / "never"
    _refused(capsys, ["train", "--env", "CartPol-v1", "--run-dir", str(run)], "did you mean")
    assert not run.exists()


# -- 2. signals -------------------------------------------------------------------------


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.Popen([sys.executable, "-m", "streamrl", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _checkpoints(run: Path) -> list[int]:
    where = run / "checkpoints"
    return sorted(int(p.name) for p in where.iterdir() if p.name.isdigit()) if where.is_dir() else []


def test_more_signals_during_the_stop_checkpoint_are_ignored_until_it_is_written(tmp_path):
    run = tmp_path / "run"
    proc = _cli("train", "--total-steps", "5000000", "--checkpoint-every", "2000", "--run-dir", str(run), "--no-progress")
    deadline = time.monotonic() + 180
    while not _checkpoints(run) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    for _ in range(5):  # Ctrl-C again while it stops
        time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "checkpoint written" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and _checkpoints(run)[-1] == summary["steps"]
    lines = (run / "episodes.csv").read_text().count("\n") - 1
    assert main(["train", "--resume", str(run), "--total-steps", str(summary["steps"] + 1000), "--no-progress"]) == 0
    assert (run / "episodes.csv").read_text().count("\n") - 1 >= lines  # nothing dropped on resume


def test_a_library_call_leaves_the_process_signals_alone(tmp_path, monkeypatch):
    installed = []
    real = signal.signal
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.append(sig) or real(sig, handler))
    train(TrainConfig(total_steps=300, run_dir=tmp_path / "lib", progress=False))
    assert installed == []


# -- 3. corruption --------------------------------------------------------------------------


def test_a_garbled_checkpoint_array_is_refused_by_eval_and_resume(small_run, tmp_path, capsys):
    run = _copy(small_run, tmp_path)
    data = max((p for p in (run / "checkpoints" / "600" / "agents").rglob("*") if p.is_file() and "ocdbt" in str(p)),
               key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(b ^ 0x5A for b in raw[mid : mid + 64])
    data.write_bytes(bytes(raw))
    before = _snapshot(run)
    _refused(capsys, ["eval", str(run), "--episodes", "1"], "is corrupt")
    _refused(capsys, ["train", "--resume", str(run), "--total-steps", "900", "--no-progress"], "is corrupt")
    assert _snapshot(run) == before


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_deleted_or_truncated_record_file_is_refused_on_resume(small_run, tmp_path, capsys, damage):
    run = _copy(small_run, tmp_path)
    records = run / "episodes.csv"
    if damage == "delete":
        records.unlink()
    else:
        records.write_text("\n".join(records.read_text().splitlines()[:5]) + "\n")
    before = _snapshot(run)
    _refused(capsys, ["train", "--resume", str(run), "--total-steps", "900", "--no-progress"], "the checkpoint was written with")
    assert _snapshot(run) == before


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b'{"algo": "q", "env": "CartPole-v1", "opt', b"[1, 2]"])
def test_a_damaged_config_is_one_line_for_every_command(small_run, tmp_path, capsys, content):
    run = _copy(small_run, tmp_path)
    (run / "config.json").write_bytes(content)
    for argv in (["eval", str(run)], ["plot", str(run), "--out", str(tmp_path / "c.png")],
                 ["report", str(run), "--out", str(tmp_path / "r")], ["train", "--resume", str(run)]):
        _refused(capsys, argv, str(run))


# -- 4-5. opening a run directory runs nothing and writes through nothing --------------------


def test_a_recorded_module_id_is_not_imported_without_the_flag(small_run, tmp_path, capsys, monkeypatch):
    run = _copy(small_run, tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "pwn_streamrl_probe.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = json.loads((run / "config.json").read_text())
    config["env"] = config["options"]["env"] = "pwn_streamrl_probe:CartPole-v1"
    (run / "config.json").write_text(json.dumps(config))
    _refused(capsys, ["eval", str(run)], "--allow-env-import")
    _refused(capsys, ["train", "--resume", str(run)], "--allow-env-import")
    assert not marker.exists()


@pytest.mark.parametrize("name, argv", [("eval.json", ["eval", "{run}", "--episodes", "1"]),
                                        ("summary.json.tmp", ["train", "--resume", "{run}", "--total-steps", "900"])])
def test_a_symbolic_link_in_a_run_directory_is_refused(small_run, tmp_path, capsys, name, argv):
    run = _copy(small_run, tmp_path)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (run / name).symlink_to(outside)
    before = _snapshot(run, outside)
    _refused(capsys, [a.format(run=run) for a in argv], "symbolic link")
    assert _snapshot(run, outside) == before and outside.read_text() == "keep me"


# -- 6-7. misuse: one line, nothing surprising -------------------------------------------------


@pytest.mark.parametrize("flags, match", [
    (["--total-steps", "0"], "--total-steps must be > 0"),
    (["--max-episode-steps", "0"], "--max-episode-steps must be > 0"),
    (["--chunk-steps", "0"], "--chunk-steps must be > 0"),
    (["--lr", "1e39"], "float32"),
    (["--hidden", "100000", "100000"], "GiB"),
    (["--num-seeds", "1000000", "--hidden", "1024", "1024"], "fewer agents"),
])
def test_misuse_of_train_is_one_line_and_writes_nothing(tmp_path, capsys, flags, match):
    run = tmp_path / "run"
    _refused(capsys, ["train", *flags, "--run-dir", str(run)], match)
    assert not run.exists()


def test_run_directory_misuse(small_run, tmp_path, capsys):
    _refused(capsys, ["train", "--run-dir", ""], "--run-dir is empty")
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(capsys, ["train", "--run-dir", str(afile)], "is a file")
    _refused(capsys, ["train", "--run-dir", str(tmp_path / ("x" * 300))], "cannot make run directory")
    run = _copy(small_run, tmp_path)
    _refused(capsys, ["train", "--resume", str(run), "--env", "Acrobot-v1", "--lambda", "0.5", "--seed", "3"],
             "drop --env, --seed, --lambda")
    _refused(capsys, ["plot", str(run), "--bins", "0"], "--bins must be >= 1")
    _refused(capsys, ["report", str(run), "--reps", "0"], "--reps must be >= 1")


def test_a_missing_checkpoint_file_is_one_line_on_resume(small_run, tmp_path):
    """Orbax leaves failing coroutines behind after a failed read; their tracebacks (hundreds
    of lines at exit) must not bury the refusal."""
    run = _copy(small_run, tmp_path)
    for data in (run / "checkpoints" / "600" / "agents").rglob("*"):
        if data.is_file() and "ocdbt" in str(data) and data.parent.name == "d":
            data.unlink()
    before = _snapshot(run)
    proc = _cli("train", "--resume", str(run), "--total-steps", "900", "--no-progress")
    out, err = proc.communicate(timeout=300)
    # One refusal line, and no traceback of streamrl's. (Under heavy load TensorStore threads
    # can still print an "Event loop is closed" traceback that no Python hook sees; the
    # hundreds of Orbax coroutine tracebacks are gone. Noted in issue 11.)
    refusals = [line for line in err.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(refusals) == 1 and "is unreadable" in refusals[0], err[:2000]
    assert "src/streamrl/" not in err and err.count("Exception ignored") == 0, err[:2000]
    assert _snapshot(run) == before


def test_ctrl_c_while_a_run_starts_up_exits_130_with_one_line(tmp_path):
    run = tmp_path / "run"
    proc = _cli("train", "ac", "--total-steps", "100000", "--run-dir", str(run), "--no-progress")
    deadline = time.monotonic() + 120
    while not run.exists() and time.monotonic() < deadline:  # the run has begun: making environments, compiling
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    said = [line for line in err.strip().splitlines() if not line.startswith(("run directory: ", "compiling the step of "))]
    assert len(said) == 1 and said[0].startswith("interrupted: stopped at step"), err[-2000:]


# -- 6. a run directory that stops accepting writes ------------------------------------------


def test_a_full_disk_stops_the_run_with_one_line_a_failed_summary_and_a_resumable_checkpoint(tmp_path):
    """A file-size limit (``ulimit -f``, as a full disk) reached by the growing episode
    records after the first checkpoints: one line naming the resume command, exit 1,
    ``status: failed`` in the summary, and the resume (limit lifted) completes the run."""
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    # 12 KiB: the checkpoints' files fit; episodes.csv outgrows it after ~20k CartPole steps.
    # (The limit is set by a shell: a preexec_fn would fork this multithreaded JAX process.)
    proc = subprocess.run(
        ["bash", "-c", 'ulimit -f 12 && exec "$@"', "bash", sys.executable, "-m", "streamrl", "train", "q",
         "--total-steps", "60000", "--checkpoint-every", "5000", "--run-dir", str(run), "--no-progress", "--no-tensorboard"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    said = [line for line in proc.stderr.strip().splitlines() if not line.startswith(("run directory: ", "compiling the step of "))]
    err = "\n".join(said)
    assert proc.returncode == 1 and err.count("\n") == 0 and "Traceback" not in err, err[-3000:]
    assert err.startswith("error: cannot write") and "File too large" in err and "streamrl train --resume" in err, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "File too large" in summary["message"]
    assert f"resume from step {_checkpoints(run)[-1]:,}" in err
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda text: b"agent,seed,garbage\n1,2\n", "lacks the column"),
        (lambda text: b"\xff\xfe\x00", "not a readable episode record"),
        (lambda text: text.replace(b"\n", b"\nabc,def,1,2,3\n", 2), "damaged record"),
        (lambda text: None, "is missing"),
    ],
    ids=["columns", "not-utf8", "rows", "deleted"],
)
def test_damaged_episode_records_are_one_line_for_plot_and_report(small_run, tmp_path, capsys, damage, match):
    run = _copy(small_run, tmp_path)
    records = run / "episodes.csv"
    content = damage(records.read_bytes())
    if content is None:
        records.unlink()
    else:
        records.write_bytes(content)
    before = _snapshot(run)
    for argv in (["plot", str(run), "--out", str(tmp_path / "c.png")], ["report", str(run), "--out", str(tmp_path / "r")]):
        _refused(capsys, argv, match)
    assert _snapshot(run) == before and not (tmp_path / "c.png").exists()


def test_a_record_file_cut_short_by_a_kill_still_plots(small_run, tmp_path):
    from streamrl.results import read_episodes

    run = _copy(small_run, tmp_path)
    records = run / "episodes.csv"
    whole = read_episodes(run)
    records.write_bytes(records.read_bytes()[:-7])  # a half-written last line
    cut = read_episodes(run)
    assert len(cut) == len(whole) - 1 and cut.equals(whole.iloc[:-1])


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs: a directory no one may write, even root")
def test_a_run_directory_that_cannot_be_written_is_one_line(capsys):
    _refused(capsys, ["train", "--total-steps", "100", "--run-dir", "/sys/kernel/streamrl-run", "--no-progress"],
             "cannot make run directory /sys/kernel/streamrl-run")
