"""Fleet scaling: aggregate agent-steps per second and memory against fleet size.

Each row runs ``streamrl.run.train`` in a fresh subprocess (so peak memory is that run's),
for fleet sizes 1, 8, 64, 256, on the host driver (Gymnasium, EnvPool) and on the device
driver (gymnax, brax), and prints:
  * agent-SPS: environment steps of all agents per second (compile excluded);
  * µs per agent-step: the per-agent cost;
  * × official: agent-SPS against the official single-stream PyTorch SPS for the task
    (measured on this machine class, docs/benchmarks.md: CartPole Q 1,140; MinAtar Breakout Q 728; HalfCheetah AC 508);
  * peak RSS and, per driver and task, the memory per extra agent
    ((peak at the largest fleet − peak at 1) / (size − 1));
and, last, peak RSS of one device run at 2 lengths (memory must not grow with steps).

    python benchmarks/fleet_scaling.py                # the full table (a few minutes)
    python benchmarks/fleet_scaling.py --quick        # sizes 1 and 64 only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

OFFICIAL = {"q:CartPole": 1140, "q:Breakout": 728, "ac:HalfCheetah": 508, "ac:halfcheetah": 508}

CHILD = r"""
import json, resource, sys
from streamrl.config import TrainConfig
from streamrl.run import train
algo, env, n, steps, run_dir, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
path = train(TrainConfig(algo=algo, env=env, total_steps=steps, num_seeds=n, run_dir=run_dir, progress=False,
                         chunk_steps=chunk or max(1, min(steps, 2_000_000 // n))))
summary = json.loads((path / "summary.json").read_text())
summary["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(summary))
"""

# (driver, algo, env id, agent-steps to aim for per row)
ROWS = [
    ("host (Gymnasium)", "q", "CartPole-v1", 60_000),
    ("host (EnvPool)", "q", "envpool:CartPole-v1", 60_000),
    ("device (gymnax)", "q", "gymnax:CartPole-v1", 600_000),
    ("device (gymnax)", "q", "gymnax:Breakout-MinAtar", 60_000),
    ("host (Gymnasium)", "ac", "HalfCheetah-v5", 20_000),
    ("device (brax)", "ac", "brax:halfcheetah", 20_000),
]


def run(algo: str, env: str, n: int, steps: int, chunk: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([sys.executable, "-c", CHILD, algo, env, str(n), str(steps), d, str(chunk)],
                             capture_output=True, text=True, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{algo} {env} x{n} failed:\n{out.stderr[-2000:]}")


def official(algo: str, env: str) -> int | None:
    for key, sps in OFFICIAL.items():
        a, task = key.split(":")
        if a == algo and task in env:
            return sps
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,8,64,256")
    parser.add_argument("--quick", action="store_true", help="sizes 1 and 64")
    parser.add_argument("--only", action="append", help="substring of an env id to keep (repeatable)")
    parser.add_argument("--memory-only", action="store_true", help="only the memory-against-steps check")
    args = parser.parse_args()
    sizes = [1, 64] if args.quick else [int(s) for s in args.sizes.split(",")]
    rows = [] if args.memory_only else [r for r in ROWS if not args.only or any(o in r[2] for o in args.only)]
    print(f"# fleet scaling, {time.strftime('%Y-%m-%d')}, sizes {sizes}")
    print("| driver | algo | task | agents | steps/agent | agent-SPS | µs/agent-step | × official | peak RSS MiB |")
    print("|" + "---|" * 9)
    for driver, algo, env, budget in rows:
        peaks = {}
        for n in sizes:
            steps = max(2_000, budget // n)
            s = run(algo, env, n, steps)
            ref = official(algo, env)
            peaks[n] = s["peak_rss_mib"]
            ratio = f"{s['agent_sps'] / ref:.0f}x" if ref else "–"
            print(f"| {driver} | {algo} | {env} | {n} | {steps:,} | {s['agent_sps']:,.0f} | {1e6 / s['agent_sps']:.1f} | "
                  f"{ratio} | {s['peak_rss_mib']:,.0f} |", flush=True)
        if len(peaks) > 1:
            lo, hi = min(peaks), max(peaks)
            print(f"|  |  | {env}: memory per extra agent |  |  |  |  |  | {(peaks[hi] - peaks[lo]) / (hi - lo) * 1024:,.0f} KiB |")
    # Same chunk size for both lengths, so only the number of steps differs.
    short, long_ = (run("q", "gymnax:CartPole-v1", 8, steps, chunk=10_000) for steps in (50_000, 400_000))
    print(f"\nmemory against steps (device, 8 agents, 10k-step chunks): peak RSS {short['peak_rss_mib']:,.0f} MiB "
          f"after 50k steps, {long_['peak_rss_mib']:,.0f} MiB after 400k steps")


if __name__ == "__main__":
    main()
