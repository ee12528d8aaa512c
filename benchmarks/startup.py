"""Start-up time of `streamrl train` without and with JAX's persistent compilation cache.

For each task: three processes, each `streamrl train ALGO --env ID --total-steps 1000`
into a new run directory, side by side in one run: the cache off, then a first run that
fills a fresh cache, then a second run that loads from it. Reports the process wall time
and the compile time the summary records (set-up and compile before the first step).

    python benchmarks/startup.py [--tasks q:CartPole-v1 ac:HalfCheetah-v5 q:MinAtar/Breakout-v1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(algo: str, env_id: str, cache: str, run_dir: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "streamrl", "train", algo, "--env", env_id, "--total-steps", "1000",
         "--run-dir", str(run_dir), "--no-progress", "--no-tensorboard"],
        env=dict(os.environ, STREAMRL_COMPILATION_CACHE=cache), check=True, capture_output=True,
    )
    wall = time.perf_counter() - t0
    return wall, json.loads((run_dir / "summary.json").read_text())["compile_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["q:CartPole-v1", "ac:HalfCheetah-v5", "q:MinAtar/Breakout-v1"])
    args = parser.parse_args()
    print("| task | cache off: wall / compile (s) | first run, filling the cache | second run, from the cache | second / off (wall) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for k, task in enumerate(args.tasks):
            algo, env_id = task.split(":", 1)
            cache = str(Path(tmp) / f"cache{k}")
            off = one_run(algo, env_id, "off", Path(tmp) / f"r{k}off")
            first = one_run(algo, env_id, cache, Path(tmp) / f"r{k}a")
            second = one_run(algo, env_id, cache, Path(tmp) / f"r{k}b")
            cell = lambda r: f"{r[0]:.1f} / {r[1]:.1f}"  # noqa: E731
            print(f"| {algo} {env_id} | {cell(off)} | {cell(first)} | {cell(second)} | {second[0] / off[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
