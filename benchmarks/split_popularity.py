"""How popular the items of a split's train, validation and test interactions are. Prints a
table and writes JSON.

    python benchmarks/split_popularity.py --dataset gowalla --data-dir ../shared/data/gowalla \\
        --protocol given --out benchmarks/results/split-popularity-gowalla.json

The popularity of an item is its number of training interactions. For every part of the
split the table gives the mean and median popularity over its interactions and the share of
them that fall on the 1% / 10% most popular items. When validation and test are drawn the
same way from a user's interactions the two rows agree up to sampling noise; where they
differ, validation and test reward a model's popularity bias differently, and validation
scores compare models unfaithfully.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from disentangle.config import resolve
from disentangle.train.run import build_split


def summarise(items: np.ndarray, popularity: np.ndarray, rank: np.ndarray) -> dict:
    """Popularity statistics of the interactions with ``items`` (``rank``: 0 = most popular)."""
    pop = popularity[items]
    return {"interactions": len(items), "mean": float(pop.mean()),
            "median": float(np.median(pop)),
            "top1pct": float((rank[items] < 0.01 * len(popularity)).mean()),
            "top10pct": float((rank[items] < 0.10 * len(popularity)).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--data-dir")
    parser.add_argument("--protocol", default="ratio")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    overrides = [f"data.dataset={args.dataset}", f"data.protocol={args.protocol}"]
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    split = build_split(resolve("disengcn", overrides=overrides))
    popularity = split.train.item_popularity()
    rank = np.empty(len(popularity), dtype=np.int64)
    rank[np.argsort(-popularity, kind="stable")] = np.arange(len(popularity))
    parts = {"train": split.train.items, "valid": split.valid.target.indices,
             "test": split.test.target.indices}
    rows = {name: summarise(items, popularity, rank) for name, items in parts.items()}
    print(f"{args.dataset} ({args.protocol}): popularity = training interactions of the item")
    print(f"{'part':<6} {'interactions':>12} {'mean':>8} {'median':>7} {'top 1%':>7} "
          f"{'top 10%':>8}")
    for name, r in rows.items():
        print(f"{name:<6} {r['interactions']:>12} {r['mean']:>8.1f} {r['median']:>7.1f} "
              f"{r['top1pct']:>7.3f} {r['top10pct']:>8.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"dataset": args.dataset, "protocol": args.protocol,
                                        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
