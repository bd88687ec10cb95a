"""Run configuration: the shipped YAML files are the defaults; bad keys/values are one line."""
import dataclasses
from pathlib import Path

import pytest

from disentangle.config import ConfigError, resolve

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("model", ["macridvae", "disengcn"])
def test_shipped_config_equals_the_built_in_defaults(model):
    from_file = resolve(None, [CONFIGS / f"{model}.yaml"])
    assert from_file.model_name == model
    assert from_file.to_dict() == resolve(model).to_dict()


def test_overrides_are_typed_and_applied_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {num_factors: 3}\ntrain: {epochs: 4}\n")
    cfg = resolve("macridvae", [f], ["train.epochs=9", "model.tau=0.25", "model.nogb=true",
                                     "train.ks=[5, 10]", "train.select=ndcg@10"])
    assert cfg.model.num_factors == 3 and cfg.train.epochs == 9
    assert cfg.model.tau == 0.25 and cfg.model.nogb is True and cfg.train.ks == [5, 10]


@pytest.mark.parametrize("override, message", [
    ("model.taux=1", "unknown config key model.taux"),
    ("model.tau=0", "tau=0.0 is out of range"),
    ("model.num_factors=0", "num_factors=0 is out of range"),
    ("model.dropout=1", "dropout=1.0 is out of range"),
    ("model.num_factors=2.5", "model.num_factors=2.5: expected int"),
    ("train.epochs=-1", "train.epochs=-1 is out of range"),
    ("train.select=ndcg@7", "train.select='ndcg@7' is out of range"),
    ("train.lr_milestones=[0]", "lr_milestones=[0] is out of range"),
    ("train.lr_gamma=0", "lr_gamma=0.0 is out of range"),
    ("foo.bar=1", "unknown config section 'foo'"),
    ("tau=1", "expected section.key=value"),
])
def test_bad_override_is_a_one_line_error(override, message):
    with pytest.raises(ConfigError) as e:
        resolve("macridvae", overrides=[override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_learning_rate_steps_down_after_each_milestone():
    train = resolve("disengcn", overrides=["train.lr=0.01", "train.lr_milestones=[2, 5]",
                                           "train.lr_gamma=0.5"]).train
    assert [train.lr_at(e) for e in range(7)] == [0.01, 0.01, 0.005, 0.005, 0.005, 0.0025,
                                                  0.0025]
    assert resolve("disengcn").train.lr_at(1000) == resolve("disengcn").train.lr


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'vae'; known: macridvae, disengcn"):
        resolve("vae")


def test_yaml_is_loaded_safely(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("model: !!python/object/apply:os.system ['touch PWNED']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve("macridvae", [f])


def test_resolved_config_is_a_plain_dict_round_trip():
    from disentangle.config import from_dict
    cfg = resolve("macridvae", overrides=["model.num_factors=4"])
    assert dataclasses.asdict(from_dict(cfg.to_dict()).model) == dataclasses.asdict(cfg.model)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves(path):
    cfg = resolve(None, [path])
    assert cfg.model_name in path.name
