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


def test_a_model_that_cannot_be_allocated_is_a_config_error_naming_its_sizes(monkeypatch):
    import pytest

    from disentangle.config import ConfigError
    from disentangle.models import MODELS
    from disentangle.train.run import build_model, build_split

    cfg = resolve("macridvae", overrides=["model.dim=4"])
    split = build_split(cfg)

    def out_of_memory(self, config, train_data):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 4000000000000 bytes")

    monkeypatch.setattr(MODELS["macridvae"], "__init__", out_of_memory)
    with pytest.raises(ConfigError, match=r"macridvae with \{.*'dim': 4.*\} on \d+ items "
                                          r"does not fit in memory"):
        build_model(cfg, split)
