"""The run folder's owner, on its own: atomic writes under the umask, the lock, stale
temporary files, bounded reads, the signature checked on load, and a diverged model never
kept by the trainer."""
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

from disentangle.config import resolve
from disentangle.runs import (
    BEST,
    CONFIG,
    LAST,
    CheckpointError,
    RunFolder,
    RunFolderError,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
)
from disentangle.train import NonFiniteModel, Trainer
from disentangle.train.run import build_model, build_split, fit
from disentangle.train.trainer import finite_scores


@pytest.fixture(scope="module")
def small():
    cfg = resolve("macridvae", overrides=["model.dim=4", "train.epochs=2"])
    return cfg, build_split(cfg)


@pytest.fixture
def no_hang():
    """Fail instead of blocking forever (a FIFO opened for reading waits for a writer)."""
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("blocked"))
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_atomic_write_honours_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "f", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_the_lock_is_exclusive_and_released(tmp_path):
    folder = RunFolder(tmp_path)
    with folder.lock():
        with pytest.raises(RunFolderError, match="another process is training into"), \
                RunFolder(tmp_path).lock():
            pass
    with RunFolder(tmp_path).lock():  # free again
        pass
    assert not any(tmp_path.iterdir())  # the lock adds no file


def test_remove_temporary_takes_the_folder_own_files_only(tmp_path):
    ours = [tmp_path / ".best.safetensors.a1.tmp", tmp_path / ".config.yaml.b2.tmp"]
    theirs = [tmp_path / ".mine.txt.c3.tmp", tmp_path / "best.safetensors.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"x")
    assert sorted(RunFolder(tmp_path).remove_temporary()) == sorted(ours)
    assert sorted(tmp_path.iterdir()) == sorted(theirs)


def test_check_new_accepts_absent_and_empty_and_refuses_the_rest(tmp_path):
    RunFolder(tmp_path / "absent").check_new()
    RunFolder(tmp_path).check_new()
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="exists and is not empty"):
        RunFolder(tmp_path).check_new()
    with pytest.raises(RunFolderError, match="exists and is not a folder"):
        RunFolder(tmp_path / "f").check_new()


def test_a_fifo_is_refused_without_blocking(tmp_path, no_hang):
    os.mkfifo(tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match=r"c.safetensors: is a FIFO"):
        load_checkpoint(tmp_path / "c.safetensors")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_link_to_dev_zero_is_refused(tmp_path, no_hang):
    (tmp_path / "c.safetensors").symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="is a character device"):
        load_checkpoint(tmp_path / "c.safetensors")


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "c.safetensors"
    with open(path, "wb") as f:
        f.truncate(3 << 20)
    with pytest.raises(CheckpointError, match="3.0 MiB, larger than the 1.0 MiB limit"):
        load_checkpoint(path, max_bytes=1 << 20)


def test_the_sha256_is_returned_and_stays_out_of_a_resave(tmp_path):
    path = tmp_path / "c.safetensors"
    digest = save_checkpoint(path, {"w": torch.ones(3)}, {"epoch": 1})
    tensors, meta = load_checkpoint(path)
    assert meta["sha256"] == digest
    save_checkpoint(path, tensors, {**meta, "epoch": 2})
    assert load_checkpoint(path)[1]["epoch"] == 2


def signed_run(tmp_path, cfg, split):
    """A run folder with config, split and a best checkpoint signed with both."""
    folder = RunFolder(tmp_path / "run")
    folder.create()
    folder.write_config(cfg)
    folder.save_split(split)
    model = build_model(cfg, split)
    folder.save_model(BEST, model.state_dict(), {"model": model.name, "epoch": 1})
    return folder, model


def reopened(folder):
    again = RunFolder(folder.path)
    cfg = again.read_config()
    split = again.load_split()
    return again, build_model(cfg, split)


def test_a_signed_checkpoint_loads_and_an_edited_config_is_refused(tmp_path, small):
    folder, _ = signed_run(tmp_path, *small)
    again, model = reopened(folder)
    state, _, meta = again.read_model(BEST, model)
    assert meta["epoch"] == 1 and set(state) == set(model.state_dict())
    raw = yaml.safe_load(folder.file(CONFIG).read_text())
    raw["train"]["epochs"] = 7  # the one value a run may change
    folder.file(CONFIG).write_text(yaml.safe_dump(raw))
    again, model = reopened(folder)
    again.read_model(BEST, model)
    raw["model"]["beta"] = 0.5
    folder.file(CONFIG).write_text(yaml.safe_dump(raw))
    again, model = reopened(folder)
    with pytest.raises(CheckpointError, match=r"config.yaml: differs from the config "
                                              r"best.safetensors was trained with "
                                              r"\(model.beta: 0.2 -> 0.5\)"):
        again.read_model(BEST, model)


def test_a_checkpoint_larger_than_its_model_needs_is_refused(tmp_path, small):
    folder, model = signed_run(tmp_path, *small)
    path = folder.file(BEST)
    with open(path, "ab") as f:
        f.truncate(path.stat().st_size + (20 << 20))
    with pytest.raises(CheckpointError, match=r"best.safetensors: 20.\d MiB, more than a "
                                              r"best.safetensors of this model can hold"):
        folder.read_model(BEST, model)


def test_a_non_finite_checkpoint_is_refused(tmp_path, small):
    folder, model = signed_run(tmp_path, *small)
    tensors, meta = load_checkpoint(folder.file(BEST))
    name = next(k for k in sorted(tensors) if tensors[k].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("inf"))
    save_checkpoint(folder.file(BEST), tensors, meta)
    with pytest.raises(CheckpointError, match="the model holds NaN or infinite values"):
        folder.read_model(BEST, model)


def test_nan_scores_are_never_ranked():
    score = finite_scores(lambda users, history: torch.tensor([[0.1, float("nan")]]))
    with pytest.raises(NonFiniteModel, match="scores hold NaN or infinite values"):
        score(None, None)


def blow_up_after(epochs):
    """``Trainer._train_epoch`` that makes a weight infinite in epoch ``epochs`` + 1, after
    the epoch's updates (as an overflowing update would)."""
    original = Trainer._train_epoch

    def train_epoch(self):
        record = original(self)
        if self.epoch >= epochs:
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = float("inf")
        return record
    return train_epoch


def test_a_model_that_turns_infinite_is_never_saved(tmp_path, small, monkeypatch):
    cfg, split = small
    monkeypatch.setattr(Trainer, "_train_epoch", blow_up_after(1))
    folder = RunFolder(tmp_path)
    trainer = Trainer(build_model(cfg, split), split, cfg.train, folder, progress=False)
    with pytest.raises(NonFiniteModel, match="became NaN or infinite in epoch 2 .*the "
                                             "checkpoint of epoch 1 is kept"):
        trainer.fit()
    for name in (BEST, LAST):
        tensors, meta = load_checkpoint(folder.file(name))
        assert meta["epoch"] == 1
        assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))
    assert [r["epoch"] for r in folder.read_metrics()] == [1]


def test_fit_that_diverges_in_its_first_epoch_removes_its_folder(tmp_path, small,
                                                                   monkeypatch):
    cfg, _ = small
    monkeypatch.setattr(Trainer, "_train_epoch", blow_up_after(0))
    with pytest.raises(NonFiniteModel, match="in epoch 1"):
        fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
