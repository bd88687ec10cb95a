"""Factor (disentanglement) metrics of MacridVAE and DisenGCN, each at its default K and at
K = 1 (the non-disentangled baseline), next to a random-assignment control; and the planted
benchmark. Prints tables and writes JSON.

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

The planted benchmark (:func:`~disentangle.data.synthetic.planted`, K planted clusters as the
"genres"): each model with its paper/default settings and with the settings that the planted
test (``tests/models/test_planted.py``) found to recover the clusters, against the same
random control and the untrained model.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import types
from pathlib import Path

import numpy as np
import torch

from disentangle.config import resolve
from disentangle.data.splits import heldout_split, ratio_split
from disentangle.data.synthetic import planted
from disentangle.metrics.factors import factor_report, macro_alignment
from disentangle.metrics.ranking import to_torch_csr
from disentangle.models import MODELS
from disentangle.train.run import build_model, build_split, final_results
from disentangle.train.trainer import Trainer
from disentangle.viz.report import evaluation_users

MACRO = ["ami", "nmi", "ari", "accuracy", "bijection"]
INDEPENDENCE = ["items/block_diagonal", "items/dcor", "users/block_diagonal", "users/dcor",
                "users/dimension_correlation"]
PROTOCOL = {"macridvae": "heldout", "disengcn": "ratio"}
# The settings tests/models/test_planted.py found to recover planted factors. MacridVAE:
# a soft assignment (assign_tau 2) under a sharper ranking softmax (tau 0.2); see the test.
PLANTED_TUNED = {
    "macridvae": ["model.dim=4", "model.tau=0.2", "model.assign_tau=2.0", "model.nogb=true",
                  "model.batch_size=50", "train.lr=1e-2"],
    "disengcn": ["model.factor_dim=2", "model.tau=0.2", "model.cor_weight=0",
                 "model.batch_size=1024", "train.lr=1e-2"],
}


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


def planted_runs(args) -> list[dict]:
    rows = []
    data = planted(args.planted_users, args.planted_items, args.planted_factors,
                   interactions_per_user=args.planted_interactions, purity=args.planted_purity,
                   concentration=args.planted_concentration, seed=args.seed % 2**32)
    print(f"[planted] {data}", flush=True)
    k = args.planted_factors
    for name, epochs in (("macridvae", args.planted_epochs_macridvae),
                         ("disengcn", args.planted_epochs_disengcn)):
        if epochs <= 0:
            continue
        split = (heldout_split(data, seed=args.seed, heldout_users=0.1)
                 if PROTOCOL[name] == "heldout" else ratio_split(data, seed=args.seed))
        for setting, extra in (("default", []), ("tuned", PLANTED_TUNED[name])):
            cfg = resolve(name, overrides=[f"model.num_factors={k}", f"train.epochs={epochs}",
                                           f"train.seed={args.seed}",
                                           f"train.eval_every={args.eval_every}", *extra])
            torch.manual_seed(cfg.train.seed)
            model = MODELS[name](cfg.model, split.train)
            model.eval()
            with torch.no_grad():
                untrained = macro_alignment(model.item_factor_weights(),
                                            split.train.item_categories)["ami"]
            best, seconds = train(model, split, cfg.train)
            model.eval()
            with torch.no_grad():
                macro = macro_alignment(model.item_factor_weights(), split.train.item_categories)
            metric = cfg.train.select
            ranking = final_results(model, split, cfg.train, best)["test"][metric]
            rows.append({"model": name, "setting": setting, "overrides": extra, "K": k,
                         "epochs": epochs, "best_epoch": best, "train_seconds": round(seconds, 1),
                         "ami": macro["ami"], "nmi": macro["nmi"], "accuracy": macro["accuracy"],
                         "bijection": macro["bijection"], "untrained_ami": untrained,
                         "ranking_metric": f"test {metric}", "ranking": ranking})
            print(f"[planted {name} {setting}] AMI {macro['ami']:.3f} (untrained "
                  f"{untrained:.3f}), best epoch {best}, {seconds:.0f}s", flush=True)
        control = random_control(split.train.num_items, k, split.train.item_categories,
                                 args.random_draws, args.seed)
        rows.append({"model": name, "setting": "random", "K": k, "ami": control["ami"],
                     "ami_sd": control["ami_sd"], "nmi": control["nmi"],
                     "accuracy": control["accuracy"], "bijection": control["bijection"]})
    return rows


def trained_models(args) -> dict[str, set[str]]:
    """The models each part (``real``, ``planted``) of this run trains."""
    return {"real": set() if args.skip_real else
            {m for m in PROTOCOL if getattr(args, f"epochs_{m}") > 0},
            "planted": set() if args.skip_planted else
            {m for m in PROTOCOL if getattr(args, f"planted_epochs_{m}") > 0}}


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
    print(f"\nPlanted benchmark: {args.planted_users} users, {args.planted_items} items, "
          f"K={args.planted_factors}, purity {args.planted_purity}, concentration "
          f"{args.planted_concentration}, {args.planted_interactions} draws per user")
    head = (f"{'model':<10} {'setting':<8}{'AMI':>8}{'NMI':>8}{'acc':>8}{'bij':>6}"
            f"{'untrained':>11}  {'ranking (test)':<18}{'seconds':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        rank = f"{r['ranking_metric'][5:]} {r['ranking']:.4f}" if "ranking" in r else ""
        print(f"{r['model']:<10} {r['setting']:<8}"
              f"{fmt(r['ami'])}{fmt(r['nmi'])}{fmt(r['accuracy'])}"
              f"{fmt(r['bijection'], 6, 2)}{fmt(r.get('untrained_ami'), 11)}  {rank:<18}"
              f"{fmt(r.get('train_seconds'), 9, 1)}")
    sds = [f"{r['model']} {r['ami_sd']:.3f}" for r in rows if "ami_sd" in r]
    print(f"(random: mean of {args.random_draws} random assignments; AMI sd " + ", ".join(sds)
          + ")")
    print("(settings: default = the model's defaults with num_factors=K; tuned = "
          + "; ".join(f"{m}: {' '.join(o)}" for m, o in PLANTED_TUNED.items()) + ")")


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
    p.add_argument("--planted-users", type=int, default=3000)
    p.add_argument("--planted-items", type=int, default=1000)
    p.add_argument("--planted-factors", type=int, default=4)
    p.add_argument("--planted-interactions", type=float, default=40.0)
    p.add_argument("--planted-purity", type=float, default=0.95)
    p.add_argument("--planted-concentration", type=float, default=0.5)
    p.add_argument("--planted-epochs-macridvae", type=int, default=100)
    p.add_argument("--planted-epochs-disengcn", type=int, default=40)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--skip-planted", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of --out (if it exists) of the models this run does not "
                        "train, replace the others")
    args = p.parse_args()
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
        print_planted(out["planted"], args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"\nwrote {args.out} ({out['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
