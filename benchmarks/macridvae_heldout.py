"""MacridVAE on Liang et al.'s held-out-user splits, several seeds, against the published
reference numbers. Prints a table and writes JSON.

    python benchmarks/macridvae_heldout.py --split-dir ../shared/data/heldout/ml-100k/pro_sg \
        --dataset ml-100k --seeds 1 2 3 --epochs 200 --out benchmarks/results/ml-100k.json

Each seed runs in its own process so peak memory (max RSS) is per run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from disentangle.config import resolve
from disentangle.train.run import fit
from disentangle.train.trainer import read_metrics
out, overrides = sys.argv[1], sys.argv[2:]
cfg = resolve("macridvae", overrides=overrides)
start = time.perf_counter()
res = fit(cfg, out, device="cpu", progress=False)
wall = time.perf_counter() - start
secs = sorted(r["seconds"] for r in read_metrics(out))
res["seconds_per_epoch_median"] = secs[len(secs) // 2]
res["wall_seconds"] = wall
res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(res))
"""


def run_macridvae(overrides: list[str]) -> dict:
    """One MacridVAE fit with config ``overrides`` in a fresh process (so peak memory is the
    run's own), in a temporary run folder; returns its ``results.json`` dict plus
    ``seconds_per_epoch_median``, ``wall_seconds`` and ``peak_rss_mb``."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", CHILD, f"{tmp}/run", *overrides],
                              capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


KEYS = ["ndcg@100", "recall_liang@20", "recall_liang@50"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split-dir", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--reference", type=float, nargs=3, metavar=("NDCG100", "R20", "R50"),
                   help="published test numbers to compare with")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    runs = []
    for seed in args.seeds:
        res = run_macridvae([f"data.split_dir={args.split_dir}", f"train.seed={seed}",
                             f"train.epochs={args.epochs}"])
        runs.append({"seed": seed, "best_epoch": res["best_epoch"],
                     **{k: res["test"][k] for k in KEYS},
                     "popularity": {k: res["popularity"]["test"][k] for k in KEYS},
                     "seconds_per_epoch": res["seconds_per_epoch_median"],
                     "wall_seconds": res["wall_seconds"], "peak_rss_mb": res["peak_rss_mb"],
                     "users_without_target": res["test"]["users_without_target"]})
        print(f"seed {seed}: " + "  ".join(f"{k}={runs[-1][k]:.4f}" for k in KEYS)
              + f"  best epoch {res['best_epoch']}  {runs[-1]['seconds_per_epoch']:.3f}s/epoch",
              flush=True)
    mean = {k: statistics.mean(r[k] for r in runs) for k in KEYS}
    print(f"\n{'metric (test, Recall = Liang)':<30}{'ours (mean)':>12}{'reference':>12}"
          f"{'popularity':>12}")
    for i, k in enumerate(KEYS):
        ref = f"{args.reference[i]:.3f}" if args.reference else "-"
        print(f"{k:<30}{mean[k]:>12.4f}{ref:>12}{runs[0]['popularity'][k]:>12.4f}")
    print(f"median seconds/epoch {statistics.median(r['seconds_per_epoch'] for r in runs):.3f}, "
          f"peak RSS {max(r['peak_rss_mb'] for r in runs):.0f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"split_dir": args.split_dir, "epochs": args.epochs,
                                    "runs": runs, "mean": mean,
                                    "reference": args.reference}, indent=2))


if __name__ == "__main__":
    main()
