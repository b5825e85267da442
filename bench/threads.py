"""CPU thread settings side by side, quiet and beside a second process: what the demo's thread policy rests on.

usage: python bench/threads.py [--steps 60] [--threads 1,2] [--recipe superclass_tiny]

Runs the real training command (`python -m pretrain train --recipe superclass_tiny`, the demo's first stage) once
per setting: torch intra-op threads (`run.num_threads`) x OpenMP's wait policy (libgomp's default spins before it
sleeps; PASSIVE sleeps at once), each alone and then beside a "light" second process that loads torch and keeps one
core busy with single-threaded matmuls (a scoring job, a notebook). Prints samples/s (median of the logged
intervals after the first) and each setting's ratio to the fastest quiet one, all measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOAD = "import torch\ntorch.set_num_threads(1)\nx = torch.randn(256, 256)\nwhile True:\n    x = (x @ x).tanh()\n"


def samples_per_s(run_dir: Path) -> float:
    """Median samples/s of the logged training intervals after the first (warm-up, imports)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r and "eval" not in r]
    return statistics.median(rates[1:] or rates)


def train_once(recipe: str, steps: int, threads: int, wait: str, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if wait:
        env["OMP_WAIT_POLICY"] = wait
    run = [f"run.out_dir={out}", "run.device=cpu", f"run.steps={steps}", "run.evals=[]", "run.save_every=0",
           "run.log_every=10", f"run.num_threads={threads}"]  # fmt: skip
    cmd = [sys.executable, "-m", "pretrain", "train", "--recipe", recipe, *run]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return samples_per_s(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--recipe", default="superclass_tiny")
    args = parser.parse_args()
    settings = [(t, w) for t in map(int, args.threads.split(",")) for w in ("", "PASSIVE")]
    results: dict[tuple[int, str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("quiet", "beside a busy process"):
            loader = subprocess.Popen([sys.executable, "-c", LOAD]) if load != "quiet" else None
            time.sleep(3 if loader else 0)  # let the load import torch and start
            try:
                for threads, wait in settings:
                    out = Path(tmp) / f"{threads}_{wait or 'default'}_{load[:5]}"
                    results[(threads, wait, load)] = train_once(args.recipe, args.steps, threads, wait, out)
            finally:
                if loader:
                    loader.kill()
    best = max(v for (_, _, load), v in results.items() if load == "quiet")
    print(f"{args.recipe}, {args.steps} steps, {os.cpu_count()} CPUs; ratio = samples/s over the fastest quiet setting")
    print(f"{'threads':>7} {'OMP_WAIT_POLICY':>15} {'load':>22} {'samples/s':>10} {'ratio':>6}")
    for (threads, wait, load), value in results.items():
        print(f"{threads:>7} {wait or 'default':>15} {load:>22} {value:>10.1f} {value / best:>6.2f}")


if __name__ == "__main__":
    main()
