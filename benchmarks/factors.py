"""Factor (disentanglement) metrics of MacridVAE and DisenGCN, each at its default K and at
K = 1 (the non-disentangled baseline), next to a random-assignment control; and the planted
grid. Prints tables and writes JSON.

    nice -n 10 python benchmarks/factors.py --epochs-macridvae 100 --epochs-disengcn 40 \\
        --out benchmarks/results/factors-ml-latest-small.json
    nice -n 10 python benchmarks/factors.py --dataset ml-1m --data-dir ../shared/data/ml-1m \\
        --epochs-macridvae 100 --epochs-disengcn 20 --out benchmarks/results/factors-ml-1m.json

On ml-1m, 100 epochs are enough for the factor metrics: MacridVAE's best validation epoch
(NDCG@100) was 44 for K = 7 (94 for K = 1, whose ranking is within 0.001 of K = 7's), at
~13 s per K = 7 epoch on a loaded machine (3-6 s idle).

One model at a time, into one file: ``--epochs-disengcn 0`` (or ``--epochs-macridvae 0``)
skips a model, and ``--merge`` keeps the rows already in ``--out`` of every model this run
does not train (per part: real data, planted), replacing those of the models it does:

    nice -n 10 python benchmarks/factors.py --dataset ml-1m --data-dir ../shared/data/ml-1m \\
        --epochs-macridvae 0 --epochs-disengcn 20 --skip-planted --merge \\
        --out benchmarks/results/factors-ml-1m.json

Real data: MacridVAE on the ``heldout`` protocol, DisenGCN on ``ratio`` (each model's run
config defaults otherwise); the best validation epoch is restored, then
:func:`~disentangle.metrics.factors.factor_report` scores the factor contract and
:func:`~disentangle.train.run.final_results` the ranking of the test users. The ranking
column is each model's selection metric (NDCG@100 for MacridVAE; Recall@20 = hits / |test|
for DisenGCN), next to popularity; the JSON holds every test metric.

* macro, against the genres (single-genre items): ``ami nmi ari accuracy`` and
  ``bijection`` (0-3, on the lift of the soft factor x genre matrix);
* independence between the factor channels: ``items/block_diagonal``, ``users/...``
  (higher is better) and ``items/dcor``, ``users/dcor`` (lower is better);
* micro: ``users/dimension_correlation`` (mean |Pearson| between the dimensions of one factor
  of the user representations; lower is better).

The K = 1 baseline keeps MacridVAE's ``dim`` (one d-dimensional user vector: the
MultVAE-like model the paper compares with) and gives DisenGCN one channel of ``K * d``
dimensions (the same embedding size). With K = 1 the macro scores are degenerate (every item
in the one factor: AMI = NMI = ARI = 0) and the independence scores undefined; what says
whether the K factors mean anything is the ``random`` row: the same macro scores for random
item-factor weights (``Dirichlet(1)`` rows, mean over ``--random-draws`` draws), same K.

The planted grid (:func:`~disentangle.data.synthetic.planted`, the planted clusters as the
"genres"), for the models named by ``--model``: each model at its defaults with only
``model.num_factors`` set, over planted K in ``--grid-factors`` (3 5 8) x purity
``--grid-purity`` (0.7 0.9) x popularity skew ``--grid-zipf`` (0 1.2) x ``--grid-seeds``
(0 1 2), plus the ``--grid-mismatch`` cells (planted K != configured K, e.g. ``5:3 5:8``).
A seed fixes the data, the split and the initialisation. Each cell scores the item-factor
assignment (``argmax item_factor_weights()``) against the planted clusters after training
(AMI, NMI, Hungarian accuracy, homogeneity, completeness) and before (``init_ami``), next to
random Dirichlet(1) assignments (``random_ami``). The summary averages AMI per model over
the matched cells of each purity, and over the mismatch cells. One model, the grid only:

    nice -n 10 python benchmarks/factors.py --skip-real --model macridvae \\
        --out docs/results/factors-planted-macridvae.json

(MacridVAE at its defaults, 100 epochs per cell, 42 cells: mean AMI 0.964 over the
purity-0.9 cells, 0.872 over the purity-0.7 cells; with ``--set model.init=xavier``,
the paper's random start: 0.066 and 0.023.)
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
import types
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import homogeneity_completeness_v_measure

from disentangle.config import resolve
from disentangle.data.splits import heldout_split, ratio_split
from disentangle.data.synthetic import planted
from disentangle.metrics.factors import factor_report, macro_alignment
from disentangle.metrics.ranking import to_torch_csr
from disentangle.models import MODELS
from disentangle.models.base import FactorRecommender
from disentangle.train.run import build_model, build_split, final_results
from disentangle.train.trainer import Trainer
from disentangle.viz.report import evaluation_users

MACRO = ["ami", "nmi", "ari", "accuracy", "bijection"]
INDEPENDENCE = ["items/block_diagonal", "items/dcor", "users/block_diagonal", "users/dcor",
                "users/dimension_correlation"]
PROTOCOL = {"macridvae": "heldout", "disengcn": "ratio"}
# Planted-grid epochs per model (--planted-epochs overrides): enough to see whether training
# keeps, sharpens or loses the factors, short enough for one thread.
PLANTED_EPOCHS = {"macridvae": 100, "disengcn": 40}

def random_control(num_items: int, k: int, categories, draws: int, seed: int) -> dict:
    """Mean (and sd) of the macro scores of random Dirichlet(1) item-factor weights."""
    rng = np.random.default_rng(seed)
    runs = [macro_alignment(rng.dirichlet(np.ones(k), size=num_items), categories)
            for _ in range(draws)]
    out = {key: float(np.mean([r[key] for r in runs])) for key in MACRO}
    out.update({f"{key}_sd": float(np.std([r[key] for r in runs])) for key in MACRO})
    return out


def measure(model, split, seed: int) -> dict:
    """factor_report of ``model`` on the users evaluation_users picks (held-out test users
    for the heldout protocol, else a sample of training users)."""
    users, history, wording = evaluation_users(types.SimpleNamespace(split=split), 2000, seed)
    device = next(model.parameters()).device
    report = factor_report(model, split.train, torch.from_numpy(users).to(device),
                           to_torch_csr(history, device), max_samples=2000, seed=seed)
    report["users_measured"] = wording
    return report


def train(model, split, train_cfg) -> tuple[int, float]:
    start = time.perf_counter()
    trainer = Trainer(model, split, train_cfg, run_dir=None, progress=False)
    trainer.fit()
    return trainer.best_epoch, time.perf_counter() - start


def real_runs(args) -> list[dict]:
    rows = []
    for name, epochs in (("macridvae", args.epochs_macridvae), ("disengcn", args.epochs_disengcn)):
        if epochs <= 0:
            continue
        base = [f"data.dataset={args.dataset}", f"train.epochs={epochs}",
                f"train.seed={args.seed}", f"train.eval_every={args.eval_every}",
                f"data.protocol={PROTOCOL[name]}"]
        if args.data_dir:
            base.append(f"data.data_dir={args.data_dir}")
        defaults = resolve(name, overrides=[*base, *getattr(args, f"set_{name}")]).model
        split = None
        for k in (defaults.num_factors, 1):
            extra = [f"model.num_factors={k}"]
            if name == "disengcn" and k == 1:  # same embedding size: one channel of K * d
                extra.append(f"model.factor_dim={defaults.num_factors * defaults.factor_dim}")
            cfg = resolve(name, overrides=[*base, *extra, *getattr(args, f"set_{name}")])
            if split is None:
                split = build_split(cfg)
                print(f"[{name}] {args.dataset}: {split}", flush=True)
            model = build_model(cfg, split)
            best, seconds = train(model, split, cfg.train)
            results = final_results(model, split, cfg.train, best)
            metric = cfg.train.select
            d = cfg.model.dim if name == "macridvae" else cfg.model.factor_dim
            row = {"model": name, "K": k, "d": d, "protocol": split.protocol, "epochs": epochs,
                   "best_epoch": best, "train_seconds": round(seconds, 1),
                   "ranking_metric": f"test {metric}", "ranking": results["test"][metric],
                   "popularity": results["popularity"]["test"][metric],
                   "test": results["test"], "factors": measure(model, split, args.seed)}
            rows.append(row)
            print(f"[{name}] K={k}: best epoch {best}, test {metric} {row['ranking']:.4f} "
                  f"(popularity {row['popularity']:.4f}), AMI "
                  f"{fmt(row['factors'].get('macro/ami'), 0)}, {seconds:.0f}s", flush=True)
            if k > 1:
                rows.append({"model": name, "K": k, "d": d, "protocol": split.protocol,
                             "control": "random", "factors": {
                                 f"macro/{key}": v for key, v in random_control(
                                     split.train.num_items, k, split.train.item_categories,
                                     args.random_draws, args.seed).items()}})
    return rows


def planted_cell(name: str, planted_k: int, config_k: int, purity: float, zipf: float,
                 seed: int, args) -> dict:
    """Train ``name`` at its defaults (``num_factors = config_k``) on one planted data set
    and score its item-factor assignment against the planted clusters."""
    data = planted(args.grid_users, args.grid_items, planted_k,
                   interactions_per_user=args.grid_interactions, purity=purity,
                   concentration=args.grid_concentration, zipf_exponent=zipf, seed=seed)
    split = (heldout_split(data, seed=seed, heldout_users=0.1)
             if PROTOCOL.get(name) == "heldout" else ratio_split(data, seed=seed))
    epochs = args.planted_epochs or PLANTED_EPOCHS.get(name, 40)
    cfg = resolve(name, overrides=[f"model.num_factors={config_k}", f"train.seed={seed}",
                                   f"train.epochs={epochs}", *args.set])
    cfg.train.eval_every = epochs  # one evaluation, after the last epoch: final factors
    torch.manual_seed(seed)
    model = MODELS[name](cfg.model, split.train)
    truth = split.train.item_categories.argmax(1)

    def assignment() -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model.item_factor_weights().cpu().numpy()

    init = macro_alignment(assignment(), split.train.item_categories)["ami"]
    _, seconds = train(model, split, cfg.train)
    weights = assignment()
    macro = macro_alignment(weights, split.train.item_categories)
    homogeneity, completeness, _ = homogeneity_completeness_v_measure(truth,
                                                                      weights.argmax(1))
    rng = np.random.default_rng(seed)
    random = float(np.mean([macro_alignment(rng.dirichlet(np.ones(config_k), size=len(truth)),
                                            split.train.item_categories)["ami"]
                            for _ in range(args.random_draws)]))
    return {"model": name, "planted_k": planted_k, "config_k": config_k, "purity": purity,
            "zipf": zipf, "seed": seed, "epochs": epochs, "ami": macro["ami"],
            "nmi": macro["nmi"], "accuracy": macro["accuracy"],
            "homogeneity": float(homogeneity), "completeness": float(completeness),
            "init_ami": init, "random_ami": random, "train_seconds": round(seconds, 1)}


def grid_cells(args) -> list[tuple[int, int, float, float, int]]:
    """(planted K, configured K, purity, zipf, seed) of every cell: the matched grid, then
    the mismatch cells (at the highest purity and no skew)."""
    cells = [(k, k, p, z, s) for k in args.grid_factors for p in args.grid_purity
             for z in args.grid_zipf for s in args.grid_seeds]
    for pair in args.grid_mismatch:
        planted_k, config_k = map(int, pair.split(":"))
        cells += [(planted_k, config_k, max(args.grid_purity), min(args.grid_zipf), s)
                  for s in args.grid_seeds]
    return cells


def planted_runs(args) -> list[dict]:
    rows = []
    for name in args.model:
        for cell in grid_cells(args):
            row = planted_cell(name, *cell, args)
            rows.append(row)
            print(f"[planted {name}] K {row['planted_k']} (config {row['config_k']}), purity "
                  f"{row['purity']}, zipf {row['zipf']}, seed {row['seed']}: AMI "
                  f"{row['ami']:.3f} (init {row['init_ami']:.3f}, random "
                  f"{row['random_ami']:.3f}), {row['train_seconds']:.0f}s", flush=True)
    return rows


def planted_summary(rows: list[dict]) -> dict:
    """Per model: mean (min) AMI of the matched cells of each purity and of the mismatch
    cells, with the mean init and random AMI of the same cells."""
    out: dict = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        groups = {f"purity {p}": [r for r in mine if r["planted_k"] == r["config_k"]
                                  and r["purity"] == p]
                  for p in sorted({r["purity"] for r in mine})}
        groups["mismatched K"] = [r for r in mine if r["planted_k"] != r["config_k"]]
        out[name] = {g: {"cells": len(c), "ami": float(np.mean([r["ami"] for r in c])),
                         "min_ami": float(np.min([r["ami"] for r in c])),
                         "init_ami": float(np.mean([r["init_ami"] for r in c])),
                         "random_ami": float(np.mean([r["random_ami"] for r in c]))}
                     for g, c in groups.items() if c}
    return out


def trained_models(args) -> dict[str, set[str]]:
    """The models each part (``real``, ``planted``) of this run trains."""
    return {"real": set() if args.skip_real else
            {m for m in PROTOCOL if getattr(args, f"epochs_{m}") > 0},
            "planted": set() if args.skip_planted else set(args.model)}


def merge(previous: dict, out: dict, trained: dict[str, set[str]]) -> dict:
    """``out`` with, in each part, ``previous``'s rows of the models this run did not train
    placed before its own rows; ``merged`` lists the args of the earlier runs kept."""
    if previous["args"]["dataset"] != out["args"]["dataset"]:
        raise SystemExit(f"--merge: {out['args']['out']} holds {previous['args']['dataset']}, "
                         f"not {out['args']['dataset']}")
    merged = dict(out)
    for part in ("real", "planted"):
        kept = [r for r in previous.get(part, []) if r["model"] not in trained[part]]
        if kept or part in out:
            merged[part] = kept + out.get(part, [])
    merged["merged"] = [*previous.get("merged", []), previous["args"]]
    return merged


def fmt(v, width: int = 8, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'-':>{width}}"
    if isinstance(v, int):
        return f"{v:>{width}d}"
    return f"{v:>{width}.{digits}f}"


def print_real(rows: list[dict], dataset: str) -> None:
    short = {"items/block_diagonal": "it.bd", "items/dcor": "it.dcor",
             "users/block_diagonal": "us.bd", "users/dcor": "us.dcor",
             "users/dimension_correlation": "us.micro"}
    head = (f"{'model':<10}{'KxD':>7} {'run':<8}"
            + "".join(f"{k:>8}" for k in ("ami", "nmi", "ari", "acc", "bij"))
            + "".join(f"{short[k]:>9}" for k in INDEPENDENCE) + f"  {'ranking (test)':<22}")
    print(f"\nFactor metrics on {dataset} (KxD: factors x dimensions per factor; macro against "
          f"genres; it./us. = items/users; bd = block_diagonal, higher is better; dcor, micro "
          f"= users/dimension_correlation, lower is better)")
    print(head)
    print("-" * len(head))
    for r in rows:
        f = r["factors"]
        run = r.get("control", "trained")
        rank = ("" if "ranking" not in r else
                f"{r['ranking_metric'][5:]} {r['ranking']:.4f} (pop {r['popularity']:.4f})")
        print(f"{r['model']:<10}{str(r['K']) + 'x' + str(r['d']):>7} {run:<8}"
              + "".join(fmt(f.get(f"macro/{k}")) for k in MACRO)
              + "".join(fmt(f.get(k), 9) for k in INDEPENDENCE) + f"  {rank}")


def print_planted(rows: list[dict], args) -> None:
    print(f"\nPlanted grid: {args.grid_users} users, {args.grid_items} items, "
          f"{args.grid_interactions} draws per user, concentration {args.grid_concentration}; "
          f"each model at its defaults with num_factors = config K")
    head = (f"{'model':<10}{'K':>3}{'cfg':>4}{'purity':>7}{'zipf':>5}{'seed':>5}{'AMI':>7}"
            f"{'acc':>7}{'homog':>7}{'compl':>7}{'init':>7}{'random':>8}{'seconds':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<10}{r['planted_k']:>3}{r['config_k']:>4}{r['purity']:>7}"
              f"{r['zipf']:>5}{r['seed']:>5}{fmt(r['ami'], 7)}{fmt(r['accuracy'], 7)}"
              f"{fmt(r['homogeneity'], 7)}{fmt(r['completeness'], 7)}{fmt(r['init_ami'], 7)}"
              f"{fmt(r['random_ami'], 8)}{fmt(r['train_seconds'], 8, 1)}")
    print("\nMean AMI (min) over cells, with the untrained (init) and random means:")
    for name, groups in planted_summary(rows).items():
        for g, v in groups.items():
            print(f"{name:<10} {g:<14} {v['cells']:>3} cells  AMI {v['ami']:.3f} "
                  f"(min {v['min_ami']:.3f})  init {v['init_ami']:.3f}  random "
                  f"{v['random_ami']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description="Factor metrics of MacridVAE and DisenGCN (default "
                                "K, K = 1, random control) on a dataset, and the planted "
                                "benchmark; prints tables and writes JSON.")
    p.add_argument("--dataset", default="ml-latest-small", help="a dataset name (default: the "
                   "embedded ml-latest-small; ml-1m needs --data-dir)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's raw files")
    p.add_argument("--epochs-macridvae", type=int, default=100, help="0 skips the model")
    p.add_argument("--epochs-disengcn", type=int, default=40, help="0 skips the model")
    for name in ("macridvae", "disengcn"):
        p.add_argument(f"--set-{name}", action="append", default=[], metavar="KEY=VALUE",
                       help=f"config override for the real-data {name} runs (both K), e.g. "
                            f"model.batch_size=100; repeatable")
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs")
    p.add_argument("--seed", type=int, default=98765)
    p.add_argument("--random-draws", type=int, default=20,
                   help="random assignments averaged in the control")
    p.add_argument("--model", action="append", default=None,
                   choices=sorted(n for n, m in MODELS.items() if issubclass(m, FactorRecommender)),
                   help="model(s) of the planted grid; repeatable (default: every model)")
    p.add_argument("--planted-epochs", type=int, default=None,
                   help="epochs per planted cell (default: " + ", ".join(
                       f"{m} {e}" for m, e in PLANTED_EPOCHS.items()) + ")")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every planted cell; repeatable")
    p.add_argument("--grid-factors", type=int, nargs="+", default=[3, 5, 8])
    p.add_argument("--grid-purity", type=float, nargs="+", default=[0.7, 0.9])
    p.add_argument("--grid-zipf", type=float, nargs="+", default=[0.0, 1.2])
    p.add_argument("--grid-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--grid-mismatch", nargs="*", default=["5:3", "5:8"],
                   metavar="PLANTED:CONFIG", help="cells with planted K != configured K")
    p.add_argument("--grid-users", type=int, default=600)
    p.add_argument("--grid-items", type=int, default=300)
    p.add_argument("--grid-interactions", type=float, default=40.0)
    p.add_argument("--grid-concentration", type=float, default=0.1)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--skip-planted", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of --out (if it exists) of the models this run does not "
                        "train, replace the others")
    args = p.parse_args()
    args.model = args.model or sorted(PROTOCOL)
    for pair in args.grid_mismatch:
        if not re.fullmatch(r"[1-9]\d*:[1-9]\d*", pair):
            p.error(f"--grid-mismatch {pair!r}: expected PLANTED:CONFIG, two integers >= 1")
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    if not args.skip_real:
        out["real"] = real_runs(args)
    if not args.skip_planted:
        out["planted"] = planted_runs(args)
    out["wall_seconds"] = round(time.perf_counter() - start, 1)
    if args.merge and args.out.exists():
        out = merge(json.loads(args.out.read_text()), out, trained_models(args))
    if "real" in out:
        print_real(out["real"], args.dataset)
    if "planted" in out:
        out["planted_summary"] = planted_summary(out["planted"])
        print_planted(out["planted"], args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"\nwrote {args.out} ({out['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
