"""Reading a saved run's config: a key added after the run was written keeps the saved model."""
import yaml

from disentangle import __version__
from disentangle.config import resolve
from disentangle.runs import CONFIG, read_config


def write(run_dir, model, drop=()):
    cfg = resolve(model).to_dict()
    for key in drop:
        del cfg["model"][key]
    run_dir.mkdir()
    (run_dir / CONFIG).write_text(yaml.safe_dump({**cfg, "version": __version__}))
    return run_dir


def test_a_disengcn_run_saved_before_keep_norm_keeps_unit_channels(tmp_path):
    old = write(tmp_path / "old", "disengcn", drop=["keep_norm"])
    assert read_config(old).model.keep_norm is False
    new = write(tmp_path / "new", "disengcn")
    assert read_config(new).model.keep_norm is True


def test_a_disengcn_run_saved_before_layer_output_keeps_the_normalized_layers(tmp_path):
    old = write(tmp_path / "old", "disengcn", drop=["layer_output"])
    assert read_config(old).model.layer_output == "normalized"
    assert read_config(old).model.keep_norm is True  # saved, so kept
    new = write(tmp_path / "new", "disengcn")
    assert read_config(new).model.layer_output == "linear"


def test_a_macridvae_run_without_assign_tau_reads_the_paper_default(tmp_path):
    old = write(tmp_path / "old", "macridvae", drop=["assign_tau"])
    assert read_config(old).model.assign_tau is None
