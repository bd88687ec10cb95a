"""The run report (`disentangle.viz`), its pictures, and the factor explanations, on a tiny
MacridVAE run of the embedded dataset (and an untrained DisenGCN for the graph-model path)."""
import base64
import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from disentangle.config import resolve
from disentangle.data.splits import Split
from disentangle.explain import explain_recommendations, factor_top_categories
from disentangle.train.run import Run, build_model, build_split, fit, load_run
from disentangle.viz.plots import shorten
from disentangle.viz.report import _categories_text, inspect_run, summary_table
from disentangle_cli.inspection import inspect_command, print_explanations

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = {"training_curves", "factor_category", "tsne", "channel_correlation", "user"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    fit(resolve("macridvae", overrides=["train.epochs=2", "model.dim=16"]), out, progress=False)
    return load_run(out)


@pytest.fixture(scope="module")
def cli_inspect(run):
    """``disentangle inspect RUN_DIR``: the result of ``inspect_run`` and the printed text."""
    result = CliRunner().invoke(inspect_command, [str(run.path), "--tsne-items", "300"],
                                standalone_mode=False)
    assert result.exit_code == 0, result.output
    return result.return_value, result.output


@pytest.fixture(scope="module")
def inspected(cli_inspect):
    return cli_inspect[0]


class _Refs(HTMLParser):
    """Every attribute that can load something, every id, and the tags used."""

    LOADING = frozenset({"src", "href", "srcset", "poster", "data", "action", "background",
                         "xlink:href"})

    def __init__(self):
        super().__init__()
        self.refs, self.ids, self.tags, self.images = [], set(), set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in self.LOADING:
                self.refs.append((tag, name, value or ""))
            if name == "id":
                self.ids.add(value)
            if tag == "img" and name == "src":
                self.images.append(value or "")


def _is_png(path: Path) -> bool:
    data = Path(path).read_bytes()
    if not data.startswith(PNG):
        return False
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.width > 100 and image.height > 100


# -- artefacts --------------------------------------------------------------------------------
def test_inspect_writes_every_picture_as_a_valid_png_in_the_run_directory(run, inspected):
    assert set(inspected["plots"]) == PLOTS
    for name, path in inspected["plots"].items():
        assert path.parent == run.path / "inspect", name
        assert _is_png(path), name


def test_factors_json_holds_the_factor_report(run, inspected):
    saved = json.loads((run.path / "inspect" / "factors.json").read_text())
    assert saved == inspected["metrics"]
    assert saved["num_factors"] == run.model.num_factors
    for key in ("macro/nmi", "macro/accuracy", "macro/bijection", "items/dcor", "users/dcor",
                "items/corr_across", "users/dimension_correlation"):
        assert key in saved, key


def test_report_html_is_self_contained(inspected):
    text = Path(inspected["report"]).read_text(encoding="utf-8")
    parser = _Refs()
    parser.feed(text)
    for tag, name, value in parser.refs:
        if name == "href":
            assert value.startswith("#") and value[1:] in parser.ids, (tag, value)
        else:
            assert value.startswith("data:"), (tag, name, value[:60])
    assert not parser.tags & {"script", "link", "iframe", "object", "embed"}
    assert "url(" not in text and "@import" not in text
    # one embedded picture per PNG written, each decoding to that PNG
    assert len(parser.images) == len(PLOTS)
    written = {p.read_bytes() for p in inspected["plots"].values()}
    for src in parser.images:
        head, _, payload = src.partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(payload) in written


def test_report_states_the_run_the_recall_definition_and_the_explained_user(run, inspected):
    text = Path(inspected["report"]).read_text(encoding="utf-8")
    for needle in ("macridvae", "ml-latest-small", "heldout", "popularity",
                   "Recall@k = hits / min(k, |test items|), Liang et al.",
                   f"{run.best_epoch} of 2 by validation {run.config.train.select}",
                   f"Example user {inspected['user']}", "better", "lower", "higher"):
        assert needle in text, needle


def test_summary_table_lists_each_metric_with_its_direction(inspected):
    metrics = inspected["metrics"]
    table = summary_table(metrics)
    nmi = next(line for line in table.splitlines() if line.strip().startswith("NMI "))
    assert f"{metrics['macro/nmi']:.3f}" in nmi and nmi.endswith("higher")
    dcor = next(line for line in table.splitlines() if "distance correlation" in line)
    assert f"{metrics['items/dcor']:.3f}" in dcor and f"{metrics['users/dcor']:.3f}" in dcor
    assert dcor.endswith("lower")


# -- explanations -------------------------------------------------------------------------
def test_explanations_give_the_factor_its_categories_and_the_users_own_items(run):
    data, test = run.split.train, run.split.test
    row = int(np.argmax(np.diff(test.history.indptr)))  # a held-out user with a history
    u = int(test.users[row])
    raw = str(data.user_ids[u])
    known = set(test.history[row].indices) | set(test.target[row].indices)
    weights = run.model.item_factor_weights().detach().numpy()
    index = {item: i for i, item in enumerate(data.item_ids)}
    k = run.model.num_factors

    rows = explain_recommendations(run, raw, 5)

    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        i = index[r["item"]]
        assert i not in known
        assert 0 <= r["factor"] < k and 0 < r["share"] <= 1
        assert r["item_categories"] == [data.category_names[c]
                                        for c in np.flatnonzero(data.item_categories[i])]
        cats = r["factor_categories"]
        assert 1 <= len(cats) <= 3
        assert {c["category"] for c in cats} <= set(data.category_names)
        lifts = [c["lift"] for c in cats]
        assert lifts == sorted(lifts, reverse=True)
        drivers = [index[d["item"]] for d in r["drivers"]]
        assert len(drivers) == 3 and set(drivers) <= known
        strength = [d["weight"] for d in r["drivers"]]
        assert strength == sorted(strength, reverse=True)
        np.testing.assert_allclose(strength, weights[drivers, r["factor"]], rtol=1e-5)
        np.testing.assert_allclose(strength[0], weights[list(known), r["factor"]].max(),
                                   rtol=1e-5)


def test_factor_top_categories_ranks_by_lift_not_by_size():
    # six items: five "Big", one "Small"; factor 0 holds three Big items, factor 1 two Big
    # and the Small one. P(c | factor 1) = 2/3 Big, 1/3 Small; P(Big) = 5/6, P(Small) = 1/6;
    # so the lifts in factor 1 are Big 0.8 and Small 2.0: Small first despite its share.
    weights = np.eye(2)[[0, 0, 0, 1, 1, 1]]
    cats = np.array([[1, 0]] * 5 + [[0, 1]], dtype=float)
    top = factor_top_categories(weights, cats, ["Big", "Small"])
    assert [c["category"] for c in top[1]] == ["Small", "Big"]
    np.testing.assert_allclose([c["lift"] for c in top[1]], [2.0, 0.8])
    np.testing.assert_allclose([c["share"] for c in top[1]], [1 / 3, 2 / 3])
    assert [c["category"] for c in top[0]] == ["Big"]  # Small has no share in factor 0
    assert factor_top_categories(weights, None, []) == [[], []]


def test_print_explanations_prints_each_item_with_its_factor(run, capsys):
    raw = str(run.split.train.user_ids[run.split.test.users[0]])
    print_explanations(run, raw, 3)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"top 3 for user {raw} (")
    assert sum(line.lstrip().startswith(("1.", "2.", "3.")) for line in out) == 3
    assert sum("the user's items in factor" in line for line in out) == 3


