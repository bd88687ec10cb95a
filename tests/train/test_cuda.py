"""``--device cuda`` end to end for training: a run on the GPU trains, evaluates, saves and
resumes, and lands near the same run on the CPU (different kernels: same math, other
summation orders). Skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them."""
import json

import pytest
import torch

from disentangle.config import resolve
from disentangle.runs import load_run
from disentangle.train.run import fit, resume

pytestmark = pytest.mark.cuda

CASES = {
    "macridvae": {"model.dim": 16, "model.batch_size": 128},
    "disengcn": {"model.factor_dim": 4, "model.batch_size": 32768, "data.protocol": "ratio"},
    "multvae": {},
    "bpr": {"data.protocol": "ratio"},
    "ease": {"data.protocol": "ratio"},
}


def config(name, epochs):
    return resolve(name, [], [], {**CASES[name], "train.epochs": epochs})


@pytest.mark.parametrize("name", list(CASES))
def test_a_cuda_run_trains_resumes_and_lands_near_the_cpu_run(name, tmp_path):
    epochs = 1 if name == "ease" else 3
    gpu = fit(config(name, epochs), tmp_path / "gpu", "cuda", progress=False)
    cpu = fit(config(name, epochs), tmp_path / "cpu", "cpu", progress=False)
    for key, value in cpu["test"].items():
        if key.startswith(("ndcg", "recall")):
            assert gpu["test"][key] == pytest.approx(value, abs=0.02), key
    run = load_run(tmp_path / "gpu", "cuda")
    assert next(run.model.parameters()).device.type == "cuda"
    if name != "ease":  # one more epoch, on the GPU, from the saved state
        resume(tmp_path / "gpu", epochs + 1, "cuda", progress=False)
        lines = (tmp_path / "gpu" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == list(range(1, epochs + 2))


def test_scores_stay_on_the_device_and_are_finite(tmp_path):
    fit(config("macridvae", 1), tmp_path / "run", "cuda", progress=False)
    run = load_run(tmp_path / "run", "cuda")
    users = torch.arange(4, device="cuda")
    history = torch.sparse_coo_tensor(torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]),
                                      torch.ones(4), (4, run.split.train.num_items)).cuda()
    scores = run.model.score(users, history.to_sparse_csr())
    assert scores.device.type == "cuda" and torch.isfinite(scores).all()
