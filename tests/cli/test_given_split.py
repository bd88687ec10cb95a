"""``fit`` on a folder in LightGCN's format (train.txt / test.txt), with and without a
validation set carved from train.txt."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from disentangle_cli.main import main

FAST = ["--model", "disengcn", "--dataset", "gowalla", "--protocol", "given", "--epochs", "3",
        "--set", "model.num_factors=2", "--set", "model.factor_dim=4", "--quiet", "--no-report"]


@pytest.fixture(scope="module")
def lightgcn_dir(tmp_path_factory):
    """40 users over 30 items, 12 training and 3 test items each."""
    root = tmp_path_factory.mktemp("lightgcn")
    rng = np.random.default_rng(0)
    train, test = [], []
    for u in range(40):
        items = rng.choice(30, 15, replace=False)
        train.append(" ".join(map(str, [u, *items[:12]])))
        test.append(" ".join(map(str, [u, *items[12:]])))
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    return root


def fit(root, out, *extra):
    result = CliRunner().invoke(main, ["fit", *FAST, "--data-dir", str(root), "--out", str(out),
                                       *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_validation_is_carved_from_train_and_selects_the_epoch(lightgcn_dir, tmp_path):
    output = fit(lightgcn_dir, tmp_path / "run")
    assert "by validation" in output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["valid"]["users"] == 40 and results["test"]["users"] == 40
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all("valid" in r for r in records)


def test_valid_ratio_zero_trains_on_all_of_train_and_keeps_the_last_epoch(lightgcn_dir,
                                                                          tmp_path):
    out = tmp_path / "refit"
    output = fit(lightgcn_dir, out, "--set", "data.valid_ratio=0")
    assert "best epoch 3 (the last; no validation set)" in output
    results = json.loads((out / "results.json").read_text())
    assert "valid" not in results and results["best_epoch"] == 3
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert not any("valid" in r for r in records)
    best, last = load_file(out / "best.safetensors"), load_file(out / "last.safetensors")
    for key in ("model.user_embedding.weight", "model.item_embedding.weight"):
        torch.testing.assert_close(best[key], last[key], rtol=0, atol=0)
    # every training interaction trains: 12 per user, none held out for validation
    split = load_file(out / "split.safetensors")
    assert len(split["train.users"]) == 40 * 12 and len(split["valid.users"]) == 0
    again = CliRunner().invoke(main, ["evaluate", str(out)])
    assert again.exit_code == 0, again.output
    table = lambda text: [l for l in text.splitlines() if l.startswith(("ndcg", "recall"))]
    assert table(again.output) == table(output)
    # a refit continues like any run: two more epochs, and the last one is kept
    more = CliRunner().invoke(main, ["fit", "--resume", str(out), "--epochs", "5", "--quiet",
                                     "--no-report"])
    assert more.exit_code == 0, more.output
    assert "best epoch 5 (the last; no validation set)" in more.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    report = CliRunner().invoke(main, ["inspect", str(out), "--tsne-items", "20"])
    assert report.exit_code == 0, report.output
    html = (out / "inspect" / "report.html").read_text()
    assert "5, the last (no validation set)" in html and "by validation" not in html


def test_a_validation_share_too_small_to_validate_anyone_is_an_error(lightgcn_dir, tmp_path):
    """Only valid_ratio=0 asks for no validation; 5% of 12 items is none, and says so."""
    result = CliRunner().invoke(main, ["fit", *FAST, "--data-dir", str(lightgcn_dir), "--out",
                                       str(tmp_path / "r"), "--set", "data.valid_ratio=0.05"])
    assert result.exit_code != 0
    assert "too small for the given protocol" in result.output
    assert not (tmp_path / "r").exists()
