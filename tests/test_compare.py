"""``disentangle compare``: one split, run folders per (model, seed), reuse, the table's
statistics checked against numpy and scipy on the saved runs, and the refusals.

Two cheap models (ItemKNN in closed form, MacridVAE for two epochs at ``dim=4``) and two
seeds on a small planted CSV, so the whole module trains four tiny runs once.
"""
import hashlib
import json
import shutil

import click
import numpy as np
import pytest
import scipy.stats
import torch
from click.testing import CliRunner

from disentangle.compare import compare, format_table
from disentangle.metrics.ranking import to_torch_csr
from disentangle.runs import load_run
from disentangle_cli.compare import compare as compare_command

MODELS = ["itemknn", "macridvae"]
SEEDS = [0, 1]
FAST = ["train.ks=[5, 10]", "train.select=ndcg@10", "train.epochs=2", "macridvae:model.dim=4"]


def tiny_csv(path):
    """80 users in two taste groups over 40 items: 8 items of their group, 2 of the other."""
    rng = np.random.default_rng(0)
    rows = ["user,item"]
    for u in range(80):
        own = 20 * (u % 2) + rng.choice(20, 8, replace=False)
        other = 20 * (1 - u % 2) + rng.choice(20, 2, replace=False)
        rows += [f"u{u},i{i}" for i in [*own, *other]]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    csv = tiny_csv(tmp_path_factory.mktemp("data") / "tiny.csv")
    return {"data.dataset": f"csv:{csv}", "data.heldout_users": 10}


