"""Soak test: a fleet trains for at least 1M agent-steps with checkpoints and TensorBoard on;
the resident memory of the training process must stay flat.

The run is a real ``streamrl train`` subprocess with a checkpoint every 10% of the run
(each rewrites ``summary.json`` with the step reached). This script samples the child's
``VmRSS`` (resident now) and ``VmHWM`` (peak so far) from ``/proc`` every 0.1 s and prints
them when the run passes 10%, 50% and 100%.

    python benchmarks/soak.py                                        # 8 × CartPole Q, 150k steps
    python benchmarks/soak.py --env gymnax:CartPole-v1 --num-seeds 64 --total-steps 40000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _memory_mib(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="q")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--num-seeds", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=150_000)
    args = parser.parse_args()
    agent_steps = args.num_seeds * args.total_steps
    if agent_steps < 1_000_000:
        print(f"note: {agent_steps:,} agent-steps is below the 1M the soak is meant for", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "streamrl", "train", args.algo, "--env", args.env, "--num-seeds",
               str(args.num_seeds), "--total-steps", str(args.total_steps), "--checkpoint-every",
               str(args.total_steps // 10), "--run-dir", str(run), "--no-progress"]
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        marks, rows, last = [0.1, 0.5], [], (0.0, 0.0)
        while child.poll() is None:
            try:
                last = _memory_mib(child.pid)
                steps = json.loads((run / "summary.json").read_text())["steps"]
            except (OSError, ValueError, KeyError):
                steps = 0
            while marks and steps >= marks[0] * args.total_steps:
                rows.append((f"{marks.pop(0):.0%}", steps, *last))
            time.sleep(0.1)
        _, err = child.communicate()
        if child.returncode != 0:
            sys.exit(f"training failed ({child.returncode}): {err.strip().splitlines()[-1] if err.strip() else ''}")
        summary = json.loads((run / "summary.json").read_text())
        rows.append(("100%", summary["steps"], *last))  # the last sample before exit
    print(f"# soak: {args.algo} on {args.env}, {args.num_seeds} agents × {args.total_steps:,} steps = "
          f"{agent_steps:,} agent-steps, checkpoints every 10%, TensorBoard on; "
          f"{time.perf_counter() - t0:,.0f} s, {summary['agent_sps']:,.0f} agent-steps/s")
    print("| progress | step | resident MiB | peak MiB |")
    print("|---|---|---|---|")
    for progress, step, rss, hwm in rows:
        print(f"| {progress} | {step:,} | {rss:,.0f} | {hwm:,.0f} |")
    first, final = rows[0], rows[-1]
    print(f"resident memory from 10% to 100%: {final[2] - first[2]:+,.1f} MiB ({(final[2] / first[2] - 1):+.1%}); "
          f"peak {final[3] - first[3]:+,.1f} MiB")


if __name__ == "__main__":
    main()
