"""A run killed mid-training (SIGKILL, or Ctrl-C) and continued with ``fit --resume`` ends
bit-identical to the same run never stopped: same per-epoch records, same best epoch, same
validation and test metrics.

Each test drives the real console program in a subprocess, on the embedded dataset, with
small models so a run takes seconds.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from disentangle.models import MODELS

EPOCHS = 4
CASES = {
    # the learning-rate step after epoch 3 falls after the resume
    "macridvae": ["--model", "macridvae", "--set", "model.dim=16",
                  "--set", "train.lr_milestones=[3]"],
    # one update per epoch keeps the graph model quick; dropout exercises the torch RNG
    "disengcn": ["--model", "disengcn", "--protocol", "ratio", "--set", "model.factor_dim=4",
                 "--set", "model.batch_size=65536", "--set", "model.cor_sample=32",
                 "--set", "model.dropout=0.1"],
}


def fit_command(*args):
    return [sys.executable, "-m", "disentangle_cli.main", "fit", *args, "--quiet"]


#: Every process of a comparison runs one thread: a multithreaded BLAS may use fewer threads
#: than asked when the machine is loaded (MKL's dynamic threading), which changes the
#: summation order of a product in the last bits. Resume is bit-identical for a given
#: number of threads, which is what is compared.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def finished(run_dir):
    """Epochs whose metric line was written in full."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(line.endswith("\n") for line in path.read_text().splitlines(keepends=True))


def records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def stop_after(args, run_dir, epochs, sig):
    """Start ``fit``, send ``sig`` once ``epochs`` epochs are recorded; return the exit code
    and stderr."""
    # A shell's background job inherits SIGINT ignored, and so would fit: handle it here
    # while fit starts, so that fit starts with the default Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            fit_command(*args, "--epochs", str(EPOCHS), "--out", str(run_dir)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 600
    while finished(run_dir) < epochs:
        if proc.poll() is not None:
            pytest.fail(f"fit ended before it was stopped:\n{proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("fit did not reach the epoch to stop at")
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def resume(run_dir):
    done = subprocess.run(fit_command("--resume", str(run_dir)), check=False, env=ONE_THREAD,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module", params=list(CASES))
def whole(request, tmp_path_factory):
    """The run never stopped: (model name, its run directory)."""
    name = request.param
    if name not in MODELS:
        pytest.skip(f"model {name} is not available")
    run_dir = tmp_path_factory.mktemp(name) / "whole"
    done = subprocess.run(fit_command(*CASES[name], "--epochs", str(EPOCHS), "--out",
                                      str(run_dir)),
                          check=False, env=ONE_THREAD, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return name, run_dir


def test_sigkill_then_resume_ends_bit_identical(whole, tmp_path):
    name, whole_dir = whole
    run_dir = tmp_path / "killed"
    code, _ = stop_after(CASES[name], run_dir, 2, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (run_dir / "results.json").exists()
    resume(run_dir)
    assert records(run_dir) == records(whole_dir)
    assert results(run_dir) == results(whole_dir)
    if name == "macridvae":  # the schedule was followed across the resume
        assert [r["lr"] for r in records(run_dir)] == pytest.approx([1e-3] * 3 + [1e-4])


def test_ctrl_c_keeps_the_last_epoch_says_how_to_resume_and_resumes(whole, tmp_path):
    name, whole_dir = whole
    if name != "macridvae":
        pytest.skip("one model is enough for the Ctrl-C path; SIGKILL covers both")
    run_dir = tmp_path / "interrupted"
    code, err = stop_after(CASES[name], run_dir, 1, signal.SIGINT)
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: the checkpoint of epoch ") and "Traceback" not in err
    assert last.endswith(f"continue with: disentangle fit --resume {run_dir}")
    saved = int(last.split("epoch ")[1].split()[0])
    assert saved >= 1 and finished(run_dir) >= saved
    resume(run_dir)
    assert records(run_dir) == records(whole_dir)
    assert results(run_dir) == results(whole_dir)
