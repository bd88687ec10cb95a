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


def test_a_macridvae_run_without_assign_tau_reads_the_paper_default(tmp_path):
    old = write(tmp_path / "old", "macridvae", drop=["assign_tau"])
    assert read_config(old).model.assign_tau is None