@pytest.fixture(scope="module")
def compared(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("compare")
    actions = []
    summary = compare(MODELS, SEEDS, out, overrides=FAST, options=data, device="cpu",
                      progress=False, on_run=lambda *a: actions.append(a[3]))
    assert actions == ["fit"] * 4
    return out, summary


def saved_results(out, model):
    return [json.loads((out / f"{model}-seed{s}" / "results.json").read_text()) for s in SEEDS]


def test_every_model_and_seed_has_its_own_run_folder_on_one_split(compared):
    out, summary = compared
    digests = set()
    for model in MODELS:
        for seed in SEEDS:
            run = out / f"{model}-seed{seed}"
            assert (run / "results.json").is_file() and (run / "best.safetensors").is_file()
            cfg = load_run(run).config
            assert (cfg.model_name, cfg.train.seed) == (model, seed)
            digests.add(hashlib.sha256((run / "split.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1  # byte-identical splits
    assert summary["ks"] == [5, 10] and summary["select"] == "ndcg@10"
    # a shared train.epochs is for the models trained by epochs: ItemKNN solves once
    assert [row["epochs"] for row in summary["models"]] == [1, 2]


def test_a_second_call_reuses_the_finished_runs_without_training(compared, data):
    out, summary = compared
    files = {p: p.stat().st_mtime_ns for p in out.glob("*-seed*/*")}
    actions = []
    again = compare(MODELS, SEEDS, out, overrides=FAST, options=data, device="cpu",
                    progress=False, on_run=lambda *a: actions.append(a[3]))
    assert actions == ["reuse"] * 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*-seed*/*")} == files
    assert again["models"] == summary["models"]


def test_mean_and_sd_over_seeds_are_numpys_on_the_saved_results(compared):
    out, summary = compared
    assert json.loads((out / "compare.json").read_text()) == summary
    for row, model in zip(summary["models"], MODELS):
        results = saved_results(out, model)
        for metric in ("ndcg@5", "ndcg@10", "recall_liang@10", "recall@5"):
            values = [r["test"][metric] for r in results]
            assert row["metrics"][metric]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert row["metrics"][metric]["sd"] == pytest.approx(np.std(values, ddof=1),
                                                                 abs=1e-12)
        seconds = [json.loads(line)["seconds"] for s in SEEDS for line in
                   (out / f"{model}-seed{s}" / "metrics.jsonl").read_text().splitlines()]
        assert row["seconds_per_epoch"] == pytest.approx(np.median(seconds))
        assert row["peak_rss_mb"] > max(r["baseline_rss_mb"] for r in row["runs"]) > 0
    # ItemKNN is closed form: both seeds give the same model, sd 0
    assert summary["models"][0]["metrics"]["ndcg@10"]["sd"] == 0
    table = (out / "compare.md").read_text()
    assert table.strip() == format_table(summary)
    mean, sd = (summary["models"][1]["metrics"]["ndcg@10"][k] for k in ("mean", "sd"))
    assert "| macridvae | 2 | " in table and f"{mean:.4f} ± {sd:.4f}" in table
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def per_user_ndcg(run, k):
    """NDCG@k per test user, ranked with numpy from the model's scores."""
    test = run.split.test
    with torch.no_grad():
        scores = run.model.score(torch.from_numpy(test.users),
                                 to_torch_csr(test.history)).numpy()
    scores[test.history.toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    target = test.target.toarray() > 0
    gains = np.take_along_axis(target, top, axis=1) / np.log2(np.arange(2, k + 2))
    ideal = [(1 / np.log2(np.arange(2, min(k, n) + 2))).sum() for n in target.sum(1)]
    return np.where(target.sum(1) > 0, gains.sum(1) / np.maximum(ideal, 1e-12), 0.0)


def test_the_paired_test_is_scipys_wilcoxon_on_per_user_ndcg_averaged_over_seeds(compared):
    out, summary = compared
    assert summary["paired_test"]["metric"] == "ndcg@10"
    per_user = {}
    for model in MODELS:
        values = []
        for seed, results in zip(SEEDS, saved_results(out, model)):
            v = per_user_ndcg(load_run(out / f"{model}-seed{seed}"), 10)
            assert v.mean() == pytest.approx(results["test"]["ndcg@10"], abs=1e-6)
            values.append(v)
        per_user[model] = np.mean(values, axis=0)
    expected = scipy.stats.wilcoxon(per_user["macridvae"], per_user["itemknn"])
    paired = summary["models"][1]["paired"]
    assert paired["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert paired["mean_difference"] == pytest.approx(
        (per_user["macridvae"] - per_user["itemknn"]).mean(), abs=1e-9)
    assert paired["users"] == summary["test_users"] == 10
    assert "paired" not in summary["models"][0]  # the reference


def test_more_epochs_resume_the_runs_and_another_config_is_refused(compared, data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(compared[0], out)
    with pytest.raises(ValueError, match=r"macridvae-seed0 holds a run of another config "
                                         r"\(model.dim: 4 -> 8\)"):
        compare(MODELS, SEEDS, out, overrides=[*FAST, "macridvae:model.dim=8"], options=data)
    actions = []
    summary = compare(MODELS, SEEDS, out, overrides=[*FAST, "macridvae:train.epochs=3"],
                      options=data, device="cpu", progress=False,
                      on_run=lambda *a: actions.append(a[3]))
    assert actions == ["reuse", "reuse", "resume", "resume"]
    for seed in SEEDS:
        lines = (out / f"macridvae-seed{seed}" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert summary["models"][1]["epochs"] == 3


def test_a_protocol_a_model_cannot_run_is_refused_before_anything_trains(tmp_path, data):
    with pytest.raises(ValueError, match=r"^protocol heldout \(from the first model, "
                                         r"macridvae\) scores users unseen in training, which "
                                         r"bpr cannot; compare with --protocol ratio"):
        compare(["macridvae", "bpr"], SEEDS, tmp_path / "out", options=data)
    with pytest.raises(ValueError, match=r"^protocol heldout \(from --protocol\)"):
        compare(["bpr", "itemknn"], SEEDS, tmp_path / "out", options=data,
                protocol="heldout")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides, message", [
    (["macridvae:data.seed=1"], "every model is trained on the same data"),
    (["train.seed=3"], "each run's seed is set by the seeds compared"),
    (["nope:train.lr=0.1"], "'nope' is not one of the compared models"),
])
def test_overrides_that_would_break_the_shared_split_or_seeds_are_refused(tmp_path, overrides,
                                                                          message):
    with pytest.raises(ValueError, match=message):
        compare(MODELS, SEEDS, tmp_path / "out", overrides=overrides)


def cli():
    group = click.Group()
    group.add_command(compare_command)
    return group


def test_the_command_prints_the_table_and_an_unknown_model_exits_2(compared, data):
    out, summary = compared
    args = ["compare", "--models", ",".join(MODELS), "--seeds", "2", "--dataset",
            data["data.dataset"], "--set", "data.heldout_users=10", "--out", str(out),
            "--device", "cpu", "--quiet", *[a for o in FAST for a in ("--set", o)]]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    assert format_table(summary) in result.output
    result = CliRunner().invoke(cli(), ["compare", "--models", "macridvae,nope"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: unknown model 'nope'; known: macridvae")


def test_an_error_in_the_training_process_is_one_line_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(cli(), ["compare", "--models", "itemknn", "--seeds", "1",
                                        "--dataset", f"csv:{tmp_path / 'none.csv'}",
                                        "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'none.csv'}: no such file"
    assert not (tmp_path / "out").exists()
