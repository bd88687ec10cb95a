"""Checkpoints: round trip, refusal of tampered, truncated and pickled files."""
import pickle

import numpy as np
import pytest
import torch

from disentangle.runs.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from disentangle.train.checkpoint import load_optimizer, optimizer_tensors


def test_round_trip_keeps_tensors_and_meta(tmp_path):
    t = {"w": torch.randn(3, 4), "step": torch.tensor([7])}
    save_checkpoint(tmp_path / "c.safetensors", t, {"epoch": 2, "name": "x"})
    back, meta = load_checkpoint(tmp_path / "c.safetensors")
    assert torch.equal(back["w"], t["w"]) and meta["epoch"] == 2 and meta["name"] == "x"


def test_empty_tensors_round_trip_whatever_their_stride(tmp_path):
    """numpy's empty arrays (e.g. no validation users) arrive with stride 0."""
    empty = torch.from_numpy(np.unique(np.array([], dtype=np.int64)))
    save_checkpoint(tmp_path / "c.safetensors", {"users": empty, "rows": torch.zeros(0, 3)}, {})
    back, _ = load_checkpoint(tmp_path / "c.safetensors")
    assert back["users"].shape == (0,) and back["users"].dtype == torch.int64
    assert back["rows"].shape == (0, 3)


def test_flipped_byte_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.zeros(100)}, {"epoch": 1})
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.zeros(100)}, {"epoch": 1})
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="not a disentangle checkpoint"):
        load_checkpoint(path)


class Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickle_crafted_to_run_code_is_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    p = torch.nn.Parameter(torch.randn(5))
    opt = torch.optim.Adam([p], lr=0.1)
    p.sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "o.safetensors", *optimizer_tensors(opt))
    tensors, meta = load_checkpoint(tmp_path / "o.safetensors")
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = torch.optim.Adam([q], lr=0.5)
    load_optimizer(opt2, tensors, meta)
    for o in (opt, opt2):
        o.zero_grad()
    p.sum().backward()
    q.sum().backward()
    opt.step()
    opt2.step()
    assert torch.equal(p, q)
