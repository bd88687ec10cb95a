"""Seconds per epoch and peak memory of every model on planted synthetic data. Prints a table
and writes JSON.

One timed epoch per model and precision (``benchmarks/gpu_check.sh`` runs this on a GPU)::

    python benchmarks/scaling.py epoch --users 6040 --items 3706 --device cuda --bf16 \\
        --out epochs.json

The data are :func:`disentangle.data.synthetic.planted` interactions (``--factors`` planted
clusters, ``--per-user`` draws per user: the defaults give ml-1m's size, ~6k users x 3.7k
items x ~1M interactions), split by the ratio protocol (seed 0). Each model is built with
its defaults (seed 0) and trained for one epoch with Adam after ``--warmup`` untimed
updates (kernel selection, allocator); the epoch is timed with the device synchronised.
Closed-form models (EASE, ItemKNN) time their one solve. Then the validation users are
ranked once (``eval``). ``--bf16`` runs the same epoch again, from the same initial state,
under ``torch.autocast(dtype=torch.bfloat16)``, and reports its time, whether its loss is
finite and its mean loss relative to fp32's (``bf16 gap``): bf16 autocast is called safe for
a model when the loss is finite and within 1% of fp32's. A model whose kernels autocast
cannot run is reported with the error, not timed.

Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the process's peak
resident set (``ru_maxrss``, which only grows: read it as an upper bound per model).

Growing data, 1 and 2 processes (``docs/scaling.md``)::

    flock /tmp/heavy.lock python benchmarks/scaling.py sweep --model macridvae \
        --sizes 5000x2000 20000x2000 20000x8000 --procs 1 2 --out scaling.json

Each size and process count is a fresh run of the real trainer (``torchrun --standalone``
for 2 processes, gloo, one thread per process, so 2 processes use 2 cores where 1 uses
one): one epoch of the model's defaults on planted data with ``--per-user`` draws per user
and no validation users (the epoch alone is timed, from the first batch to the last
update, training interactions: 80% of each user's, the ratio protocol). Then the
validation users (the other 20%) are ranked twice: sharded over the ranks as the trainer
does (``eval s``, the slowest rank), and whole by one rank (``1-rank eval s``, what
evaluating on rank 0 alone would cost). Reported also: the peak resident memory of each rank
(``ru_maxrss``, imports included) and of the ranks together.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from disentangle.config import resolve
from disentangle.data.splits import ratio_split
from disentangle.data.synthetic import planted
from disentangle.metrics.ranking import evaluate
from disentangle.models import MODELS
from disentangle.models.recommender import ClosedFormRecommender

SAFE_GAP = 0.01


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_epoch(name: str, split, device: torch.device, bf16: bool, warmup: int) -> dict:
    """One epoch of ``name`` (fp32, or under bf16 autocast) from a seeded start: seconds,
    updates, mean loss, evaluation seconds and peak memory."""
    cfg = resolve(name, [], [], {})
    torch.manual_seed(0)
    model = MODELS[name](cfg.model, split.train).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    row = {"model": name, "precision": "bf16" if bf16 else "fp32"}
    if isinstance(model, ClosedFormRecommender):
        start = time.perf_counter()
        with autocast:
            model.fit_closed_form(split.train)
        _sync(device)
        row.update(seconds=time.perf_counter() - start, updates=0, loss=None)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
        model.train()

        def update(batch, step):
            with autocast:
                loss, _ = model.loss(_to(batch, device), step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        gen = torch.Generator().manual_seed(0)
        for step, batch in zip(range(warmup), model.batches(split.train, gen)):
            update(batch, step)
        _sync(device)
        losses, start = [], time.perf_counter()
        for step, batch in enumerate(model.batches(split.train, gen)):
            losses.append(update(batch, warmup + step))
        _sync(device)
        seconds = time.perf_counter() - start
        mean = torch.stack(losses).float().mean().item() if losses else math.nan
        row.update(seconds=seconds, updates=len(losses), loss=mean)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad(), autocast:
        valid = evaluate(model.score, split.valid, (100,), 1024, device)
    _sync(device)
    row.update(eval_seconds=time.perf_counter() - start, valid_ndcg100=valid["ndcg@100"],
               peak_mib=_peak_mib(device))
    return row


def epoch_command(args) -> list[dict]:
    device = torch.device(args.device)
    data = planted(args.users, args.items, args.factors, interactions_per_user=args.per_user,
                   seed=0)
    split = ratio_split(data, 0)
    print(f"data: {data.num_users} users x {data.num_items} items, "
          f"{data.num_interactions} interactions; device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}",
          flush=True)
    print(f"{'model':<10} {'prec':<5} {'s/epoch':>9} {'updates':>7} {'eval s':>8} "
          f"{'peak MiB':>9}  bf16 gap")
    rows = []
    for name in args.models or list(MODELS):
        for bf16 in (False, True) if args.bf16 else (False,):
            try:
                row = time_epoch(name, split, device, bf16, args.warmup)
            except (RuntimeError, NotImplementedError, TypeError) as e:
                row = {"model": name, "precision": "bf16" if bf16 else "fp32",
                       "error": str(e).splitlines()[0][:200]}
            if bf16 and "error" not in row:
                fp32 = next(r for r in rows if r["model"] == name and r["precision"] == "fp32")
                if row["loss"] is not None and fp32.get("loss") is not None:
                    row["bf16_gap"] = abs(row["loss"] - fp32["loss"]) / abs(fp32["loss"])
                    row["bf16_safe"] = bool(math.isfinite(row["loss"])
                                            and row["bf16_gap"] <= SAFE_GAP)
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['model']:<10} {r['precision']:<5} error: {r['error']}"
    gap = f"{r['bf16_gap']:.2%}{'' if r['bf16_safe'] else ' UNSAFE'}" if "bf16_gap" in r else ""
    return (f"{r['model']:<10} {r['precision']:<5} {r['seconds']:>9.3f} {r['updates']:>7} "
            f"{r['eval_seconds']:>8.3f} {r['peak_mib']:>9.0f}  {gap}")


_SWEEP_CHILD = r"""
import json, resource, sys, time
import numpy as np, scipy.sparse as sp, torch
from disentangle.config import resolve
from disentangle.data.splits import EvalSet, Split, ratio_split
from disentangle.data.synthetic import planted
from disentangle.metrics.ranking import evaluate
from disentangle.models import MODELS
from disentangle.train import distributed
from disentangle.train.trainer import Trainer

