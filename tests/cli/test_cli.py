"""The command line through click's test runner, on the embedded dataset."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from disentangle_cli.main import main

FAST = ["--epochs", "2", "--set", "model.dim=16", "--quiet", "--no-report"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    result = CliRunner().invoke(main, ["fit", "--model", "macridvae", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_fit_writes_a_run_and_prints_test_metrics_beside_popularity(vae_run):
    out, output = vae_run
    assert "Recall@k = hits / min(k, |test|) (Liang et al.)" in output
    assert "popularity" in output and "ndcg@100" in output
    for name in ("config.yaml", "data.json", "split.safetensors", "metrics.jsonl",
                 "best.safetensors", "last.safetensors", "results.json"):
        assert (out / name).is_file(), name
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "results.json").read_text())["protocol"] == "heldout"


def test_evaluate_reproduces_the_fit_results(vae_run):
    out, output = vae_run
    result = CliRunner().invoke(main, ["evaluate", str(out)])
    assert result.exit_code == 0, result.output
    table = lambda text: [l for l in text.splitlines() if l.startswith(("ndcg", "recall"))]
    assert table(result.output) == table(output)


def test_recommend_prints_titles_and_factors(vae_run):
    out, _ = vae_run
    user = json.loads((out / "data.json").read_text())["user_ids"][0]
    result = CliRunner().invoke(main, ["recommend", str(out), "--user", user, "-k", "5"])
    assert result.exit_code == 0, result.output
    rows = [l for l in result.output.splitlines()[2:] if l.strip()]
    assert len(rows) == 5 and all("(" in r for r in rows)  # MovieLens titles carry the year


def test_version_names_torch_and_pyg_without_importing_them():
    code = ("import sys; from click.testing import CliRunner; "
            "from disentangle_cli.main import main; "
            "out = CliRunner().invoke(main, ['--version']).output; "
            "assert 'torch 2.' in out and 'torch-geometric 2.' in out, out; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_recommend_refuses_nan_scores_instead_of_ranking_them(vae_run, monkeypatch):
    from disentangle.models import MacridVAE

    out, _ = vae_run
    user = json.loads((out / "data.json").read_text())["user_ids"][0]
    monkeypatch.setattr(MacridVAE, "score",
                        lambda self, users, history: torch.full((1, self.num_items), torch.nan))
    result = CliRunner().invoke(main, ["recommend", str(out), "--user", user])
    assert result.exit_code == 2
    assert "scores hold NaN or infinite values" in result.output


def test_recommend_unknown_user_is_a_one_line_usage_error(vae_run):
    out, _ = vae_run
    result = CliRunner().invoke(main, ["recommend", str(out), "--user", "nobody"])
    assert result.exit_code == 2
    assert "unknown user id 'nobody'" in result.output


def test_bad_config_value_is_one_line_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(main, ["fit", "--model", "macridvae", "--set", "model.tau=-1",
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: model.tau=-1.0 is out of range: expected a "
                                     "float > 0")


def test_datasets_lists_the_embedded_one_with_counts():
    result = CliRunner().invoke(main, ["datasets"])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if l.startswith("ml-latest-small"))
    assert "603 users" in line and "6298 items" in line and "48562 interactions" in line


def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys; from disentangle_cli.main import main; "
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    subprocess.run([sys.executable, "-c", code], check=True)
    for cmd in ([], ["fit"], ["evaluate"], ["recommend"], ["datasets"], ["compare"], ["tune"]):
        result = CliRunner().invoke(main, [*cmd, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_recommend_explain_names_factor_categories_and_driving_items(vae_run):
    out, _ = vae_run
    user = json.loads((out / "data.json").read_text())["user_ids"][0]
    result = CliRunner().invoke(main, ["recommend", str(out), "--user", user, "-k", "3",
                                       "--explain"])
    assert result.exit_code == 0, result.output
    assert result.output.count("factor") >= 3


def test_datasets_names_the_download_command_for_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("DISENTANGLE_DATA", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["datasets"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "interactions" in lines["ml-latest-small"]  # embedded
    assert "get it with: disentangle download gowalla" in lines["gowalla"]
    assert str(tmp_path / "disentangle" / "gowalla") in lines["gowalla"]
    assert "disentangle download ml-20m --no-verify" in lines["ml-20m"]


def test_a_bad_column_mapping_is_a_one_line_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["fit", "--model", "ease", "--columns", "user=a,who=b",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.startswith("error: data.columns='user=a,who=b' is out of range")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("protocol", ["temporal", "temporal-global"])
def test_fit_with_a_temporal_protocol_on_a_timestamped_csv(tmp_path, protocol):
    from disentangle.data.sources import dataset_dir

    ratings = dataset_dir("ml-latest-small") / "ratings.csv.gz"
    result = CliRunner().invoke(main, ["fit", "--model", "ease", "--dataset", f"csv:{ratings}",
                                       "--protocol", protocol, "--out", str(tmp_path / "r"),
                                       "--quiet", "--no-report"])
    assert result.exit_code == 0, result.output
    assert f"test metrics ({protocol} protocol" in result.output
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["protocol"] == protocol


def test_a_temporal_protocol_without_timestamps_is_a_one_line_error(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("".join(f"u{u},i{i}\n" for u in range(6) for i in range(6)))
    result = CliRunner().invoke(main, ["fit", "--model", "ease", "--dataset", f"csv:{path}",
                                       "--protocol", "temporal", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.startswith("error: a temporal protocol needs the time of each "
                                    "interaction")


def test_protocol_choices_are_the_data_layers():
    """The CLI lists the protocols without importing the data layer (``--help`` stays fast);
    its lists must be the data layer's table."""
    from disentangle.data import PROTOCOLS
    from disentangle_cli.compare import compare
    from disentangle_cli.main import fit

    for command in (fit, compare):
        option = next(p for p in command.params if p.name == "protocol")
        assert tuple(option.type.choices) == PROTOCOLS, command.name


