"""Data-parallel training: two CPU processes under ``torchrun`` (gloo, one thread each) take
the steps one process takes with the same global batch, and a killed rank leaves a folder
that resumes.

Equality is to within floating-point reassociation: each rank sums its rows' gradients and
gloo adds the two halves, where one process sums all rows at once. Measured on these configs
(4 epochs): losses differ by ~1e-8 relative, validation and test metrics by ~1e-16, and
parameters by at most 1.2e-6 (DisenGCN) and 9.9e-5 (Mult-DAE) of each tensor's largest
magnitude: Adam divides every coordinate's step by that coordinate's own gradient scale, so
a coordinate whose gradient is nearly zero (an output weight of a rarely seen item) turns
its rounding difference into a visible step difference. The tolerances: 1e-5 relative for
losses, 1e-6 absolute for metrics, 1e-3 of the largest magnitude for parameters. The runs compared draw no noise from
torch's generator (each rank has its own stream): the user-row path is Mult-DAE without
dropout (MacridVAE always draws reparameterisation noise, and Adam turns even 1e-9-scaled
noise gradients into lr-sized steps, so its two runs differ by their draws, not by
arithmetic; its sharded loss and gradients are checked in one process below), and DisenGCN
runs without its correlation penalty (estimated per rank).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from disentangle.config import resolve
from disentangle.data import load_dataset, make_split
from disentangle.models import MODELS
from disentangle.runs import CheckpointError
from disentangle.train import distributed
from disentangle.train.run import fit, resume

EPOCHS = 4
CASES = {
    # ~4 user batches per epoch, the last one short (uneven shares)
    "multdae": ("multdae", [], {"model.dims": [64, 16], "model.batch_size": 128,
                                "model.dropout": 0.0}),
    # 2 edge batches per epoch, the last one short; the sampled softmax's shared negatives
    "disengcn": ("disengcn", ["--protocol", "ratio"],
                 {"model.factor_dim": 4, "model.batch_size": 32768, "model.loss": "softmax",
                  "model.cor_weight": 0.0}),
}
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cli_args(name):
    model, extra, sets = CASES[name]
    return ["--model", model, *extra, "--epochs", str(EPOCHS),
            *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]


def torchrun(*args, wait=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "disentangle_cli.main", "fit", *args, "--quiet", "--no-report"]
    if not wait:
        return subprocess.Popen(cmd, env=ONE_THREAD, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    done = subprocess.run(cmd, check=False, env=ONE_THREAD, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def records(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module", params=list(CASES))
def two(request, tmp_path_factory):
    """(case name, the folder of its uninterrupted 2-process run)."""
    run_dir = tmp_path_factory.mktemp(request.param) / "two"
    torchrun(*cli_args(request.param), "--out", str(run_dir))
    return request.param, run_dir


def relative_gap(a, b):
    """Largest difference, relative to the largest magnitude of ``a``."""
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


def test_two_processes_take_the_steps_of_one(two, tmp_path, one_thread):
    name, two_dir = two
    model, extra, sets = CASES[name]
    options = {"data.protocol": extra[1]} if extra else {}
    cfg = resolve(model, [], [], {**options, **sets, "train.epochs": EPOCHS})
    one_dir = tmp_path / "one"
    fit(cfg, one_dir, "cpu", progress=False)

    one, two_ = records(one_dir), records(two_dir)
    assert [r["step"] for r in one] == [r["step"] for r in two_]
    for a, b in zip(one, two_):
        for key in ("loss", *(k for k in a if k in ("recon", "kl", "softmax", "reg"))):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-12), (key, a, b)
        for key, value in a["valid"].items():
            assert b["valid"][key] == pytest.approx(value, abs=1e-6), key
    r1, r2 = results(one_dir), results(two_dir)
    assert r1["best_epoch"] == r2["best_epoch"]
    for key, value in r1["test"].items():
        assert r2["test"][key] == pytest.approx(value, abs=1e-6), key
    p1, p2 = load_file(one_dir / "best.safetensors"), load_file(two_dir / "best.safetensors")
    gaps = {k: relative_gap(p1[k], p2[k]) for k in p1 if k.startswith("model.")}
    assert max(gaps.values()) < 1e-3, gaps


def worker_pids(agent_pid):
    """{rank: pid} of the processes torchrun started."""
    pids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != agent_pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except (OSError, ValueError):
            continue
        if b"RANK" in env:
            pids[int(env[b"RANK"])] = int(entry)
    return pids


def finished(run_dir):
    path = run_dir / "metrics.jsonl"
    return path.exists() and sum(line.endswith("\n") for line in
                                 path.read_text().splitlines(keepends=True))


def test_a_killed_rank_leaves_a_folder_that_resumes_on_as_many(two, tmp_path):
    name, two_dir = two
    if name != "disengcn":
        pytest.skip("one model is enough for the kill path")
    run_dir = tmp_path / "killed"
    proc = torchrun(*cli_args(name), "--out", str(run_dir), wait=False)
    deadline = time.monotonic() + 120
    while finished(run_dir) < 2:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run did not reach epoch 2"
        time.sleep(0.02)
    os.kill(worker_pids(proc.pid)[1], signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert not (run_dir / "results.json").exists(), "the run ended before the kill"

    # one process cannot continue a 2-process run: the error says how to
    with pytest.raises(CheckpointError, match="saved by a run on 2 processes.*"
                                              "torchrun --nproc_per_node=2"):
        resume(run_dir, progress=False)
    torchrun("--resume", str(run_dir))
    assert records(run_dir) == records(two_dir)
    assert results(run_dir) == results(two_dir)


# -- the sharding arithmetic, in one process --------------------------------------------------
@pytest.mark.parametrize("n, parts", [(10, 2), (7, 2), (7, 3), (1, 2), (2, 4)])
def test_shares_cover_the_batch_once_and_weights_average_to_one(n, parts):
    shares = [distributed.shard_rows(n, r, parts) for r in range(parts)]
    rows = [i for sl, w in shares if w for i in range(sl.start, sl.stop)]
    assert rows == list(range(n))
    assert sum(w for _, w in shares) == pytest.approx(parts)
    assert all(w == 0 or w == pytest.approx((sl.stop - sl.start) * parts / n)
               for sl, w in shares)


@pytest.fixture(scope="module")
def small():
    return make_split(load_dataset("ml-latest-small"), "ratio", 0).train


@pytest.mark.parametrize("model, sets", [
    ("macridvae", {"dim": 8, "batch_size": 61}),
    ("multvae", {"batch_size": 61}),
    ("disengcn", {"factor_dim": 4, "batch_size": 301, "loss": "softmax", "cor_weight": 0.0,
                  "neighbors": 3, "num_negatives": 50}),
    ("disengcn", {"factor_dim": 4, "batch_size": 301, "cor_weight": 0.0}),
    ("bpr", {"batch_size": 301}),
])
def test_weighted_shard_gradients_add_up_to_the_whole_batch(model, sets, small, one_thread):
    """sum_r (n_r / N) grad loss(rows of r) == grad loss(batch), for 3 uneven shares (the
    loss in eval mode: no sampling)."""
    if model not in MODELS:
        pytest.skip(f"model {model} is not available")
    cfg = resolve(model, [], [], {f"model.{k}": v for k, v in sets.items()})
    torch.manual_seed(0)
    net = MODELS[model](cfg.model, small).eval()
    batch = next(iter(net.batches(small, torch.Generator().manual_seed(0))))
    shared = sets.get("loss") == "softmax"

    def grads(b, scale=1.0):
        net.zero_grad()
        loss = net.loss(b, 0)[0] * scale
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]

    whole_loss, whole = grads(batch)
    total_loss, total = 0.0, None
    for r in range(3):
        local, weight = distributed.shard_batch(batch, r, 3, shared)
        loss, g = grads(local, weight / 3)
        total_loss += loss
        total = g if total is None else [a + b for a, b in zip(total, g)]
    assert total_loss == pytest.approx(whole_loss.item(), rel=1e-5)
    gaps = [relative_gap(a, b) for a, b in zip(whole, total)]
    assert max(gaps) < 1e-5, gaps
