"""Every bad config value, section or file is refused before anything is written: exit code 2,
one ``error: ...`` line that names the key (or the file) and what it accepts, no run folder.

The tables are the specification, one class of mistake each: nulls, non-finite and
out-of-float32 floats, wrongly typed values, out-of-range values, sections that are not
mappings, and config files that are not small regular YAML files. A property-based test then
feeds random values for random keys of every section to :func:`disentangle.config.resolve`
and ``_merge`` and accepts nothing but a valid config or a :class:`ConfigError`.
"""
import dataclasses
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disentangle.config import (
    MAX_CONFIG_BYTES,
    SECTIONS,
    ConfigError,
    DataConfig,
    TrainConfig,
    _merge,
    resolve,
)
from disentangle.models import MODELS
from disentangle_cli.main import main

SIZE = {"macridvae": "model.dim=4", "disengcn": "model.factor_dim=4"}


def fit(tmp, *extra, model="macridvae"):
    """``fit`` of a tiny model for 0 epochs into ``tmp/out`` with ``extra`` options (which
    come last, so they override the size and the epochs)."""
    args = ["fit", "--quiet", "--no-report", "--set", "train.epochs=0", "--out", tmp / "out",
            *extra]
    if model is not None:
        args[1:1] = ["--model", model, "--set", SIZE[model]]
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_refused(result, tmp, message):
    """Exit 2 through one ``error:`` line holding ``message`` (a string, or a tuple of
    strings that must all be there); no folder created."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: "), result.output
    assert all(m in lines[-1] for m in ((message,) if isinstance(message, str) else message)), \
        result.output
    assert sum(line.startswith("error") for line in lines) == 1, result.output
    assert "Traceback" not in result.output
    assert not (tmp / "out").exists(), "a refused config created the run folder"


# (id, --set override, model, message naming the key and what it accepts)
SETS = [
    # -- null where the field is not optional -------------------------------------------------
    ("epochs-null", "train.epochs=null", "macridvae", "train.epochs=None: expected int"),
    ("lr-null", "train.lr=~", "macridvae", "train.lr=None: expected finite float"),
    ("ks-null", "train.ks=null", "macridvae", "train.ks=None: expected list[int]"),
    ("milestones-null", "train.lr_milestones=null", "macridvae",
     "train.lr_milestones=None: expected list[int]"),
    ("eval-chunk-null", "train.eval_chunk=null", "macridvae",
     "train.eval_chunk=None: expected int"),
    ("data-seed-null", "data.seed=null", "macridvae", "data.seed=None: expected int"),
    ("heldout-null", "data.heldout_users=null", "macridvae",
     "data.heldout_users=None: expected finite float"),
    ("threshold-null", "data.rating_threshold=null", "macridvae",
     "data.rating_threshold=None: expected finite float"),
    ("K-null", "model.num_factors=null", "macridvae", "model.num_factors=None: expected int"),
    ("nogb-null", "model.nogb=null", "macridvae", "model.nogb=None: expected bool"),
    ("tau-null-disengcn", "model.tau=null", "disengcn", "model.tau=None: expected finite float"),
    ("bias-null-disengcn", "model.item_bias=null", "disengcn",
     "model.item_bias=None: expected bool"),
    # -- floats: finite, and within float32 range ---------------------------------------------
    ("lr-inf", "train.lr=inf", "macridvae", "train.lr=inf: expected finite float"),
    ("lr-yaml-inf", "train.lr=.inf", "macridvae", "train.lr=inf: expected finite float"),
    ("lr-nan", "train.lr=nan", "macridvae", "train.lr=nan: expected finite float"),
    ("lr-overflow", "train.lr=1e400", "macridvae", "train.lr=inf: expected finite float"),
    ("lr-beyond-float32", "train.lr=1e39", "macridvae",
     "train.lr=1e+39: expected finite float within float32 range"),
    ("lr-beyond-adam", "train.lr=1e38", "macridvae",
     "train.lr=1e+38 is out of range: expected a number in (0, 3.403e+37]"),
    ("weight-decay-inf", "train.weight_decay=inf", "macridvae",
     "train.weight_decay=inf: expected finite float"),
    ("lr-gamma-nan", "train.lr_gamma=nan", "macridvae", "train.lr_gamma=nan: expected finite"),
    ("tau-inf", "model.tau=inf", "macridvae", "model.tau=inf: expected finite float"),
    ("beta-minus-inf", "model.beta=-inf", "macridvae", "model.beta=-inf: expected finite"),
    ("assign-tau-inf", "model.assign_tau=inf", "macridvae",
     "model.assign_tau=inf: expected finite float or null"),
    ("tau-inf-disengcn", "model.tau=inf", "disengcn", "model.tau=inf: expected finite float"),
    ("softmax-tau-nan-disengcn", "model.softmax_tau=nan", "disengcn",
     "model.softmax_tau=nan: expected finite float"),
    ("reg-weight-inf-disengcn", "model.reg_weight=inf", "disengcn",
     "model.reg_weight=inf: expected finite float"),
    ("heldout-inf", "data.heldout_users=inf", "macridvae",
     "data.heldout_users=inf: expected finite float"),
    ("valid-ratio-nan", "data.valid_ratio=nan", "macridvae",
     "data.valid_ratio=nan: expected finite float"),
    # -- wrongly typed values ------------------------------------------------------------------
    ("epochs-bool", "train.epochs=true", "macridvae", "train.epochs=True: expected int"),
    ("epochs-fraction", "train.epochs=2.5", "macridvae", "train.epochs=2.5: expected int"),
    ("epochs-list", "train.epochs=[1, 2]", "macridvae", "train.epochs=[1, 2]: expected int"),
    ("seed-beyond-64-bit", "train.seed=99999999999999999999", "macridvae",
     "train.seed=99999999999999999999: expected int within 64 bits"),
    ("K-beyond-64-bit", "model.num_factors=1e30", "macridvae",
     "model.num_factors=1000000000000000019884624838656: expected int within 64 bits"),
    ("ks-text", "train.ks=[a]", "macridvae", "train.ks=['a']: expected list[int]"),
    ("ks-fraction", "train.ks=[1.5]", "macridvae", "train.ks=[1.5]: expected list[int]"),
    ("ks-bool", "train.ks=[20, true]", "macridvae", "train.ks=[20, True]: expected list[int]"),
    ("ks-mapping", "train.ks={a: 1}", "macridvae", "train.ks=[{'a': 1}]: expected list[int]"),
    ("milestones-nested", "train.lr_milestones=[[1]]", "macridvae",
     "train.lr_milestones=[[1]]: expected list[int]"),
    ("lr-list", "train.lr=[0.1]", "macridvae", "train.lr=[0.1]: expected finite float"),
    ("nogb-number", "model.nogb=1", "macridvae", "model.nogb=1: expected bool (true or false)"),
    ("tau-empty", "model.tau=", "macridvae", "model.tau='': expected finite float"),
    ("tau-unparsable", "model.tau=[", "macridvae", "model.tau='[': not a valid value"),
    ("epochs-deeply-nested", "train.epochs=" + "[" * 1500, "macridvae",
     ("train.epochs='[[[[", "...", "[[[[': not a valid value")),
    ("dim-text-disengcn", "model.factor_dim=wide", "disengcn",
     "model.factor_dim='wide': expected int"),
    # -- out of range (the constraint tables) ----------------------------------------------------
    ("eval-chunk-zero", "train.eval_chunk=0", "macridvae",
     "train.eval_chunk=0 is out of range: expected an integer >= 1"),
    ("eval-every-zero", "train.eval_every=0", "macridvae",
     "train.eval_every=0 is out of range: expected an integer >= 1"),
    ("patience-negative", "train.patience=-1", "macridvae",
     "train.patience=-1 is out of range: expected an integer >= 0"),
    ("weight-decay-negative", "train.weight_decay=-1e-4", "macridvae",
     "train.weight_decay=-0.0001 is out of range: expected a number >= 0"),
    ("lr-zero", "train.lr=0", "macridvae", "train.lr=0.0 is out of range"),
    ("lr-gamma-above-one", "train.lr_gamma=1.5", "macridvae",
     "train.lr_gamma=1.5 is out of range: expected a number in (0, 1]"),
    ("train-seed-negative", "train.seed=-1", "macridvae",
     "train.seed=-1 is out of range: expected an integer in [0, 2**32)"),
    ("train-seed-2-32", "train.seed=4294967296", "macridvae",
     "train.seed=4294967296 is out of range: expected an integer in [0, 2**32)"),
    ("data-seed-negative", "data.seed=-1", "macridvae",
     "data.seed=-1 is out of range: expected an integer in [0, 2**32)"),
    ("ks-empty", "train.ks=[]", "macridvae",
     "train.ks=[] is out of range: expected a non-empty list of cut-offs in [1, 2**31)"),
    ("ks-zero", "train.ks=[0, 20]", "macridvae", "train.ks=[0, 20] is out of range"),
    ("ks-beyond-int32", "train.ks=[2147483648]", "macridvae",
     "train.ks=[2147483648] is out of range"),
    ("select-not-in-ks", "train.select=ndcg@7", "macridvae",
     "train.select='ndcg@7' is out of range: expected ndcg@k or recall@k with k in"),
    ("select-leading-zero", "train.select=ndcg@0100", "macridvae",
     "train.select='ndcg@0100' is out of range"),
    ("select-other-digits", "train.select=ndcg@\u0661\u0660\u0660", "macridvae",
     "train.select='ndcg@\u0661\u0660\u0660' is out of range"),
    ("heldout-fraction-half", "data.heldout_users=0.5", "macridvae",
     "data.heldout_users=0.5 is out of range: expected a count >= 1 or a fraction in (0, 0.5)"),
    ("heldout-count-fraction", "data.heldout_users=2.5", "macridvae",
     "data.heldout_users=2.5 is out of range"),
    ("valid-ratio-one", "data.valid_ratio=1", "macridvae",
     "data.valid_ratio=1.0 is out of range: expected a fraction in [0, 1)"),
    ("min-interactions-zero", "data.min_user_interactions=0", "macridvae",
     "data.min_user_interactions=0 is out of range: expected an integer >= 1"),
    ("split-dir-empty", "data.split_dir=", "macridvae",
     "data.split_dir='' is out of range: expected a folder path or null"),
    ("data-dir-blank", "data.data_dir= ", "macridvae",
     "data.data_dir=' ' is out of range: expected a folder path or null"),
    ("dataset-empty", "data.dataset=", "macridvae",
     "data.dataset='' is out of range: expected a dataset name or csv:PATH"),
    ("protocol-unknown", "data.protocol=kfold", "macridvae",
     "data.protocol='kfold' is out of range: expected heldout, ratio, given, temporal or temporal-global"),
    ("dropout-one-disengcn", "model.dropout=1", "disengcn", "model.dropout=1.0 is out of range"),
    # -- keys and sections ---------------------------------------------------------------------
    ("unknown-key", "train.epoch=3", "macridvae", "unknown config key train.epoch; known:"),
    ("unknown-section", "optim.lr=1", "macridvae", "unknown config section 'optim'"),
    ("no-key", "train=5", "macridvae", "--set 'train=5': expected section.key=value"),
]

# (id, YAML text of the config file, message); the file also goes through --model macridvae
FILES = [
    ("section-int", "train: 5\n", "c.yaml: config section train=5: expected a mapping"),
    ("section-list", "data: [ml-1m]\n", "c.yaml: config section data=['ml-1m']: expected"),
    ("section-text", "model: macridvae\n", "c.yaml: config section model='macridvae'"),
    ("top-level-list", "- train\n", "c.yaml: expected a mapping of sections"),
    ("top-level-text", "train\n", "c.yaml: expected a mapping of sections"),
    ("section-key-not-text", "5: {}\n", "c.yaml: unknown config section 5"),
    ("key-not-text", "train: {5: 1}\n", "unknown config key train.5; known:"),
    ("null-in-file", "train: {eval_every: null}\n", "train.eval_every=None: expected int"),
    ("empty-value-in-file", "train:\n  patience:\n", "train.patience=None: expected int"),
    ("inf-in-file", "model: {tau: .inf}\n", "model.tau=inf: expected finite float"),
    ("nan-in-file", "train: {weight_decay: .nan}\n", "train.weight_decay=nan: expected finite"),
    ("text-for-a-number", "train: {lr: fast}\n", "train.lr='fast': expected finite float"),
    ("number-for-text", "data: {dataset: 5}\n", "data.dataset=5: expected str"),
    ("null-for-text", "data: {dataset: null}\n", "data.dataset=None: expected str"),
    ("list-for-text", "train: {select: [ndcg@20]}\n", "train.select=['ndcg@20']: expected str"),
    ("mapping-for-bool", "model: {nogb: {a: 1}}\n", "model.nogb={'a': 1}: expected bool"),
    ("date-for-int", "train: {seed: 2024-01-01}\n", "train.seed=datetime.date(2024, 1, 1)"),
    ("alias-as-value", "x: &a [1, 2]\n", "c.yaml: unknown config section 'x'"),
    ("alias-list-of-lists", "train: {ks: &a [[1, 2], [3]], select: *a}\n",
     "train.ks=[[1, 2], [3]]: expected list[int]"),
    ("recursive-alias", "train: &a {ks: *a}\n", "train.ks=[{'ks': {...}}]: expected list[int]"),
    ("deeply-nested", "train: {ks: " + "[" * 1500 + "]" * 1500 + "}\n",
     "c.yaml: not valid YAML (nested too deeply)"),
    ("nul-bytes", "train: {epochs: 1}\n\x00\n", "c.yaml: not valid YAML (unacceptable character"),
    ("unknown-tag", "train: !!python/name:os.system {}\n", "c.yaml: not valid YAML"),
]


def alias_bomb(levels: int = 9) -> str:
    """One YAML value of ``levels`` nested lists, each holding the previous one nine times by
    alias: ``9**levels`` leaves if anything expanded it."""
    value = "&a0 [x, x, x, x, x, x, x, x, x]"
    for i in range(1, levels):
        value = f"&a{i} [{value}{f', *a{i - 1}' * 8}]"
    return value


def special_file(tmp, kind):
    """A config path that is not a small regular file of YAML."""
    path = tmp / "c.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "huge":
        path.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    elif kind == "not-utf8":
        path.write_bytes("train: {select: caf\u00e9}\n".encode("latin-1"))
    return path


SPECIAL = [
    pytest.param("fifo", "c.yaml: is a FIFO (named pipe); expected a regular file",
                 marks=pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs"),
                 id="fifo"),
    pytest.param("device", "c.yaml: is a character device (a link to /dev/zero)",
                 marks=pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero"),
                 id="device"),
    pytest.param("folder", "c.yaml' is a directory", id="folder"),  # click's own check
    pytest.param("huge", f"a config file is at most {MAX_CONFIG_BYTES} bytes", id="huge"),
    pytest.param("not-utf8", "c.yaml: not valid YAML (", id="not-utf8"),
]


@pytest.mark.parametrize("override, model, message",
                         [pytest.param(*c[1:], id=c[0]) for c in SETS])
def test_a_bad_set_value_is_refused_naming_the_key(tmp_path, override, model, message):
    assert_refused(fit(tmp_path, "--set", override, model=model), tmp_path, message)


@pytest.mark.parametrize("text, message", [pytest.param(*c[1:], id=c[0]) for c in FILES])
def test_a_bad_config_file_is_refused_naming_the_key_or_the_file(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    result = fit(tmp_path, "--config", tmp_path / "c.yaml")
    assert_refused(result, tmp_path, message)


@pytest.mark.parametrize("kind, message", SPECIAL)
def test_a_config_path_that_is_not_a_small_yaml_file_is_refused_unread(tmp_path, kind,
                                                                       message):
    path = special_file(tmp_path, kind)
    assert_refused(fit(tmp_path, "--config", path), tmp_path, message)


@pytest.mark.parametrize("options, message", [
    (["--rating-threshold", "nan"], "data.rating_threshold=nan: expected finite float"),
    (["--rating-threshold", "-inf"], "data.rating_threshold=-inf: expected finite float"),
    (["--seed", "-1"], "train.seed=-1 is out of range: expected an integer in [0, 2**32)"),
    (["--seed", "99999999999999999999"], "train.seed=99999999999999999999: expected int"),
], ids=["threshold-nan", "threshold-minus-inf", "seed-negative", "seed-huge"])
def test_a_bad_option_value_is_refused_naming_its_config_key(tmp_path, options, message):
    assert_refused(fit(tmp_path, *options), tmp_path, message)


def test_a_model_name_that_is_not_text_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("model: {name: [macridvae]}\n")
    result = fit(tmp_path, "--config", tmp_path / "c.yaml", model=None)
    assert_refused(result, tmp_path, "unknown model ['macridvae']; known: macridvae")


@pytest.mark.parametrize("section, key", [("train", "ks"), ("train", "select"),
                                          ("model", "tau"), ("data", "dataset")])
def test_an_alias_bomb_is_refused_without_being_expanded(tmp_path, section, key):
    (tmp_path / "c.yaml").write_text(f"{section}: {{{key}: {alias_bomb()}}}\n")
    result = fit(tmp_path, "--config", tmp_path / "c.yaml")
    assert_refused(result, tmp_path, (f"{section}.{key}=[[[...], [...], [...], [...],",
                                      ": expected "))
    assert len(result.output) < 400


# -- property: random values for random keys never escape as anything but ConfigError --------
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2 ** 70, 2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["null", "~", "inf", ".inf", "-.inf", ".nan", "nan", "1e9", "1e400", "[",
                     "[1, 2]", "{a: 1}", "true", "ndcg@20", "heldout", "0x10", "1_000", "",
                     "&a [1]", "*a", "!!python/none ''"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
def fields(model):
    """The keys of each section for ``model``, plus ``model.name``."""
    names = {cls: [f.name for f in dataclasses.fields(cls)]
             for cls in (DataConfig, TrainConfig, MODELS[model].Config)}
    return {"data": names[DataConfig], "train": names[TrainConfig],
            "model": [*names[MODELS[model].Config], "name"]}


def often(common, rare, times=9):
    """``common`` about ``times`` times as often as ``rare`` (chosen by a middle value:
    hypothesis draws the ends of a range, and the first branch of ``one_of``, more often)."""
    return st.integers(0, times).flatmap(lambda i: rare if i == times // 2 else common)


def keys(model):
    """(section, key) pairs: mostly known keys of ``model``'s config, sometimes any text."""
    known = st.sampled_from(SECTIONS).flatmap(
        lambda s: st.tuples(st.just(s), st.sampled_from(fields(model)[s])))
    return often(known, st.tuples(st.sampled_from([*SECTIONS, "optim"]), st.text(max_size=6)))