def test_fit_reads_own_columns_and_catalogue(tmp_path):
    """``--columns`` and ``--items`` reach the loader through the run config: a file whose
    header names neither users nor items trains, and the run's items carry the catalogue's
    titles."""
    rng = np.random.default_rng(0)
    rows = {(int(u), int(i)) for u, i in zip(rng.integers(0, 60, 1500),
                                             rng.integers(0, 40, 1500))}
    data = tmp_path / "orders.csv"
    data.write_text("ts,customer_ref,item_code\n"
                    + "".join(f"{1000 + n},c{u},p{i}\n" for n, (u, i) in enumerate(sorted(rows))))
    catalogue = tmp_path / "items.csv"
    catalogue.write_text("id,title,categories\n"
                         + "".join(f"p{i},Product {i},{'A' if i % 2 else 'B'}\n"
                                   for i in range(40)))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "fit", "--model", "ease", "--dataset", f"csv:{data}", "--protocol", "ratio",
        "--columns", "user=customer_ref,item=item_code,timestamp=ts", "--items", str(catalogue),
        "--out", str(out), "--quiet", "--no-report"])
    assert result.exit_code == 0, result.output
    from disentangle.runs import load_run

    train = load_run(out).split.train
    assert set(train.user_ids) <= {f"c{u}" for u in range(60)}
    assert dict(zip(train.item_ids, train.item_titles))["p3"] == "Product 3"


def test_fit_nproc_trains_under_torchrun_and_prints_once(tmp_path):
    """``fit --nproc 2`` runs itself again under torchrun (two gloo ranks): one run folder,
    one results table (rank 0's)."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "disentangle_cli.main", "fit", "--model",
                           "multdae", "--epochs", "1", "--nproc", "2", "--out", str(out),
                           "--quiet", "--no-report", "--device", "cpu"],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("test metrics (") == 1, proc.stdout
    assert json.loads((out / "results.json").read_text())["best_epoch"] == 1


def test_config_prints_the_resolved_config_that_config_takes_back(tmp_path):
    result = CliRunner().invoke(main, ["config", "--model", "disengcn", "--set",
                                       "model.tau=0.2", "--set", "train.epochs=7"])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    assert doc["model"]["name"] == "disengcn" and doc["model"]["tau"] == 0.2
    assert doc["train"]["epochs"] == 7
    path = tmp_path / "resolved.yaml"
    path.write_text(result.output)
    again = CliRunner().invoke(main, ["config", "--config", str(path)])
    assert again.exit_code == 0 and again.output == result.output


def test_fit_and_evaluate_json_print_the_results(tmp_path):
    out = tmp_path / "run"
    fitted = CliRunner().invoke(main, ["fit", "--model", "ease", "--out", str(out),
                                       "--quiet", "--json"])
    assert fitted.exit_code == 0, fitted.output
    results = json.loads(fitted.stdout)
    assert results == json.loads((out / "results.json").read_text())
    again = CliRunner().invoke(main, ["evaluate", str(out), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["test"] == results["test"]
