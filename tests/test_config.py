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
    ("train.name=x", "unknown config key train.name"),
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


# -- every config class is typed by its hints: null, non-finite, bool-for-int, wrong kinds ----
def _classes():
    from disentangle.config import DataConfig, TrainConfig
    from disentangle.models import MODELS
    yield "data", DataConfig, "macridvae"
    yield "train", TrainConfig, "macridvae"
    for name, model in MODELS.items():
        yield "model", model.Config, name


def _typed_fields(optional_only=False):
    """(model, section, field, hint) for every (optional) field of every config class."""
    import typing
    for section, cls, model in _classes():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if optional_only and type(None) not in typing.get_args(hints[f.name]):
                continue
            yield pytest.param(model, section, f.name, hints[f.name],
                               id=f"{model}-{section}.{f.name}")


def _wrong_values(hint):
    """Values a field of type ``hint`` must refuse, whatever its range."""
    import typing
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    wrong = [] if optional else [None]
    wrong.append({"a": 1})
    if base is int:
        wrong += [True, 2.5, float("inf"), 2 ** 63, "many", [1]]
    elif base is float:
        wrong += [float("inf"), float("-inf"), float("nan"), 1e39, True, "fast", [0.1]]
    elif base is bool:
        wrong += [1, 0.0, "maybe", [True]]
    elif base is str:
        wrong += [5, 1.5, True, ["x"]]
    elif typing.get_origin(base) is list:
        wrong += [[None], [True], [1.5], [[1]], ["x"], {"a": 1}]
    return wrong


@pytest.mark.parametrize("model, section, name, hint", _typed_fields())
def test_every_field_refuses_values_of_the_wrong_type_naming_the_key(model, section, name,
                                                                     hint):
    from disentangle.config import _merge
    for value in _wrong_values(hint):
        with pytest.raises(ConfigError) as e:
            _merge(model, [{section: {name: value}}])
        assert str(e.value).startswith(f"{section}.{name}="), (value, str(e.value))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("model, section, name, hint", _typed_fields(optional_only=True))
def test_an_optional_field_accepts_null(model, section, name, hint):
    from disentangle.config import _merge
    assert getattr(getattr(_merge(model, [{section: {name: None}}]), section), name) is None


@pytest.mark.parametrize("section, cls, model", list(_classes()),
                         ids=lambda x: getattr(x, "__name__", x))
def test_constraint_tables_name_fields_and_the_defaults_satisfy_them(section, cls, model):
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(cls.constraints) <= names
    cls().validate_all()


def test_constraints_say_what_they_accept():
    from disentangle.models.base import Interval, Items, NonBlank, Options
    lr = Interval(float, 0, None, closed="neither")
    assert (lr.accepted, lr(1e-3), lr(0.0), lr(True)) == ("a number > 0", True, False, False)
    count = Interval(int, 1, None)
    assert (count.accepted, count(3), count(3.0), count(2.5), count(0)) == \
        ("an integer >= 1", True, True, False, False)
    unit = Interval(float, 0, 1, closed="left")
    assert (unit.accepted, unit(0.0), unit(1.0)) == ("a number in [0, 1)", True, False)
    assert Interval(float, None, 5, closed="right").accepted == "a number <= 5"
    protocol = Options("heldout", "ratio", "given")
    assert (protocol.accepted, protocol("ratio"), protocol("kfold")) == \
        ("heldout, ratio or given", True, False)
    name = NonBlank()
    assert (name.accepted, name("ml-1m"), name(" "), name("")) == \
        ("a non-blank text", True, False, False)
    ks = Items(count, min_len=1)
    assert (ks([20, 50]), ks([]), ks([0]), ks(20)) == (True, False, False, False)
    assert ks.accepted == "a list of items (at least 1), each an integer >= 1"


def test_a_section_names_every_constraint_it_may_satisfy():
    with pytest.raises(ConfigError, match=r"^data\.heldout_users=0\.7 is out of range: "
                                          r"expected a count >= 1 or a fraction in \(0, 0\.5\)$"):
        resolve("macridvae", overrides=["data.heldout_users=0.7"])
    assert resolve("macridvae", overrides=["data.heldout_users=3"]).data.heldout_users == 3


@pytest.mark.parametrize("override, value", [
    ("train.epochs=5.0", 5), ("train.epochs=1e3", 1000), ("train.lr=1e-3", 1e-3),
    ("train.ks=20", [20]), ("model.tau=1", 1.0), ("data.delimiter=null", None),
    ("data.dataset=null", "null"), ("model.assign_tau=~", None),
])
def test_values_convert_where_nothing_is_lost(override, value):
    key, _, _ = override.partition("=")
    section, name = key.split(".")
    overrides = [override, "train.select=ndcg@20"] if name == "ks" else [override]
    got = getattr(getattr(resolve("macridvae", overrides=overrides), section), name)
    assert got == value and type(got) is type(value)


def test_a_config_file_must_be_a_small_regular_file(tmp_path):
    from disentangle.config import MAX_CONFIG_BYTES
    with pytest.raises(ConfigError, match=r"c\.yaml: is a folder; expected a regular file"):
        (tmp_path / "c.yaml").mkdir()
        resolve("macridvae", [tmp_path / "c.yaml"])
    big = tmp_path / "big.yaml"
    big.write_text("model: {tau: 0.2}\n" + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match="big.yaml: .* bytes; a config file is at most"):
        resolve("macridvae", [big])


def test_only_set_values_are_parsed_as_yaml_text(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text('data: {split_dir: "null", delimiter: "~"}\ntrain: {epochs: "7"}\n')
    from_file = resolve("macridvae", [f])
    assert (from_file.data.split_dir, from_file.data.delimiter) == ("null", "~")
    assert from_file.train.epochs == 7  # a number written as text still converts
    from_set = resolve("macridvae", overrides=["data.split_dir=null", "data.delimiter=~"])
    assert (from_set.data.split_dir, from_set.data.delimiter) == (None, None)
    typed = resolve("macridvae", overrides=["data.split_dir=a"],
                    options={"data.split_dir": "null", "data.rating_threshold": 3.5})
    assert (typed.data.split_dir, typed.data.rating_threshold) == ("null", 3.5)
    with pytest.raises(ConfigError, match=r"^train\.epochs=None: expected int$"):
        resolve("macridvae", options={"train.epochs": None})
    f.write_text('train: {ks: "[20, 50]"}\n')
    with pytest.raises(ConfigError, match=r"^train\.ks=\['\[20, 50\]'\]: expected list\[int\]"):
        resolve("macridvae", [f])