model, users, items, per_user = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
with distributed.process_group("cpu") as device:
    full = ratio_split(planted(users, items, 7, interactions_per_user=per_user, seed=0), 0)
    data, valid = full.train, full.valid
    none = EvalSet(np.zeros(0, dtype=np.int64), sp.csr_matrix((0, items)), sp.csr_matrix((0, items)))
    split = Split(data, none, none, "ratio", 0)
    cfg = resolve(model, [], [], {"train.epochs": 1})
    torch.manual_seed(0)
    trainer = Trainer(MODELS[model](cfg.model, data), split, cfg.train, None, device, False)
    distributed.barrier()
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    distributed.barrier()
    start = time.perf_counter()
    trainer.evaluate(valid)
    sharded = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        evaluate(trainer.model.score, valid, cfg.train.ks, cfg.train.eval_chunk, device)
    whole = time.perf_counter() - start
    row = {"rank": distributed.rank(), "seconds": seconds, "eval_sharded": sharded,
           "eval_one_rank": whole, "interactions": int(data.num_interactions),
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print("ROW " + json.dumps(row), flush=True)
"""


def sweep_command(args) -> list[dict]:
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(f"{'model':<10} {'users':>8} {'items':>7} {'interact.':>10} {'procs':>5} "
          f"{'s/epoch':>8} {'eval s':>7} {'1-rank eval s':>13} {'peak MiB/rank':>14} "
          f"{'peak MiB all':>12}")
    rows = []
    for size in args.sizes:
        users, items = (int(x) for x in size.lower().split("x"))
        for procs in args.procs:
            launch = [sys.executable] if procs == 1 else [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={procs}"]
            cmd = [*launch, "-c" if procs == 1 else "--no-python", *(
                [_SWEEP_CHILD] if procs == 1 else [sys.executable, "-c", _SWEEP_CHILD]),
                args.model, str(users), str(items), str(args.per_user)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                                  timeout=args.timeout)
            ranks = [json.loads(line[4:]) for line in done.stdout.splitlines()
                     if line.startswith("ROW ")]
            if done.returncode or len(ranks) != procs:
                row = {"model": args.model, "users": users, "items": items, "procs": procs,
                       "error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
                print(f"{args.model:<10} {users:>8} {items:>7} {'':>10} {procs:>5} "
                      f"error: {row['error']}", flush=True)
            else:
                row = {"model": args.model, "users": users, "items": items, "procs": procs,
                       "interactions": ranks[0]["interactions"],
                       "seconds": max(r["seconds"] for r in ranks),
                       "eval_seconds": max(r["eval_sharded"] for r in ranks),
                       "eval_one_rank_seconds": ranks[0]["eval_one_rank"],
                       "peak_mib_per_rank": max(r["peak_mib"] for r in ranks),
                       "peak_mib_total": sum(r["peak_mib"] for r in ranks)}
                print(f"{args.model:<10} {users:>8} {items:>7} {row['interactions']:>10} "
                      f"{procs:>5} {row['seconds']:>8.2f} {row['eval_seconds']:>7.2f} "
                      f"{row['eval_one_rank_seconds']:>13.2f} {row['peak_mib_per_rank']:>14.0f} "
                      f"{row['peak_mib_total']:>12.0f}", flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("epoch", help="one timed epoch of each model at one size")
    e.add_argument("--users", type=int, default=6040)
    e.add_argument("--items", type=int, default=3706)
    e.add_argument("--factors", type=int, default=7)
    e.add_argument("--per-user", type=float, default=190.0,
                   help="draws per user before merging repeats (190: ~1M interactions)")
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e.add_argument("--bf16", action="store_true", help="also time each under bf16 autocast")
    e.add_argument("--warmup", type=int, default=3)
    e.add_argument("--models", nargs="*", choices=list(MODELS))
    e.add_argument("--out", type=Path, default=None, help="JSON file to write")
    w = sub.add_parser("sweep", help="one epoch at growing sizes, on 1 and 2 CPU processes")
    w.add_argument("--model", default="macridvae", choices=list(MODELS))
    w.add_argument("--sizes", nargs="+", default=["5000x2000", "20000x2000", "20000x8000"],
                   help="USERSxITEMS")
    w.add_argument("--per-user", type=float, default=40.0)
    w.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    w.add_argument("--timeout", type=float, default=600)
    w.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = p.parse_args(argv)
    rows = (epoch_command if args.command == "epoch" else sweep_command)(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": " ".join(sys.argv), "torch": torch.__version__,
            "machine": platform.machine(), "device": getattr(args, "device", "cpu"),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            **({"users": args.users, "items": args.items} if args.command == "epoch" else {}),
            "rows": rows}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
