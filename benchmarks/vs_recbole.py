"""Our models against their RecBole 1.2.1 counterparts on one split, runs alternated.

    PY=$(RECBOLE_VENV=/tmp/recbole-venv bash ../shared/bench/recbole/setup.sh)
    flock /tmp/heavy.lock env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \\
        python benchmarks/vs_recbole.py --recbole-python "$PY" --pairs macridvae \\
        --epochs 4 --rounds 2 --out benchmarks/results/vs_recbole-ml-1m.json

The split is ours (per-user random 0.8/0.1/0.1, RecBole's protocol), exported as RecBole
atomic files (``benchmark_filename: [train, valid, test]``) so both sides read the same
pairs; our child checks the split it rebuilds against the export's checksum. Each run is one
process (peak RSS is per run), alternated ours, RecBole, ours, RecBole. Inside each process:

- seconds per training epoch and per full-ranking validation pass (6040 users), timed by
  wrapping each toolkit's own epoch and validation methods; medians leave out the first
  epoch, which runs under :class:`torch.utils.flop_counter.FlopCounterMode` to count the
  epoch's matrix-product FLOPs (sparse lookups, e.g. our encoder's ``embedding_bag``, are
  not counted: under 2% of our MacridVAE epoch by hand count);
- the rate of a plain 2048 x 2048 fp32 matmul on the same threads, as the yardstick;
- peak RSS; test metrics at the best validation epoch (NDCG@10, RecBole's selection rule).

Few epochs: the test metrics show both sides learn the same task, not converged accuracy.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECBOLE_DIR = ROOT.parent / "shared" / "bench" / "recbole"
KS = [10, 20, 50, 100]

#: name: (our model, our model overrides, RecBole model, RecBole overrides); the shapes match.
PAIRS = {
    "macridvae": ("macridvae", {"num_factors": 7, "dim": 100, "batch_size": 500},
                  "MacridVAE", {"kfac": 7, "embedding_size": 100, "encoder_hidden_size": [100],
                                "train_batch_size": 500}),
    "multvae": ("multvae", {"dims": [600, 200], "batch_size": 500},
                "MultiVAE", {"mlp_hidden_size": [600], "latent_dimension": 200,
                             "train_batch_size": 500}),
}


# -- shared by both children (stdlib and torch only: the RecBole child runs in its venv) --------
def matmul_gflops(threads: int, n: int = 2048, reps: int = 10) -> float:
    """Median GFLOP/s of an ``n x n`` fp32 matmul."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def timed(fn, sink: list, flops: dict):
    """``fn`` timed into ``sink``; its first call runs under a FLOP counter instead."""
    def wrapper(*args, **kw):
        from torch.utils.flop_counter import FlopCounterMode
        if "epoch" not in flops and sink is not None and flops.get("count", True):
            with FlopCounterMode(display=False) as counter:
                out = fn(*args, **kw)
            flops["epoch"] = counter.get_total_flops()
            return out
        t = time.perf_counter()
        out = fn(*args, **kw)
        sink.append(time.perf_counter() - t)
        return out
    return wrapper


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pairs_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- our side -----------------------------------------------------------------------------------
def our_split(data_dir: str, seed: int):
    from disentangle.data import load_dataset
    from disentangle.data.splits import ratio_split
    return ratio_split(load_dataset("ml-1m", data_dir).data, seed)


def write_atomic(split, out: Path) -> None:
    """RecBole atomic files ``ml-1m.{train,valid,test}.inter`` of ``split`` (our indices)."""
    out.mkdir(parents=True, exist_ok=True)
    parts = {"train": (split.train.users, split.train.items)}
    for name, es in (("valid", split.valid), ("test", split.test)):
        t = es.target.tocoo()
        parts[name] = (es.users[t.row], t.col)
    for name, (u, i) in parts.items():
        with open(out / f"ml-1m.{name}.inter", "w") as f:
            f.write("user_id:token\titem_id:token\n")
            f.writelines(f"{a}\t{b}\n" for a, b in zip(u.tolist(), i.tolist()))


