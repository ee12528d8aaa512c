"""Every command of the README works as written (issue 12): each ``streamrl …`` line of its
bash blocks runs, in order, in a fresh directory, with short budgets (``--total-steps``
cut to a few hundred steps); ``runs/<run>`` is a run an earlier command wrote; globs are
expanded as the shell would. The Python example runs too. A README change that breaks a
command fails here."""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest

from streamrl.cli import main

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
STEPS = 300


def readme_commands() -> list[str]:
    """The ``streamrl`` commands of the README's bash blocks, in order (comments removed)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value streamrl …: the test sets them
                    words = words[1:]
                if words[:3] == ["python", "-m", "streamrl"]:
                    words = words[2:]
                if words[:1] == ["streamrl"] and "..." not in words:
                    commands.append(shlex.join(words[1:]))
    return commands


def _short(argv: list[str], resumed: int) -> list[str]:
    """A README command with a short budget: --total-steps cut to STEPS (a resume: beyond the
    steps the run has), no progress bar; repository paths (examples/…) made absolute."""
    argv = [str(ROOT / a) if (ROOT / a).exists() and a.startswith("examples/") else a for a in argv]
    if argv[0] == "barrier":  # three variants (each is tested in tests/test_barrier.py), 2 seeds, a short budget
        argv = [a for a in argv] + ["--variants", "stream-x", "classic-adam", "dqn1"]
        for flag, value in (("--total-steps", str(STEPS * 4)), ("--num-seeds", "2")):
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value]
        return argv + ["--no-progress", "--reps", "100"]
    if argv[0] == "report":  # fewer bootstrap resamples (2,000 over the README's 20-odd methods took 90 s)
        return argv + ["--reps", "100"]
    if argv[0] == "sweep":  # a local Ray, every task, one seed, a short budget
        for flag in ("--total-steps", "--num-seeds"):
            if flag in argv:
                del argv[argv.index(flag):argv.index(flag) + 2]
        return argv + ["--total-steps", str(STEPS), "--num-seeds", "1", "--no-progress"]
    if argv[0] != "train" or "--help" in argv:
        return argv
    steps = str(STEPS * (resumed + 2) if "--resume" in argv else STEPS)
    if "--total-steps" in argv:
        argv[argv.index("--total-steps") + 1] = steps
    elif "--resume" not in argv:
        argv += ["--total-steps", steps]
    return argv + ["--no-progress"]


def _expand(argv: list[str], run: Path | None) -> list[str]:
    out = []
    for a in argv:
        if "<run>" in a:
            assert run is not None, "the README uses runs/<run> before any command trained a run"
            out.append(str(run))
        elif any(c in a for c in "*?["):
            matches = sorted(glob.glob(a))
            assert matches, f"{a} matches nothing"
            out += matches
        else:
            out.append(a)
    return out


def test_the_readme_lists_the_main_job_and_the_test_command():
    text = README.read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "streamrl train" in first.splitlines()[0] and "python -m pytest" in first.splitlines()[1]


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    commands = readme_commands()
    assert len(commands) >= 15, commands
    run, resumed, failed = None, 0, []
    for command in commands:
        argv = _expand(_short(shlex.split(command), resumed), run)
        try:
            status = main(argv)
        except SystemExit as exc:  # --help
            status = exc.code
        out = capsys.readouterr()
        if status != 0:
            failed.append(f"streamrl {command} -> {status}: {out.err.strip()[-500:]}")
        if argv[0] == "train" and "--resume" in argv:
            resumed += 1
        if argv[0] == "train" and "--help" not in argv and status == 0 and "--resume" not in argv:
            runs = sorted(Path("runs").glob("*"), key=lambda p: p.stat().st_mtime)
            if runs and not command.split()[1:2] == ["td"]:
                run = runs[-1]  # the newest run with a policy is runs/<run>
    assert not failed, "\n".join(failed)


def test_the_library_loop_example_runs(tmp_path):
    """examples/library_loop.py runs (2,000 steps: episodes end and are counted; learning
    with the same step is asserted in tests/test_online.py and tests/test_agents.py)."""
    import runpy

    example = runpy.run_path(str(ROOT / "examples" / "library_loop.py"))
    returns = example["main"](2_000)
    assert len(returns) >= 10 and all(r >= 1 for r in returns), returns[-10:]


def test_the_readme_python_examples_run(tmp_path, monkeypatch):
    """Each ```python block of the README runs as written, with loops of a few hundred steps."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for code in blocks:
        code = re.sub(r"range\(\d[\d_]*\)", "range(300)", code)
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "runs" / "my-agent" / "config.json").is_file()