@st.composite
def layers(draw, model):
    """A list of config layers: mostly mappings of sections, with random values for keys of
    ``model``'s config; sometimes a section (or the layer) that is not a mapping at all."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        layer: dict = {}
        for section, key in draw(st.lists(keys(model), max_size=5)):
            values = layer.setdefault(section, {})
            if isinstance(values, dict):
                values[key] = draw(VALUES)
            if draw(often(st.just(False), st.just(True), times=19)):
                layer[section] = draw(VALUES)
        out.append(draw(often(st.just(layer), VALUES, times=29)))
    return out


def as_text(value) -> str:
    return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), model=st.sampled_from(list(MODELS)), given_model=st.booleans())
def test_random_config_layers_give_a_config_or_a_config_error(data, model, given_model):
    config = data.draw(layers(model))  # without --model, a first layer names it (or a later)
    try:
        cfg = _merge(model, config) if given_model else \
            _merge(None, [{"model": {"name": model}}, *config])
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
    else:
        assert cfg.to_dict() == _merge(None, [cfg.to_dict()]).to_dict()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), model=st.sampled_from(list(MODELS)))
def test_random_set_overrides_give_a_config_or_a_config_error(data, model):
    sets = data.draw(st.lists(st.tuples(keys(model), VALUES.map(as_text)), max_size=3))
    try:
        cfg = resolve(model, overrides=[f"{s}.{k}={v}" for (s, k), v in sets])
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
    else:
        assert cfg.to_dict() == _merge(None, [cfg.to_dict()]).to_dict()