def child_ours(a) -> dict:
    import torch

    from disentangle.config import TrainConfig
    from disentangle.metrics.ranking import evaluate
    from disentangle.models import MODELS
    from disentangle.train.trainer import Trainer
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    rate = matmul_gflops(a.threads)
    split = our_split(a.data_dir, a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        write_atomic(split, Path(tmp))
        if pairs_digest(Path(tmp) / "ml-1m.train.inter") != a.digest:
            raise SystemExit("our split differs from the exported one")
    name, overrides = PAIRS[a.pair][:2]
    cls = MODELS[name]
    torch.manual_seed(a.seed)
    model = cls(cls.Config(**overrides), split.train)
    cfg = TrainConfig(epochs=a.epochs, ks=KS, select="ndcg@10", seed=a.seed)
    train_s, valid_s, flops = [], [], {}
    trainer = Trainer(model, split, cfg, None, progress=False)
    trainer._train_epoch = timed(trainer._train_epoch, train_s, flops)
    trainer.validate = timed(trainer.validate, valid_s, {"count": False})
    t0 = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t0
    model.eval()
    test = evaluate(model.score, split.test, KS)
    return {"train_s": train_s, "valid_s": valid_s, "flops_epoch": flops["epoch"],
            "matmul_gflops": rate, "wall_s": wall, "peak_rss_mb": peak_rss_mb(),
            "test": {k: test[k] for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}}


# -- RecBole's side (runs in RecBole's environment) ------------------------------------------
def child_recbole(a) -> dict:
    import torch
    import yaml
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    rate = matmul_gflops(a.threads)
    import recbole.trainer.trainer as T
    from recbole.quick_start import run_recbole
    model, overrides = PAIRS[a.pair][2:]
    configs = [str(RECBOLE_DIR / "configs" / "common.yaml")]
    own = RECBOLE_DIR / "configs" / f"{model}.yaml"
    if own.exists() and yaml.safe_load(own.read_text()):
        configs.append(str(own))
    train_s, valid_s, flops = [], [], {}
    T.Trainer._train_epoch = timed(T.Trainer._train_epoch, train_s, flops)
    T.Trainer._valid_epoch = timed(T.Trainer._valid_epoch, valid_s, {"count": False})
    work = tempfile.mkdtemp()
    os.chdir(work)  # RecBole writes log/ and saved/ into the cwd
    t0 = time.perf_counter()
    res = run_recbole(model=model, dataset="ml-1m", config_file_list=configs, config_dict={
        **overrides, "data_path": a.data_path, "checkpoint_dir": os.path.join(work, "saved"),
        "benchmark_filename": ["train", "valid", "test"], "epochs": a.epochs,
        "topk": KS, "seed": a.seed})
    wall = time.perf_counter() - t0
    test = res["test_result"]
    return {"train_s": train_s, "valid_s": valid_s, "flops_epoch": flops["epoch"],
            "matmul_gflops": rate, "wall_s": wall, "peak_rss_mb": peak_rss_mb(),
            "test": {k: float(test[k]) for k in ("recall@10", "ndcg@10", "recall@20",
                                                   "ndcg@20")}}


# -- driver -------------------------------------------------------------------------------------
def run_child(python: str, side: str, pair: str, args, extra: list[str],
              root: Path = ROOT) -> dict:
    """One run in its own process; ``root`` is the checkout whose ``disentangle`` it imports."""
    cmd = [python, str(Path(__file__).resolve()), "--child", side, "--pair", pair,
           "--epochs", str(args.epochs), "--threads", str(args.threads),
           "--seed", str(args.seed), "--data-dir", args.data_dir, *extra]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"{side} {pair} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    train = [t for r in runs for t in r["train_s"]]
    valid = [t for r in runs for t in r["valid_s"]]
    s_epoch = statistics.median(train)
    gflops = statistics.median(r["flops_epoch"] for r in runs) / 1e9
    rate = statistics.median(r["matmul_gflops"] for r in runs)
    return {"s_per_epoch": s_epoch, "s_per_eval": statistics.median(valid),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "gflop_per_epoch": gflops, "gflops_achieved": gflops / s_epoch,
            "matmul_gflops": rate, "share_of_matmul": gflops / s_epoch / rate,
            "test": runs[-1]["test"]}


def table(results: dict) -> str:
    head = ("| pair | side | s/epoch | s/eval | peak RSS MB | GFLOP/epoch | GFLOP/s "
            "(matmul) | share | test R@20 | test N@20 |")
    lines = [head, "|" + "---|" * 10]
    for pair, sides in results.items():
        for side, s in sides.items():
            lines.append(
                f"| {pair} | {side} | {s['s_per_epoch']:.3f} | {s['s_per_eval']:.3f} | "
                f"{s['peak_rss_mb']:.0f} | {s['gflop_per_epoch']:.1f} | "
                f"{s['gflops_achieved']:.0f} ({s['matmul_gflops']:.0f}) | "
                f"{s['share_of_matmul']:.0%} | {s['test']['recall@20']:.4f} | "
                f"{s['test']['ndcg@20']:.4f} |")
        r = sides["recbole"]
        for side in (x for x in sides if x != "recbole"):
            o = sides[side]
            lines.append(f"| {pair} | {side} / RecBole | "
                         f"{o['s_per_epoch'] / r['s_per_epoch']:.2f} | "
                         f"{o['s_per_eval'] / r['s_per_eval']:.2f} | "
                         f"{o['peak_rss_mb'] / r['peak_rss_mb']:.2f} | | | | | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=["ours", "recbole"], help=argparse.SUPPRESS)
    p.add_argument("--pair", help=argparse.SUPPRESS)
    p.add_argument("--digest", help=argparse.SUPPRESS)
    p.add_argument("--data-path", help=argparse.SUPPRESS)
    p.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=["macridvae"])
    p.add_argument("--recbole-python", default=os.environ.get("RECBOLE_PYTHON"))
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "ml-1m"))
    p.add_argument("--epochs", type=int, default=4, help="per run; the first is not timed")
    p.add_argument("--rounds", type=int, default=2, help="alternations ours, RecBole")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--baseline-root", type=Path,
                   help="another checkout (e.g. `git archive REV disentangle`) run as a third "
                        "side, 'ours-before', alternated with the other two")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    if a.child:
        print(json.dumps((child_ours if a.child == "ours" else child_recbole)(a)))
        return
    if not a.recbole_python:
        sys.exit("--recbole-python (or RECBOLE_PYTHON): the python of RecBole's environment, "
                 "from ../shared/bench/recbole/setup.sh")
    results, raw = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        write_atomic(our_split(a.data_dir, a.seed), Path(tmp) / "ml-1m")
        digest = pairs_digest(Path(tmp) / "ml-1m" / "ml-1m.train.inter")
        for pair in a.pairs:
            runs = {"ours": [], "recbole": []}
            for _ in range(a.rounds):
                if a.baseline_root:
                    runs.setdefault("ours-before", []).append(run_child(
                        sys.executable, "ours", pair, a, ["--digest", digest], a.baseline_root))
                runs["ours"].append(run_child(sys.executable, "ours", pair, a,
                                              ["--digest", digest]))
                runs["recbole"].append(run_child(a.recbole_python, "recbole", pair, a,
                                                 ["--data-path", tmp]))
            raw[pair] = runs
            results[pair] = {side: summarise(r) for side, r in runs.items()}
    print(table(results))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({
            "command": " ".join(sys.argv), "dataset": "ml-1m", "split": "ratio 0.8/0.1/0.1",
            "seed": a.seed, "epochs_per_run": a.epochs, "rounds": a.rounds,
            "threads": a.threads, "summary": results, "runs": raw}, indent=1) + "\n")


if __name__ == "__main__":
    main()
