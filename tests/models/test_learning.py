"""Each model learns on real data: test metrics well above popularity."""
import pytest

from disentangle.config import resolve
from disentangle.train.run import fit


@pytest.mark.parametrize("model, overrides, metric", [
    ("macridvae", ["train.epochs=30"], "ndcg@100"),
    ("disengcn", ["train.epochs=60", "train.eval_every=5"], "recall@20"),
])
def test_model_beats_popularity_on_the_embedded_dataset(tmp_path, model, overrides, metric):
    results = fit(resolve(model, overrides=overrides), tmp_path / model, progress=False)
    ours, pop = results["test"][metric], results["popularity"]["test"][metric]
    assert ours > 1.3 * pop, (ours, pop)