# -- command line and other models ----------------------------------------------------------
def test_inspect_command_prints_the_summary_and_the_report_path(run, cli_inspect):
    inspected, output = cli_inspect
    assert summary_table(inspected["metrics"]) in output
    assert f"factor metrics (K = {run.model.num_factors})" in output
    assert f"report: {run.path / 'inspect' / 'report.html'}" in output


def test_inspect_explains_the_user_asked_for_into_another_folder(run, tmp_path):
    raw = str(run.split.train.user_ids[run.split.test.users[1]])
    result = inspect_run(run, tmp_path, raw, max_items=30, max_users=50)
    assert result["user"] == raw and result["report"] == tmp_path / "report.html"
    assert result["plots"]["user"] == tmp_path / f"user_{raw}.png"
    assert f"Example user {raw}" in result["report"].read_text(encoding="utf-8")


def test_inspect_command_rejects_an_unknown_user_before_computing(run, tmp_path):
    result = CliRunner().invoke(inspect_command, [str(run.path), "--out", str(tmp_path),
                                                  "--user", "nobody"])
    assert result.exit_code == 2
    assert "unknown user id 'nobody'" in result.output
    assert not list(tmp_path.iterdir())


def test_inspect_works_for_a_graph_model_and_a_run_without_results(tmp_path):
    cfg = resolve("disengcn", overrides=["data.protocol=ratio"])
    split = build_split(cfg)
    model = build_model(cfg, split).eval()
    torch.manual_seed(0)
    result = inspect_run(Run(tmp_path, cfg, split, model, 0), max_items=100, max_users=100)
    assert set(result["plots"]) == PLOTS - {"training_curves"}  # no metrics.jsonl
    assert all(_is_png(p) for p in result["plots"].values())
    assert "sample of 100" in result["users_measured"]
    assert result["metrics"]["num_factors"] == model.num_factors
    text = Path(result["report"]).read_text(encoding="utf-8")
    assert "No results.json" in text and "Recall@k" not in text.split("Factor metrics")[0]


def test_inspect_works_without_categories_or_titles(run, tmp_path):
    s = run.split
    train = dataclasses.replace(s.train, item_categories=None, category_names=[],
                                item_titles=None)
    bare = Run(run.path, run.config, Split(train, s.valid, s.test, s.protocol, s.seed),
               run.model, run.best_epoch)
    result = inspect_run(bare, tmp_path, max_items=50, max_users=50)
    assert set(result["plots"]) == PLOTS - {"factor_category"}
    assert not any(key.startswith("macro/") for key in result["metrics"])
    for r in result["explanations"]:
        assert r["title"] == f"item {r['item']}" and r["factor_categories"] == []
        assert all(d["title"] == f"item {d['item']}" for d in r["drivers"])


def test_long_titles_are_cut_to_width_but_keep_their_year():
    title = "Crouching Tiger, Hidden Dragon (Wo hu cang long) (2000)"
    short = shorten(title, 40)
    assert len(short) == 40 and short.endswith("… (2000)") and short.startswith("Crouching")
    assert shorten("Heat (1995)", 40) == "Heat (1995)"
    assert shorten("Science Fiction and Fantasy", 12) == "Science Fic…"


def test_factor_categories_without_a_notable_lift_say_so():
    flat = [{"category": "Drama", "share": 0.3, "lift": 1.01},
            {"category": "Comedy", "share": 0.2, "lift": 1.00}]
    assert _categories_text(flat) == "no category stands out (lifts under ×1.05)"
    notable = [{"category": "Horror", "share": 0.1, "lift": 2.5}, *flat]
    assert _categories_text(notable) == "Horror ×2.50, Drama ×1.01, Comedy ×1.00"
    assert _categories_text([]) == ""
