"""Cost of one DisenGCN training update: whole-graph propagation against neighbour-sampled
mini-batches (``model.neighbors``), on one dataset, side by side in one process. Prints a
table and writes JSON.

    OMP_NUM_THREADS=2 python benchmarks/disengcn_updates.py --dataset gowalla \\
        --data-dir ../shared/data/gowalla --protocol given \\
        --out benchmarks/results/disengcn-updates-gowalla.json

``--settings 8192:0,2048:32`` times only those (batch size, neighbours) pairs. Each setting
runs ``--steps`` real Adam updates (the first ``--warmup`` are not timed) and
reports medians of: drawing the batch (negatives, and the sampled computation graph), the
forward pass with the loss, and backward + optimiser step. ``epoch_s`` is the median update
times the number of updates in one epoch; ``nodes`` / ``edges`` are the median size of the
computation graph of one update (the whole graph without sampling).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from disentangle.config import resolve
from disentangle.train.run import build_model, build_split

SETTINGS = [  # (batch_size, neighbors)
    (8192, 0), (2048, 0), (8192, 32), (2048, 16), (2048, 32), (2048, 64),
]


def measure(cfg, split, steps: int, warmup: int) -> dict:
    model = build_model(cfg, split).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    batches = model.batches(split.train, torch.Generator().manual_seed(cfg.train.seed))
    times, sizes = [], []
    for step in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        loss, _ = model.loss(batch, step)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        t3 = time.perf_counter()
        if step >= warmup:
            times.append((t1 - t0, t2 - t1, t3 - t2))
            if cfg.model.neighbors:
                sizes.append((len(batch[3]), sum(e.size(1) for e, _ in batch[4])))
            else:
                sizes.append((split.train.num_users + split.train.num_items,
                              2 * split.train.num_interactions * len(model.convs)))
    batch_s, forward_s, backward_s = (statistics.median(t) for t in zip(*times))
    update_s = statistics.median(sum(t) for t in times)
    updates = -(-split.train.num_interactions // cfg.model.batch_size)
    return {"batch_size": cfg.model.batch_size, "neighbors": cfg.model.neighbors,
            "batch_s": batch_s, "forward_s": forward_s, "backward_step_s": backward_s,
            "update_s": update_s, "updates_per_epoch": updates, "epoch_s": update_s * updates,
            "nodes": statistics.median(s[0] for s in sizes),
            "edges": statistics.median(s[1] for s in sizes)}


def settings(text: str) -> list[tuple[int, int]]:
    """``"8192:0,2048:32"`` -> ``[(8192, 0), (2048, 32)]``."""
    try:
        pairs = [tuple(int(n) for n in pair.split(":")) for pair in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or p[0] < 1 or p[1] < 0 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected batch_size:neighbors pairs, got {text!r}")
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--data-dir")
    parser.add_argument("--protocol", default="ratio")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--settings", type=settings, default=SETTINGS,
                        help="comma-separated batch_size:neighbors pairs, e.g. 8192:0,2048:32 "
                             "(0 neighbours = whole graph; default: the six of the table)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override, e.g. model.num_layers=2")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    base = [f"data.dataset={args.dataset}", f"data.protocol={args.protocol}", *args.overrides]
    if args.data_dir:
        base.append(f"data.data_dir={args.data_dir}")
    split = build_split(resolve("disengcn", overrides=base))
    print(f"{args.dataset}: {split}; torch threads {torch.get_num_threads()}", flush=True)
    header = (f"{'batch':>6} {'S':>4} {'batch s':>8} {'fwd s':>7} {'bwd+step s':>10} "
              f"{'update s':>9} {'epoch s':>8} {'nodes':>7} {'edges':>9}")
    print(header)
    rows = []
    for batch_size, neighbors in args.settings:
        cfg = resolve("disengcn", overrides=[*base, f"model.batch_size={batch_size}",
                                             f"model.neighbors={neighbors}"])
        row = measure(cfg, split, args.steps, args.warmup)
        rows.append(row)
        print(f"{batch_size:>6} {neighbors or 'all':>4} {row['batch_s']:>8.3f} "
              f"{row['forward_s']:>7.3f} {row['backward_step_s']:>10.3f} "
              f"{row['update_s']:>9.3f} {row['epoch_s']:>8.1f} {row['nodes']:>7.0f} "
              f"{row['edges']:>9.0f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"dataset": args.dataset, "protocol": args.protocol,
                                        "overrides": args.overrides,
                                        "threads": torch.get_num_threads(), "rows": rows},
                                       indent=1))


if __name__ == "__main__":
    main()
