"""Run folders under an adversarial user: diverged models, edited or swapped run files, files
that are not regular files, two processes in one folder, bad devices, signals and the umask.

Each case of the table builds its arguments (and damages a copy of a fitted run), runs them
through click's test runner and checks the message and the exit code; the cases that need a
real process (two at once, SIGTERM) run the console program in a subprocess.
"""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from disentangle.runs.checkpoint import load_checkpoint, save_checkpoint
from disentangle_cli.main import main

TINY = ["--model", "macridvae", "--set", "model.dim=4", "--quiet", "--no-report"]
FILES = ("config.yaml", "data.json", "split.safetensors", "metrics.jsonl", "best.safetensors",
         "last.safetensors", "results.json")


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_failure(result, code):
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.output
    assert sum(line.startswith("error") for line in lines) == 1, result.output


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A finished two-epoch MacridVAE run."""
    out = tmp_path_factory.mktemp("fitted") / "run"
    result = invoke(["fit", *TINY, "--epochs", "2", "--out", out])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """A run of the same model on another split (data seed 3), never trained."""
    out = tmp_path_factory.mktemp("other") / "run"
    result = invoke(["fit", *TINY, "--epochs", "0", "--set", "data.seed=3", "--out", out])
    assert result.exit_code == 0, result.output
    return out


# -- damage done to a copy of the fitted run -----------------------------------------------
def nan_model(path):
    """Re-save a checkpoint (valid checksum, same signature) with a NaN in its first model
    tensor: a diverged model written by someone else."""
    tensors, meta = load_checkpoint(path)
    name = next(k for k in sorted(tensors) if k.startswith("model.")
                and tensors[k].is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_checkpoint(path, tensors, meta)


def fifo(path):
    path.unlink()
    os.mkfifo(path)


def dev_zero(path):
    path.unlink()
    path.symlink_to("/dev/zero")


def huge(path):
    """A sparse 2 GiB file: larger than any cap, and costs no disk."""
    path.unlink()
    with open(path, "wb") as f:
        f.truncate(2 << 30)


def grown(path):
    """The checkpoint padded by 40 MiB of zeros (sparse): far more than its model needs."""
    with open(path, "ab") as f:
        f.truncate(path.stat().st_size + (40 << 20))


def edit(old, new):
    def go(path):
        text = path.read_text()
        assert old in text, (old, text)
        path.write_text(text.replace(old, new, 1))
    return go


def stale_tmp(path):
    """A temporary file of a write killed mid-way, beside ``path``."""
    (path.parent / f".{path.name}.0123abcd.tmp").write_bytes(b"half a checkpoint")


def run_copy(tmp, fitted):
    out = tmp / "copy"
    shutil.copytree(fitted, out)
    return out


def damaged(name, change, *command, resume=False):
    """Args of ``command`` (evaluate, recommend, inspect; or fit --resume) on a copy of the
    fitted run whose file ``name`` went through ``change``."""
    def build(tmp, fitted, other):
        out = run_copy(tmp, fitted)
        change(out / name)
        if resume:
            return ["fit", "--resume", out, "--quiet", "--no-report", *command]
        args = list(command or ["evaluate"])
        if args[0] == "recommend":
            user = json.loads((out / "data.json").read_text())["user_ids"][0]
            args += ["--user", user]
        return [args[0], out, *args[1:]]
    return build


def swapped_split(tmp, fitted, other):
    """The split files of another run (both checksums valid) in the fitted run's folder."""
    out = run_copy(tmp, fitted)
    for name in ("split.safetensors", "data.json"):
        shutil.copy(other / name, out / name)
    return ["evaluate", out]


