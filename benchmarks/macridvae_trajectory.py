"""How MacridVAE's genre alignment evolves in training: validation NDCG@100, the items'
genre AMI and the factor sizes every few epochs, on a held-out split folder. Prints a table
and writes JSON.

    python benchmarks/macridvae_trajectory.py --dataset ml-1m \
        --data-dir ../shared/data/ml-1m --split-dir ../shared/data/heldout/ml-1m/pro_sg \
        --epochs 100 --every 5 --out docs/results/macridvae-trajectory-ml-1m.json \
        [--variant frozen-prototypes] [--set model.assign_tau=0.085]

The test split is never read. ``--variant frozen-prototypes`` keeps the prototypes at their
spectral start (no gradient): a measurement of whether the drift of the prototypes is what
erodes the start's genre clusters, not an option of the model.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from disentangle.config import resolve
from disentangle.metrics.factors import macro_alignment
from disentangle.train.run import build_model, build_split
from disentangle.train.trainer import Trainer

VARIANTS = ("default", "frozen-prototypes")


def probe(model, trainer: Trainer, categories, epoch: int) -> dict:
    """Validation NDCG@100 (after training epochs), genre AMI and sorted factor sizes."""
    model.eval()
    with torch.no_grad():
        weights = model.item_factor_weights().cpu().numpy()
    sizes = np.bincount(weights.argmax(1), minlength=weights.shape[1]) / len(weights)
    return {"epoch": epoch,
            "valid_ndcg@100": trainer.validate()["ndcg@100"] if epoch else None,
            "genre_ami": macro_alignment(weights, categories)["ami"],
            "factor_sizes": sorted(sizes.round(3).tolist(), reverse=True)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--split-dir", required=True)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--variant", choices=VARIANTS, default="default")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="a config override, as in `disentangle fit --set`")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    cfg = resolve("macridvae", overrides=[
        f"data.dataset={args.dataset}", f"data.data_dir={args.data_dir}",
        f"data.split_dir={args.split_dir}", f"train.epochs={args.epochs}",
        f"train.seed={args.seed}", *args.overrides])
    split = build_split(cfg)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, split)
    if args.variant == "frozen-prototypes":
        model.prototypes.requires_grad_(False)
    trainer = Trainer(model, split, cfg.train, None, "cpu", progress=False)
    categories = split.train.item_categories
    rows = [probe(model, trainer, categories, 0)]
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        trainer._train_epoch()
        trainer.epoch = epoch
        if epoch % args.every == 0:
            rows.append(probe(model, trainer, categories, epoch))
    best = max(rows[1:], key=lambda r: r["valid_ndcg@100"])
    print(f"{'epoch':>5}  {'valid NDCG@100':>14}  {'genre AMI':>9}  factor sizes")
    for r in rows:
        v = f"{r['valid_ndcg@100']:.4f}" if r["valid_ndcg@100"] is not None else "-"
        print(f"{r['epoch']:>5}  {v:>14}  {r['genre_ami']:>9.3f}  {r['factor_sizes']}")
    print(f"best validation epoch {best['epoch']}: NDCG@100 {best['valid_ndcg@100']:.4f}, "
          f"genre AMI {best['genre_ami']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "dataset": args.dataset, "split_dir": args.split_dir, "seed": args.seed,
        "variant": args.variant, "overrides": args.overrides, "epochs": args.epochs,
        "seconds": round(time.perf_counter() - start, 1), "best": best, "trajectory": rows},
        indent=1) + "\n")


if __name__ == "__main__":
    main()
