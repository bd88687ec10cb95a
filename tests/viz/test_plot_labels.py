"""Labels that come from the data are drawn as plain text: an id, title or category name with
``$``, ``_``, ``^`` or ``\\`` never reaches matplotlib's mathtext parser."""
import matplotlib
import numpy as np
import pytest
from PIL import Image

from disentangle.data import InteractionData
from disentangle.explain import item_titles
from disentangle.viz import plots

# each of these is a mathtext syntax error (or would render as math) with mathtext on
NASTY = ["$^$", "a$_$b", r"$\frac$", "$x$", "price $5 and $", "\\$", "{$}", "50%$_"]


def _draw(kind, path):
    """One figure of ``kind`` with every label in ``NASTY`` in each place a label can go."""
    n = len(NASTY)
    if kind == "heatmap":
        return plots.factor_category_heatmap(np.full((n, n), 1 / n), NASTY, path,
                                             factor_labels=NASTY, title=NASTY[0],
                                             value_label=NASTY[1])
    if kind == "tsne":
        emb = np.random.default_rng(0).normal(size=(3 * n, 2, 3))
        cats = np.eye(n)[np.arange(3 * n) % n]
        return plots.item_tsne(emb, emb[:, :, 0], path, item_categories=cats,
                               category_names=NASTY, max_iter=250)
    if kind == "correlation":
        return plots.channel_correlation_plot({label: np.eye(4) for label in NASTY[:3]}, 2,
                                              path, title=NASTY[3])
    if kind == "curves":
        return plots.training_curves([{"epoch": 1, "loss": 1.0, **dict.fromkeys(NASTY, 2.0),
                                       "valid": {"ndcg@10": 0.1, "recall@10": 0.2}}],
                                     path, best_epoch=1, select="ndcg@10")
    data = InteractionData(np.arange(n), np.arange(n), NASTY, NASTY)
    titles = list(item_titles(data))  # "item <raw id>" for a dataset without titles
    return plots.user_factors_plot([0.6, 0.4], [titles, NASTY], path,
                                   user_label=f"user {NASTY[0]}", factor_notes=NASTY[2:4],
                                   max_titles=n)


@pytest.mark.parametrize("kind", ["heatmap", "tsne", "correlation", "curves", "user"])
def test_data_derived_labels_with_mathtext_characters_are_drawn(tmp_path, kind):
    path = _draw(kind, tmp_path / "x.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_the_same_labels_fail_with_mathtext_on(tmp_path, monkeypatch):
    """The cases above are real: with mathtext parsing they make saving fail."""
    monkeypatch.setitem(plots.STYLE, "text.parse_math", True)
    with pytest.raises(ValueError):
        _draw("user", tmp_path / "x.png")


def test_mathtext_stays_off_only_inside_the_plots():
    before = matplotlib.rcParams["text.parse_math"]
    assert plots.STYLE["text.parse_math"] is False
    with matplotlib.rc_context(plots.STYLE):
        assert matplotlib.rcParams["text.parse_math"] is False
    assert matplotlib.rcParams["text.parse_math"] == before