def locked(command):
    """``command`` on a folder another process owns (a lock held here, on an open
    descriptor: the same as another process's)."""
    def build(tmp, fitted, other):
        out = run_copy(tmp, fitted) if command == "resume" else tmp / "empty"
        out.mkdir(exist_ok=True)
        fd = os.open(out, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # closed with the test's process
        LOCKS.append(fd)
        if command == "resume":
            return ["fit", "--resume", out, "--quiet", "--no-report"]
        return ["fit", *TINY, "--epochs", "0", "--out", out]
    return build


LOCKS: list[int] = []


@pytest.fixture(autouse=True)
def release_locks():
    yield
    while LOCKS:
        os.close(LOCKS.pop())


def fit_with(*extra):
    return lambda tmp, fitted, other: ["fit", *TINY, *extra, "--out", tmp / "out"]


# (id, build(tmp, fitted, other) -> args, message substring, exit code)
CASES = [
    # -- 1. non-finite models -------------------------------------------------------------
    ("evaluate-nan-best", damaged("best.safetensors", nan_model),
     "best.safetensors: the model holds NaN or infinite values", 2),
    ("recommend-nan-best", damaged("best.safetensors", nan_model, "recommend"),
     "best.safetensors: the model holds NaN or infinite values", 2),
    ("inspect-nan-best", damaged("best.safetensors", nan_model, "inspect"),
     "best.safetensors: the model holds NaN or infinite values", 2),
    ("resume-nan-last", damaged("last.safetensors", nan_model, resume=True),
     "last.safetensors: the model holds NaN or infinite values", 2),
    ("resume-nan-best", damaged("best.safetensors", nan_model, resume=True),
     "best.safetensors: the model holds NaN or infinite values", 2),
    ("fit-loss-nan-epoch-1", fit_with("--epochs", "2", "--set", "model.tau=1e-300"),
     "loss is nan at epoch 1, step 0; training stopped", 2),
    # -- 3. one owner, everything that defines the model checked ---------------------------
    ("evaluate-edited-tau", damaged("config.yaml", edit("tau: 0.1", "tau: 0.2")),
     ("config.yaml: differs from the config best.safetensors was trained with (model.tau: "
      "0.1 -> 0.2)"), 2),
    ("evaluate-edited-data", damaged("config.yaml", edit("rating_threshold: 4.0",
                                                         "rating_threshold: 3.0")),
     "(data.rating_threshold: 4.0 -> 3.0)", 2),
    ("evaluate-edited-lr", damaged("config.yaml", edit("lr: 0.001", "lr: 0.01")),
     "(train.lr: 0.001 -> 0.01)", 2),
    ("resume-edited-tau", damaged("config.yaml", edit("tau: 0.1", "tau: 0.2"), resume=True),
     "config.yaml: differs from the config last.safetensors was trained with", 2),
    ("resume-edited-epochs-below-done", damaged("config.yaml", edit("epochs: 2", "epochs: 1"),
                                                resume=True),
     "config.yaml: train.epochs=1, but the run has done 2 epochs", 2),
    ("evaluate-edited-epochs", damaged("config.yaml", edit("epochs: 2", "epochs: 1")),
     "test metrics (heldout protocol", 0),
    ("evaluate-swapped-split", swapped_split,
     "split.safetensors: not the split best.safetensors was trained on", 2),
    ("resume-epochs-below-done", damaged("config.yaml", lambda p: None, "--epochs", "1",
                                         resume=True),
     "--epochs 1: the run in", 2),
    ("resume-finished-same-epochs", damaged("config.yaml", lambda p: None, "--epochs", "2",
                                            resume=True),
     "best epoch", 0),
    ("resume-removes-stale-tmp", damaged("last.safetensors", stale_tmp, resume=True),
     "test metrics (heldout protocol", 0),
    ("fit-into-locked-folder", locked("fit"),
     "empty: another process is training into this run folder", 2),
    ("resume-locked-run", locked("resume"),
     "copy: another process is training into this run folder", 2),
    # -- 4. bounded reads -------------------------------------------------------------------
    ("evaluate-best-fifo", damaged("best.safetensors", fifo),
     "best.safetensors: is a FIFO (named pipe); expected a regular file", 2),
    ("evaluate-best-dev-zero", damaged("best.safetensors", dev_zero),
     "best.safetensors: is a character device (a link to /dev/zero)", 2),
    ("evaluate-best-2gib", damaged("best.safetensors", huge),
     "best.safetensors: 2048.0 MiB, more than a best.safetensors of this model can hold", 2),
    ("evaluate-best-padded", damaged("best.safetensors", grown),
     "MiB, more than a best.safetensors of this model can hold (16.", 2),
    ("resume-last-padded", damaged("last.safetensors", grown, resume=True),
     "MiB, more than a last.safetensors of this model can hold (16.", 2),
    ("resume-best-missing", damaged("best.safetensors", Path.unlink, resume=True),
     "best.safetensors: missing (the run's best model, of epoch 2, was saved there)", 2),
    ("evaluate-config-cut-short", damaged("config.yaml", lambda p: p.write_text(
        p.read_text()[:200])), "config.yaml: no version line (cut short", 2),
    ("evaluate-split-fifo", damaged("split.safetensors", fifo),
     "split.safetensors: is a FIFO", 2),
    ("evaluate-data-fifo", damaged("data.json", fifo), "data.json: is a FIFO", 2),
    ("evaluate-config-fifo", damaged("config.yaml", fifo), "config.yaml: is a FIFO", 2),
    ("evaluate-config-dev-zero", damaged("config.yaml", dev_zero),
     "config.yaml: is a character device", 2),
    ("evaluate-config-huge", damaged("config.yaml", huge), "config.yaml: 2.0 GiB", 2),
    ("evaluate-split-huge", damaged("split.safetensors", huge), "split.safetensors: 2.0 GiB",
     2),
    ("resume-metrics-fifo", damaged("metrics.jsonl", fifo, resume=True),
     "metrics.jsonl: is a FIFO", 2),
    ("inspect-metrics-dev-zero", damaged("metrics.jsonl", dev_zero, "inspect"),
     "metrics.jsonl: is a character device", 2),
    # -- 5, 6. devices ----------------------------------------------------------------------
    ("fit-device-nonsense", fit_with("--epochs", "0", "--device", "nonsense"),
     "error: --device nonsense: expected auto, cpu, cuda, cuda:N or mps", 2),
    ("fit-device-cpu-index", fit_with("--epochs", "0", "--device", "cpu:1"),
     "--device cpu:1: expected auto", 2),
    ("fit-device-empty", fit_with("--epochs", "0", "--device", ""), "--device : expected", 2),
    pytest.param("fit-device-cuda-index", fit_with("--epochs", "0", "--device", "cuda:99"),
                 "--device cuda:99: ", 2, id="fit-device-cuda-index"),
    # -- 5. sizes no machine can allocate ---------------------------------------------------
    ("fit-huge-num-factors", fit_with("--epochs", "1", "--set", "model.num_factors=1000000000"),
     "model.num_factors=1000000000 is out of range: expected num_factors * dim <= 65536", 2),
    ("evaluate-device-nonsense", lambda t, f, o: ["evaluate", f, "--device", "gpu"],
     "--device gpu: expected auto", 2),
    ("resume-device-nonsense", damaged("config.yaml", lambda p: None, "--device", "tpu",
                                       resume=True), "--device tpu: expected auto", 2),
]


@pytest.mark.parametrize("name, build, message, code",
                         [c if hasattr(c, "marks") else pytest.param(*c, id=c[0]) for c in CASES])
def test_run_folder_case(tmp_path, fitted, other, name, build, message, code):
    args = build(tmp_path, fitted, other)
    start = time.monotonic()
    result = invoke(args)
    assert time.monotonic() - start < 60, "took too long (blocked on a read?)"
    assert message in result.output, result.output
    if code:
        assert_one_line_failure(result, code)
    else:
        assert result.exit_code == 0 and result.exception is None, result.output
    # no usage error leaves a folder that blocks the same --out
    if "--out" in args and code == 2:
        out = Path(args[args.index("--out") + 1])
        assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def test_a_finished_run_resumed_with_fewer_epochs_is_refused_and_left_unchanged(tmp_path,
                                                                               fitted):
    out = run_copy(tmp_path, fitted)
    before = {name: (out / name).read_bytes() for name in FILES}
    result = invoke(["fit", "--resume", out, "--epochs", "1", "--quiet", "--no-report"])
    assert_one_line_failure(result, 2)
    assert "has already done 2 epochs; give --epochs 2 or more" in result.output
    assert {name: (out / name).read_bytes() for name in FILES} == before


def test_a_finished_run_resumed_with_more_epochs_extends_it_and_its_config(tmp_path, fitted):
    out = run_copy(tmp_path, fitted)
    result = invoke(["fit", "--resume", out, "--epochs", "3", "--quiet", "--no-report"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 3
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text()
              .splitlines()]
    assert epochs == [1, 2, 3]
    assert invoke(["evaluate", out]).exit_code == 0  # the raised epochs are not an edit


def test_resume_removes_only_its_own_stale_temporary_files(tmp_path, fitted):
    out = run_copy(tmp_path, fitted)
    ours = [out / ".last.safetensors.0123abcd.tmp", out / ".metrics.jsonl.ffff0000.tmp"]
    theirs = [out / ".notes.txt.1.tmp", out / "notes.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"x")
    result = invoke(["fit", "--resume", out, "--quiet", "--no-report"])
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)


def test_a_run_diverging_in_its_first_epoch_leaves_no_folder_and_the_out_is_free(tmp_path):
    out = tmp_path / "out"
    bad = invoke(["fit", *TINY, "--epochs", "1", "--set", "model.tau=1e-300", "--out", out])
    assert_one_line_failure(bad, 2)
    assert not out.exists()
    good = invoke(["fit", *TINY, "--epochs", "0", "--out", out])
    assert good.exit_code == 0, good.output


def test_a_run_diverging_into_an_existing_empty_folder_leaves_it_empty(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    bad = invoke(["fit", *TINY, "--epochs", "1", "--set", "model.tau=1e-300", "--out", out])
    assert_one_line_failure(bad, 2)
    assert out.is_dir() and not any(out.iterdir())


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_every_file_of_a_run_honours_the_umask(tmp_path, umask):
    out = tmp_path / "out"
    previous = os.umask(umask)
    try:
        result = invoke(["fit", *TINY, "--epochs", "1", "--out", out])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert set(modes) == set(FILES)
    assert modes == dict.fromkeys(FILES, 0o666 & ~umask)


# -- real processes ----------------------------------------------------------------------
def fit_process(*args):
    return subprocess.Popen([sys.executable, "-m", "disentangle_cli.main", "fit", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(proc, out, epochs, timeout=120):
    deadline = time.monotonic() + timeout
    metrics = out / "metrics.jsonl"
    while not metrics.exists() or len(metrics.read_text().splitlines()) < epochs:
        if proc.poll() is not None:
            pytest.fail(f"fit ended early:\n{proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("fit did not reach its first epoch")
        time.sleep(0.05)


def test_sigterm_saves_says_how_to_resume_and_a_second_process_is_locked_out(tmp_path):
    out = tmp_path / "run"
    proc = fit_process(*TINY, "--epochs", "500", "--out", out)
    try:
        wait_for_epochs(proc, out, 1)
        # this process is the second one: the lock is on the folder, not on a process id
        second = invoke(["fit", "--resume", out, "--quiet"])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_one_line_failure(second, 2)
    assert second.output.strip() == (f"error: {out}: another process is training into this "
                                     f"run folder (fit or fit --resume); wait for it to end or "
                                     f"choose another --out")
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("terminated (SIGTERM): the checkpoint of epoch ") and \
        "Traceback" not in err
    assert last.endswith(f"of 500 is kept in {out}; continue with: disentangle fit --resume "
                         f"{out}")
    saved = int(last.split("epoch ")[1].split()[0])
    assert saved >= 1
    assert not list(out.glob(".*.tmp"))
    done = invoke(["fit", "--resume", out, "--epochs", str(saved), "--quiet", "--no-report"])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "results.json").read_text())["best_epoch"] <= saved
