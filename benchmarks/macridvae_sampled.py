"""MacridVAE with the sampled-softmax decoder against the full softmax: the accuracy gap at a
few numbers of negatives S, at equal epochs. Prints a table and writes JSON.

    flock /tmp/heavy.lock env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \\
        python benchmarks/macridvae_sampled.py --split-dir ../shared/data/heldout/ml-1m/pro_sg \\
        --negatives 200 1000 --epochs 10 --out benchmarks/results/macridvae-sampled-ml-1m.json

Each setting runs in its own process (the model's defaults, ``model.decoder`` and
``model.num_negatives`` set), selects its epoch on validation NDCG@100 and reads the test
split once. On ml-1m a batch of 500 users already touches most of the 3706 items (P, kept
whole by the estimator), so the sampled decoder saves little time there: this measures the
accuracy cost of the estimate; the time it saves grows with the catalogue (B x K x (P + S)
against B x K x M).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from disentangle.config import resolve
from disentangle.train.run import fit
from disentangle.train.trainer import read_metrics
split_dir, epochs, sampler, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
extra = [f"model.decoder=sampled", f"model.num_negatives={sys.argv[5]}",
         f"model.sampler={sampler}"] if len(sys.argv) > 5 else []
cfg = resolve("macridvae", overrides=[f"data.split_dir={split_dir}", f"train.epochs={epochs}",
                                      *extra])
res = fit(cfg, out, device="cpu", progress=False)
secs = sorted(r["seconds"] for r in read_metrics(out))
res["seconds_per_epoch_median"] = secs[len(secs) // 2]
res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(res))
"""

KEYS = ["ndcg@100", "recall_liang@20", "recall_liang@50"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split-dir", required=True)
    p.add_argument("--negatives", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--sampler", choices=["popularity", "uniform"], default="popularity")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = []
    for s in [None, *args.negatives]:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-c", CHILD, args.split_dir, str(args.epochs), args.sampler,
                   f"{tmp}/run", *([str(s)] if s else [])]
            res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                             .stdout.strip().splitlines()[-1])
        rows.append({"decoder": "full" if s is None else f"sampled S={s}", "negatives": s,
                     "best_epoch": res["best_epoch"], **{k: res["test"][k] for k in KEYS},
                     "seconds_per_epoch": res["seconds_per_epoch_median"],
                     "peak_rss_mb": res["peak_rss_mb"]})
        print(f"{rows[-1]['decoder']:<16}" + "  ".join(f"{k}={rows[-1][k]:.4f}" for k in KEYS)
              + f"  best epoch {res['best_epoch']}  {rows[-1]['seconds_per_epoch']:.3f}s/epoch",
              flush=True)
    full = rows[0]
    for r in rows:
        r["ndcg@100_gap_to_full"] = r["ndcg@100"] - full["ndcg@100"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"split_dir": args.split_dir, "epochs": args.epochs,
                                    "sampler": args.sampler, "command": " ".join(sys.argv),
                                    "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
