"""``disentangle tune``: a search selects on validation users only (the test users are never
scored), writes a best.yaml that resolves to the best trial's config, continues a stored study
instead of restarting it, and refuses a bad search space in one line naming the key."""
import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

optuna = pytest.importorskip("optuna")

from disentangle import tune as tune_module
from disentangle.config import resolve
from disentangle.train import distributed, run, trainer
from disentangle.tune import SPACES, SearchSpaceError, load_space, parse_space, tune
from disentangle_cli.tune import tune_command


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture
def data(tmp_path):
    """A small random dataset (120 users, 60 items, 12-20 items each) as a csv:PATH option."""
    rng = np.random.default_rng(0)
    rows = ["user,item"]
    for u in range(120):
        for i in rng.choice(60, size=rng.integers(12, 21), replace=False):
            rows.append(f"u{u},i{i}")
    path = tmp_path / "tiny.csv"
    path.write_text("\n".join(rows) + "\n")
    return {"data.dataset": f"csv:{path}"}


@pytest.fixture
def no_test_scoring(monkeypatch):
    """Fail if anything scores the test users (or computes the final test results)."""
    splits = []
    build_split = run.build_split

    def recording(cfg):
        splits.append(build_split(cfg))
        return splits[-1]

    evaluate = distributed.evaluate_all  # what the trainer's evaluation calls

    def validation_only(score, eval_set, *args, **kwargs):
        assert all(eval_set is not s.test for s in splits), "the search scored test users"
        assert any(eval_set is s.valid for s in splits)
        return evaluate(score, eval_set, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("the search computed test results")

    monkeypatch.setattr(run, "build_split", recording)
    monkeypatch.setattr(distributed, "evaluate_all", validation_only)
    monkeypatch.setattr(run, "final_results", refuse)
    return splits


def test_search_selects_on_validation_writes_best_config_and_resumes(tmp_path, data,
                                                                     no_test_scoring):
    out = tmp_path / "search"
    first = tune("ease", SPACES / "ease.yaml", options=data, n_trials=3, out_dir=out, seed=0)
    assert len(no_test_scoring) == 1  # one split for every trial
    study = optuna.load_study(study_name=first["study"], storage=first["storage"])
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    best = max(trials, key=lambda t: t.value)
    assert first["best"]["number"] == best.number and first["best"]["value"] == best.value

    # best.yaml is a full config that resolves to the best trial's draw, on the base config
    cfg = resolve(None, [out / "best.yaml"])
    expected = resolve("ease", [], [], {**data, "model.lam": best.params["model.lam"]})
    assert cfg.to_dict() == expected.to_dict()
    assert cfg.model.lam == best.params["model.lam"]
    text = (out / "best.yaml").read_text()
    assert f"study {first['study']!r}: trial {best.number}" in text
    assert f"validation ndcg@100 = {best.value:.6g}" in text
    assert set(yaml.safe_load(text)) == {"model", "data", "train"}  # no results in it

    # the objective is the trial's best validation value of train.select: recompute it
    split = no_test_scoring[0]
    model = run.build_model(expected, split)
    t = trainer.Trainer(model, split, expected.train, None, "cpu", progress=False)
    assert math.isclose(t.fit()["ndcg@100"], best.value, rel_tol=1e-9)

    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["number", "state", "value"] and len(rows) == 4
    assert (out / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same storage continues the study: one trial more, the first three kept
    again = tune("ease", SPACES / "ease.yaml", options=data, n_trials=4, out_dir=out, seed=0)
    resumed = optuna.load_study(study_name=again["study"], storage=again["storage"]).trials
    assert [t.number for t in resumed] == [0, 1, 2, 3]
    assert [t.params for t in resumed[:3]] == [t.params for t in trials]
    assert resumed[3].params != trials[0].params  # the sampler does not redraw trial 0
    assert again["trials"] == 4 and len((out / "trials.csv").read_text().splitlines()) == 5


def test_study_with_another_base_config_is_refused(tmp_path, data):
    out = tmp_path / "search"
    tune("ease", SPACES / "ease.yaml", options=data, n_trials=1, out_dir=out, seed=0)
    with pytest.raises(ValueError, match="another base config.*data.rating_threshold"):
        tune("ease", SPACES / "ease.yaml", options={**data, "data.rating_threshold": 1.0},
             n_trials=2, out_dir=out, seed=0, study_name="ease-tiny.csv")


def test_every_validation_value_is_reported_and_the_pruner_stops_the_trial(data):
    class Trial:  # the two calls the trainer makes on an Optuna trial
        def __init__(self):
            self.reported = {}

        def report(self, value, step):
            self.reported[step] = value

        def should_prune(self):
            return len(self.reported) == 2

    cfg = resolve("macridvae", [], ["model.dim=4", "model.init=xavier", "train.epochs=4"],
                  data)
    split = run.build_split(cfg)
    trial = Trial()
    t = tune_module._PruningTrainer(trial, run.build_model(cfg, split), split, cfg.train,
                                    None, "cpu", progress=False)
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        t.fit()
    assert sorted(trial.reported) == [1, 2] and t.epoch == 2


@pytest.mark.parametrize("doc, key, says", [
    ({"model.lam": {"float": [10.0]}}, "model.lam", "[low, high]"),
    ({"model.lam": {"float": [10.0, 1.0]}}, "model.lam", "low < high"),
    ({"model.lam": {"float": [0.0, 1.0], "log": True}}, "model.lam", "low > 0"),
    ({"model.lam": {"uniform": [1.0, 2.0]}}, "model.lam", "unknown field 'uniform'"),
    ({"model.lam": {"float": [1, 2], "int": [1, 2]}}, "model.lam", "two kinds"),
    ({"model.lam": [1, 2]}, "model.lam", "expected a distribution"),
    ({"model.lam": {"categorical": []}}, "model.lam", "non-empty list"),
    ({"model.lamda": {"float": [1, 2]}}, "model.lamda", "unknown config key; known: lam"),
    ({"data.seed": {"int": [1, 9]}}, "data.seed", "cannot be searched"),
    ({"train.select": {"categorical": ["ndcg@20"]}}, "train.select", "cannot be searched"),
    ({"lam": {"float": [1, 2]}}, "lam", "section.name"),
])
def test_bad_search_space_is_one_line_naming_the_key(doc, key, says):
    with pytest.raises(SearchSpaceError) as e:
        parse_space(doc, "ease", "search space s.yaml")
    msg = str(e.value)
    assert msg.startswith(f"search space s.yaml: {key}: ") and says in msg
    assert "\n" not in msg


def test_value_the_config_refuses_is_named_before_any_training(tmp_path, data):
    space = tmp_path / "s.yaml"
    space.write_text("model.lam: {float: [0.0, 10.0]}\n")  # lam must be > 0
    with pytest.raises(SearchSpaceError, match=r"^search space model.lam: the value 0.0 is "
                                               r"refused by the config"):
        tune("ease", space, options=data, n_trials=1, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_shipped_spaces_parse():
    for model in ("macridvae", "disengcn", "ease", "multvae"):
        assert load_space(SPACES / f"{model}.yaml", model)
    dims = {p.key: p for p in load_space(SPACES / "multvae.yaml", "multvae")}["model.dims"]
    # lists of layer sizes are drawn as their YAML text and read back
    assert dims.suggest(optuna.trial.FixedTrial({"model.dims": "[600, 200]"})) == [600, 200]


def test_cli_runs_a_search_and_names_the_best_config(tmp_path, data):
    out = tmp_path / "search"
    result = CliRunner().invoke(tune_command, [
        "--model", "ease", "--trials", "2", "--dataset", data["data.dataset"], "--out",
        str(out), "--seed", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "trial 1:" in result.output and f"config: {out / 'best.yaml'}" in result.output
    assert resolve(None, [out / "best.yaml"]).model_name == "ease"


def test_cli_bad_space_and_missing_optuna_exit_2_in_one_line(tmp_path, data, monkeypatch):
    space = tmp_path / "s.yaml"
    space.write_text("model.tau: {float: [0.1, 1.0]}\n")
    result = CliRunner().invoke(tune_command, ["--model", "ease", "--space", str(space),
                                               "--dataset", data["data.dataset"]])
    assert result.exit_code == 2
    assert result.output.startswith("error: search space") and "model.tau" in result.output
    assert result.output.count("\n") == 1

    monkeypatch.setitem(__import__("sys").modules, "optuna", None)
    result = CliRunner().invoke(tune_command, ["--model", "ease"])
    assert result.exit_code == 2
    assert result.output == 'error: disentangle tune needs Optuna: pip install ' \
                            '"disentangle[tune]"\n'
