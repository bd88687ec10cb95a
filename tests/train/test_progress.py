"""Progress output fits pipes: off a terminal, one plain line per epoch on stderr and no bar
control characters; ``progress=False`` (``--quiet``) prints nothing per epoch."""
import pytest
import torch

from disentangle.config import resolve
from disentangle.data import load_dataset, make_split
from disentangle.models import MODELS
from disentangle.train.trainer import Trainer

EPOCHS = 3


def train(progress):
    cfg = resolve("bpr", [], [], {"data.protocol": "ratio", "train.epochs": EPOCHS,
                                  "model.batch_size": 4096})
    split = make_split(load_dataset("ml-latest-small"), "ratio", 0)
    torch.manual_seed(0)
    Trainer(MODELS["bpr"](cfg.model, split.train), split, cfg.train, progress=progress).fit()


@pytest.mark.parametrize("progress", [True, False])
def test_off_a_terminal_one_plain_line_per_epoch_and_quiet_prints_none(progress, capsys,
                                                                       one_thread):
    train(progress)  # pytest's captured stderr is not a terminal
    out, err = capsys.readouterr()
    assert "\r" not in err and "\x1b" not in err and out == ""
    lines = err.splitlines()
    if not progress:
        assert lines == []
        return
    assert len(lines) == EPOCHS
    for epoch, line in enumerate(lines, 1):
        assert line.startswith(f"bpr epoch {epoch}/{EPOCHS} loss ")
        assert " recall@20 " in line and " best " in line and line.endswith("s)")
