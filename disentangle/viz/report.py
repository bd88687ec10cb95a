"""The report of a run: factor metrics, pictures and one explained user, in one HTML file.

:func:`inspect_run` reads a loaded run (:func:`disentangle.train.run.load_run`), computes
:func:`~disentangle.metrics.factors.factor_report`, draws every plot of
:mod:`disentangle.viz.plots` and writes, in ``<run_dir>/inspect/`` by default:

==========================  ======================================================
``factors.json``            the factor metrics (the flat dict of ``factor_report``)
``training_curves.png``     loss and validation metrics per epoch
``factor_category.png``     factor × category lift heatmap (datasets with categories)
``tsne.png``                t-SNE of item factor embeddings
``channel_correlation.png`` |correlation| between factor dimensions, items and users
``user_<id>.png``           one user's factor shares and recommendations per factor
``report.html``             all of the above in one self-contained page
==========================  ======================================================

The page embeds its images as ``data:`` URIs and its style inline: it opens from disk in any
browser, with no server, no script and no other file. Only the K-factor contract is used,
so the report works for every model.
"""
from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..explain import (
    eval_mode,
    explain_recommendations,
    factor_category_lift,
    factor_top_categories,
    item_titles,
    item_weights,
    known_items,
    recommend,
    user_index,
)
from ..metrics.factors import channel_correlation, factor_report
from ..metrics.ranking import to_torch_csr
from ..models.recommender import require_factors
from ..runs import atomic_write, read_metrics, write_json
from . import plots

if TYPE_CHECKING:
    import scipy.sparse as sp

    from ..runs import Run

__all__ = ["METRIC_INFO", "evaluation_users", "inspect_run", "summary_table"]

REPORT, FACTORS, INSPECT = "report.html", "factors.json", "inspect"

#: ``(key, label, better, meaning)`` of the macro metrics of ``factor_report``.
MACRO_INFO = [
    ("macro/nmi", "NMI", "higher",
     ("Normalised mutual information between each item's top factor and its category "
      "(single-category items): 0 = unrelated, 1 = one determines the other.")),
    ("macro/ami", "AMI", "higher",
     "NMI corrected for chance: 0 = what a random assignment of items to factors gets."),
    ("macro/ari", "ARI", "higher",
     ("Adjusted Rand index between the grouping by top factor and by category "
      "(single-category items): 0 = chance, 1 = the same grouping.")),
    ("macro/accuracy", "matched accuracy", "higher",
     ("Share of single-category items whose top factor is paired with their category by "
      "the best one-to-one pairing of factors with categories (Hungarian). With K factors "
      "at most K categories can be paired.")),
    ("macro/nmi_multilabel", "NMI, all labelled items", "higher",
     ("NMI over every item with a category, each item's weight split evenly over its "
      "categories.")),
    ("macro/accuracy_multilabel", "matched accuracy, all labelled items", "higher",
     "Matched accuracy with the same weighting."),
    ("macro/bijection", "bijection (0–3)", "higher",
     ("Do factors and categories pair off one-to-one by lift P(k,c) / P(k)P(c)? +1 every "
      "factor has its own best category, +1 every category its own best factor, +1 the two "
      "pairings agree. 3 needs K = C; with K ≠ C the most is 1.")),
    ("macro/num_labelled", "items with a category", "",
     "Items counted by the multi-label scores."),
    ("macro/num_single_label", "items with exactly one category", "",
     "Items counted by NMI, AMI, ARI and matched accuracy."),
]

#: ``(suffix, label, better, meaning)`` of the independence metrics, for items and users.
INDEPENDENCE_INFO = [
    ("corr_across", "|corr| across factors", "lower",
     ("Mean absolute Pearson correlation between a dimension of one factor and a dimension "
      "of another: 0 = the factors are linearly unrelated.")),
    ("dcor", "distance correlation", "lower",
     ("Mean distance correlation between pairs of factors, each factor a d-dimensional "
      "vector (Székely et al. 2007): 0 only for independent factors; sees non-linear "
      "dependence too.")),
    ("block_diagonal", "block-diagonality", "higher",
     ("|corr| within factors minus |corr| across them (−1 to 1): how much more a "
      "dimension goes with its own factor than with others. Read it beside the across "
      "value: a model whose dimensions are all independent scores 0 here.")),
    ("dimension_correlation", "|corr| within a factor (micro)", "lower",
     ("Micro disentanglement: mean absolute correlation between the dimensions inside one "
      "factor (= within, off the diagonal); 0 = each dimension varies on its own.")),
]

#: Every metric key of ``factor_report`` with its label, better direction and meaning.
METRIC_INFO: dict[str, tuple[str, str, str]] = {
    **{key: (label, better, meaning) for key, label, better, meaning in MACRO_INFO},
    **{f"{who}/{suffix}": (f"{label} ({who})", better, meaning)
       for who in ("items", "users") for suffix, label, better, meaning in INDEPENDENCE_INFO},
}


# -- which users are measured ----------------------------------------------------------------
def evaluation_users(run: Run, max_users: int = 2000, seed: int = 0) -> tuple[np.ndarray, Any, str]:
    """The users whose factor embeddings are measured: ``(indices, history CSR, wording)``.

    Held-out-protocol runs use their test users with their fold-in history (the users the
    model never saw, as in the MacridVAE paper). Other runs use a seeded sample of at most
    ``max_users`` training users with at least one training item, with their training rows.
    """
    split = run.split
    if split.protocol == "heldout" and len(split.test):
        return (np.asarray(split.test.users, dtype=np.int64), split.test.history,
                f"the {len(split.test)} held-out test users, from their fold-in history")
    csr = split.train.csr
    active = np.flatnonzero(np.diff(csr.indptr) > 0)
    if len(active) > max_users:
        rng = np.random.default_rng(seed)
        active = np.sort(rng.choice(active, size=max_users, replace=False))
        wording = (f"a random sample of {len(active)} of the {split.train.num_users} "
                   f"training users (seed {seed}), from their training rows")
    else:
        wording = f"all {len(active)} training users, from their training rows"
    return active, csr[active], wording


def _default_user(run: Run, users: np.ndarray, history: sp.csr_matrix) -> str:
    """A typical measured user: the one with the median history size (first on ties)."""
    sizes = np.diff(history.indptr)
    ok = np.flatnonzero(sizes > 0)
    if not len(ok):
        return str(run.split.train.user_ids[users[0]])
    median = np.sort(sizes[ok])[len(ok) // 2]
    pick = ok[np.argmax(sizes[ok] == median)]
    return str(run.split.train.user_ids[users[pick]])


# -- the report ----------------------------------------------------------------------------
def inspect_run(run: Run, out_dir: str | Path | None = None, user: str | None = None, *,
                max_items: int = 2000, max_users: int = 2000, seed: int = 0,
                k: int = 10) -> dict[str, Any]:
    """Compute the factor metrics of a run and write its plots, ``factors.json`` and
    ``report.html``.

    Args:
        run: a loaded run (:func:`disentangle.train.run.load_run`).
        out_dir: where to write (default ``<run_dir>/inspect``; created if needed).
        user: raw id of the user to explain (default: the measured user with the median
            history size); ``KeyError`` if the run does not know it.
        max_items: items drawn (seeded) for the t-SNE.
        max_users: training users sampled for the metrics when the run is not held-out.
        seed: seed of every subsample.
        k: recommendations explained for the example user.

    Returns a dict: ``metrics`` (as in ``factors.json``), ``users_measured`` (wording),
    ``user`` (the explained raw id), ``explanations`` (from
    :func:`~disentangle.explain.explain_recommendations`), and the paths
    ``report``, ``factors`` and ``plots`` (name to path).
    """
    model = require_factors(run.model, "disentangle inspect")
    data = run.split.train
    out = Path(out_dir) if out_dir is not None else Path(run.path) / INSPECT
    out.mkdir(parents=True, exist_ok=True)
    if user is not None:
        user_index(data, user)  # fail early, before the slow part, on an unknown id
    device = next(model.parameters()).device
    users, history, wording = evaluation_users(run, max_users, seed)
    users_t = torch.from_numpy(users).to(device)
    history_t = to_torch_csr(history, device)
    metrics = factor_report(model, data, users_t, history_t, max_samples=max_users, seed=seed)
    write_json(out / FACTORS, metrics)

    with eval_mode(model):
        weights = item_weights(model)
        item_emb = model.item_factor_embeddings().detach().cpu().numpy()
        user_emb = model.factor_embeddings(users_t, history_t).detach().cpu().numpy()
    num_factors = weights.shape[1]
    cats, names = data.item_categories, list(data.category_names)
    has_cats = cats is not None and len(names) > 0
    top_cats = factor_top_categories(weights, cats, names) if has_cats else \
        [[] for _ in range(num_factors)]

    figures = [figure for figure in (
        _training_figure(run, out),
        _category_figure(weights, cats, names, top_cats, out) if has_cats else None,
        _tsne_figure(item_emb, weights, cats if has_cats else None,
                     names if has_cats else (), out, max_items, seed),
        _correlation_figure(item_emb, user_emb, wording, out, max_users, seed),
    ) if figure is not None]

    raw_user = str(user) if user is not None else _default_user(run, users, history)
    explanations = explain_recommendations(run, raw_user, k)
    shares, per_factor, n_known, pool = _user_view(run, raw_user, num_factors)
    notes = [f"factor {f}: " + (_categories_text(top_cats[f]) or "no category above 1%")
             for f in range(num_factors)] if has_cats else None
    user_png = plots.user_factors_plot(shares, per_factor, out / f"user_{_safe(raw_user)}.png",
                                       user_label=f"user {raw_user}", factor_notes=notes)

    report = out / REPORT
    page = _html(run, metrics, wording, figures, raw_user, user_png, explanations, n_known,
                 pool, has_cats)
    atomic_write(report, page.encode("utf-8"))
    return {"metrics": metrics, "users_measured": wording, "user": raw_user,
            "explanations": explanations, "report": report, "factors": out / FACTORS,
            "plots": {**{p.stem: p for _, p, _ in figures}, "user": user_png}}


# -- the report's figures: each step draws one and returns (heading, path, caption) ----------
Figure = tuple[str, Path, str]


def _training_figure(run: Run, out: Path) -> Figure | None:
    """Loss and validation metrics per epoch, from the run's ``metrics.jsonl`` (none when the
    run logged no epoch)."""
    records = read_metrics(run.path)
    if not records:
        return None
    cfg = run.config
    liang = run.split.protocol == "heldout"
    validated = run.split.has_validation
    path = plots.training_curves(
        records, out / "training_curves.png", best_epoch=run.best_epoch,
        select=cfg.train.select if validated else None, ks=cfg.train.ks,
        recall_key="recall_liang" if liang else "recall", recall_label="Recall")
    if validated:
        shown = (f", its logged parts, and the validation metrics "
                 f"({_recall_definition(liang)})")
        chosen = f"the best by validation {cfg.train.select}"
    else:
        shown, chosen = " and its logged parts (no validation set)", "the last"
    caption = (f"Mean training loss per epoch{shown}. The dotted line marks epoch "
               f"{run.best_epoch}, {chosen}; its model is the one evaluated and "
               f"inspected here.")
    return "Training curves", path, caption


def _category_figure(weights: np.ndarray, cats, names: list[str], top_cats: list[list[dict]],
                     out: Path) -> Figure:
    """The factor × category lift heatmap, each factor's first-named category in bold."""
    lift = factor_category_lift(weights, cats)
    first = np.zeros_like(lift, dtype=bool)
    column = {name: j for j, name in enumerate(names)}
    for f, listed in enumerate(top_cats):
        if listed:
            first[f, column[listed[0]["category"]]] = True
    path = plots.factor_category_heatmap(
        lift, names, out / "factor_category.png",
        value_label="lift = P(category | factor) / P(category)",
        title="Which categories each factor over-represents (lift)", highlight=first,
        center=1.0, log_scale=True, fmt="{:.2f}")
    return ("Factors × categories", path,
            ("Each cell is the lift P(category | factor) / P(category): how much "
             "more common the category is among the factor's items than among all "
             "items (each item contributes its factor weights, split evenly over "
             "its categories). White = 1, no preference; red = over-represented, "
             "blue = under-represented. Unlike raw shares, the lift favours "
             "neither large categories (Drama) nor large factors. Bold: the "
             "category each factor's explanations name first (categories under 1% "
             "of a factor are not named). Factors that coincide with categories "
             "show one deep red cell per row and per column; macro/bijection "
             "scores that on this matrix."))


def _tsne_figure(item_emb: np.ndarray, weights: np.ndarray, cats, names, out: Path,
                 max_items: int, seed: int) -> Figure:
    """t-SNE of a seeded sample of items, coloured by top factor (and by category when the
    data has categories)."""
    num_factors = weights.shape[1]
    n_items = min(max_items, weights.shape[0])
    path = plots.item_tsne(item_emb, weights, out / "tsne.png", item_categories=cats,
                           category_names=names, max_items=max_items, seed=seed)
    return ("t-SNE of item factor embeddings", path,
            f"{n_items} items (seeded sample of {weights.shape[0]}), each the "
            f"concatenation of its K = {num_factors} factor embeddings, reduced by PCA "
            f"then t-SNE. Left: colour = the item's top factor. "
            + ("Right: colour = the item's category, for items with exactly one "
               "category (grey: several or none); its colours are unrelated to the "
               "factor colours. Factors that capture categories make the two panels "
               "look alike." if cats is not None else ""))


def _correlation_figure(item_emb: np.ndarray, user_emb: np.ndarray, wording: str, out: Path,
                        max_users: int, seed: int) -> Figure:
    """|Pearson correlation| between the K × d dimensions, of items and (with two or more
    measured users) of users."""
    num_factors = item_emb.shape[1]
    corr = {f"item factor embeddings ({item_emb.shape[0]} items)":
            channel_correlation(item_emb, max_samples=20 * max_users, seed=seed)}
    if user_emb.shape[0] >= 2:
        corr[f"user factor embeddings ({user_emb.shape[0]} users)"] = channel_correlation(
            user_emb, max_samples=20 * max_users, seed=seed)
    path = plots.channel_correlation_plot(corr, num_factors, out / "channel_correlation.png")
    return ("Correlation between factor dimensions", path,
            f"Absolute Pearson correlation between the K × d = {num_factors} × "
            f"{item_emb.shape[2]} dimensions; white lines separate the factors. "
            f"Dark off-diagonal blocks mean independent factors. Users are {wording}"
            + (" — with fewer users than dimensions, expect noisy correlations."
               if user_emb.shape[0] < user_emb.shape[1] * user_emb.shape[2] else "."))


def _user_view(run, raw_user: str, num_factors: int, pool: int = 100):
    """Factor shares of the user and, per factor, titles of the top-``pool`` recommendations
    that factor explains best."""
    data, model = run.split.train, run.model
    u = user_index(data, raw_user)
    row = known_items(run.split, u)
    device = next(model.parameters()).device
    with eval_mode(model):
        shares = model.user_factor_weights(
            torch.tensor([u], device=device), to_torch_csr(row, device))[0].cpu().numpy()
    recs = recommend(run, raw_user, pool)["items"]
    titles = dict(zip(data.item_ids, item_titles(data)))
    per_factor: list[list[str]] = [[] for _ in range(num_factors)]
    for r in recs:
        per_factor[r["factor"]].append(str(titles[r["item"]]))
    return shares, per_factor, row.nnz, len(recs)


def _safe(raw: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in raw)[:64] or "user"


def _categories_text(cats: list[dict], notable: float = 1.05) -> str:
    """The factor's top categories with their lifts, or, when none is over-represented by at
    least ``notable``, a plain statement of that (a list of ×1.00 would read as a finding)."""
    if cats and max(c["lift"] for c in cats) < notable:
        return f"no category stands out (lifts under ×{notable:.2f})"
    return ", ".join(f"{c['category']} ×{c['lift']:.2f}" for c in cats)


def _recall_definition(liang: bool) -> str:
    return ("Recall@k = hits / min(k, |test items|), Liang et al." if liang
            else "Recall@k = hits / |test items|")


# -- formatting ------------------------------------------------------------------------------
#: Metrics that are counts or small integer scores, printed without decimals.
INTEGER_METRICS = {"num_factors", "macro/bijection", "macro/num_labelled",
                   "macro/num_single_label"}


def _fmt(v: Any, key: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, int) or key in INTEGER_METRICS:
        return f"{int(v)}"
    return f"{v:.3f}"


def summary_table(metrics: dict[str, Any]) -> str:
    """The factor metrics of :func:`inspect_run` as a short plain-text table."""
    k = metrics.get("num_factors")
    lines = [f"factor metrics (K = {k})"]
    macro = [(key, label, better) for key, label, better, _ in MACRO_INFO
             if key in metrics and better]
    if macro:
        lines.append(f"{'macro: top factor vs category':<40}{'value':>8}   better")
        for key, label, better in macro:
            lines.append(f"  {label:<38}{_fmt(metrics[key], key):>8}   {better}")
        single = _fmt(metrics.get("macro/num_single_label"), "macro/num_single_label")
        labelled = _fmt(metrics.get("macro/num_labelled"), "macro/num_labelled")
        lines.append(f"  (over {single} single-category items; multi-label over {labelled})")
    indep = [row for row in INDEPENDENCE_INFO
             if any(f"{who}/{row[0]}" in metrics for who in ("items", "users"))]
    if indep:
        lines.append(f"{'independence between factors':<40}{'items':>8}{'users':>8}   better")
        for suffix, label, better, _ in indep:
            lines.append(f"  {label:<38}{_fmt(metrics.get(f'items/{suffix}')):>8}"
                         f"{_fmt(metrics.get(f'users/{suffix}')):>8}   {better}")
    return "\n".join(lines)


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1d1d1f;margin:0;background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:36px 0 8px;
 border-bottom:2px solid #e3e6ea;padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}
.sub{color:#5f6670;margin:0 0 12px}nav a{margin-right:14px;color:#0b5cad;text-decoration:none}
table{border-collapse:collapse;margin:8px 0 4px;font-size:14px}
th,td{padding:5px 10px;text-align:left;vertical-align:top;border-bottom:1px solid #e8eaed}
th{background:#f0f2f5;font-weight:600}td.num,th.num{text-align:right;
 font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{background:none;font-weight:600;width:170px}
.note{color:#5f6670;font-size:13.5px;margin:4px 0 12px}
.better{white-space:nowrap;color:#36404a}.meaning{color:#3c434b;font-size:13.5px}
figure{margin:18px 0 28px}figure img{max-width:100%;height:auto;border:1px solid #e3e6ea}
figcaption{color:#3c434b;font-size:13.5px;margin-top:6px;max-width:980px}
.tag{display:inline-block;padding:0 6px;border-radius:4px;background:#eef3fb;
 color:#0b4a8b;font-size:12.5px;margin:1px 2px 1px 0;white-space:nowrap}
.muted{color:#6b7280}.factor{font-weight:600;white-space:nowrap}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _results_html(run) -> str:
    path = Path(run.path) / "results.json"
    if not path.is_file():
        return '<p class="note">No results.json in the run directory (the run did not finish).</p>'
    results = json.loads(path.read_text())
    test, pop = results.get("test", {}), results.get("popularity", {}).get("test", {})
    liang = results.get("protocol") == "heldout"
    recall = "recall_liang" if liang else "recall"
    ks = run.config.train.ks
    rows = [(f"NDCG@{k}", f"ndcg@{k}") for k in ks] + [(f"Recall@{k}", f"{recall}@{k}")
                                                       for k in ks]
    body = "".join(
        f'<tr><td>{_e(label)}</td><td class="num">{_fmt(test.get(key))}</td>'
        f'<td class="num">{_fmt(pop.get(key))}</td></tr>' for label, key in rows)
    note = (f"{_e(test.get('users', '?'))} test users, {_e(results.get('protocol'))} protocol; "
            f"every item ranked, the user's known items masked. "
            f"<b>{_e(_recall_definition(liang))}</b>; NDCG@k with binary relevance, ideal DCG "
            f"over min(k, |test items|). Compare numbers only within one protocol.")
    if test.get("users_without_target"):
        note += (f" {_e(test['users_without_target'])} test user(s) without target items "
                 f"count as 0 in every mean.")
    return (f'<table><tr><th>metric</th><th class="num">{_e(run.config.model_name)}</th>'
            f'<th class="num">popularity</th></tr>{body}</table><p class="note">{note}</p>')


def _metrics_html(metrics: dict[str, Any], wording: str) -> str:
    parts = []
    macro = [row for row in MACRO_INFO if row[0] in metrics]
    if macro:
        body = "".join(
            f'<tr><td>{_e(label)}</td><td class="num">{_fmt(metrics[key], key)}</td>'
            f'<td class="better">{_e(better or "—")}</td><td class="meaning">{_e(meaning)}</td>'
            f'</tr>' for key, label, better, meaning in macro)
        parts.append(
            '<h3>Macro: do factors coincide with categories?</h3>'
            '<p class="note">Each item belongs to its top factor (largest item-factor weight) '
            'and is compared with its categories.</p>'
            '<table><tr><th>metric</th><th class="num">value</th><th>better</th>'
            f'<th>meaning</th></tr>{body}</table>')
    indep = [row for row in INDEPENDENCE_INFO
             if any(f"{who}/{row[0]}" in metrics for who in ("items", "users"))]
    if indep:
        body = "".join(
            f'<tr><td>{_e(label)}</td><td class="num">{_fmt(metrics.get(f"items/{s}"))}</td>'
            f'<td class="num">{_fmt(metrics.get(f"users/{s}"))}</td>'
            f'<td class="better">{_e(better)}</td><td class="meaning">{_e(meaning)}</td></tr>'
            for s, label, better, meaning in indep)
        parts.append(
            '<h3>Independence: are the factors unrelated to each other?</h3>'
            f'<p class="note">On the K × d factor embeddings of every item and of {_e(wording)}.'
            '</p><table><tr><th>metric</th><th class="num">item factors</th>'
            '<th class="num">user factors</th><th>better</th><th>meaning</th></tr>'
            f'{body}</table>')
    known = {row[0] for row in MACRO_INFO} | {f"{w}/{r[0]}" for w in ("items", "users")
                                              for r in INDEPENDENCE_INFO}
    known |= {"num_factors", "items/corr_within", "users/corr_within"}
    extra = {key: v for key, v in metrics.items() if key not in known}
    if extra:
        body = "".join(f'<tr><td>{_e(key)}</td><td class="num">{_fmt(v, key)}</td></tr>'
                       for key, v in extra.items())
        parts.append(f'<h3>Other</h3><table>{body}</table>')
    parts.append('<p class="note">All values are also in <code>factors.json</code>.</p>')
    return "".join(parts)


def _explanations_html(explanations: list[dict], has_cats: bool) -> str:
    rows = []
    for r in explanations:
        cats = "".join(f'<span class="tag">{_e(c)}</span>' for c in r["item_categories"])
        fcats = f'<td>{_e(_categories_text(r["factor_categories"]))}</td>' if has_cats else ""
        drivers = "<br>".join(f'{_e(d["title"])} <span class="muted">({d["weight"]:.2f})</span>'
                              for d in r["drivers"]) or '<span class="muted">none</span>'
        rows.append(
            f'<tr><td class="num">{r["rank"]}</td><td>{_e(r["title"])}<br>{cats}</td>'
            f'<td class="factor">factor {r["factor"]} '
            f'<span class="muted">({r["share"]:.0%})</span></td>'
            f'{fcats}<td>{drivers}</td></tr>')
    head = "<th>factor's top categories (lift)</th>" if has_cats else ""
    return ('<table><tr><th class="num">#</th><th>recommended item</th><th>from factor '
            f'(share)</th>{head}<th>the user\'s items strongest in that factor (weight)</th>'
            '</tr>' + "".join(rows) + "</table>")


def _html(run, metrics, wording, figures, raw_user, user_png, explanations, n_known, pool,
          has_cats) -> str:
    cfg, split = run.config, run.split
    data = split.train
    model_cfg = getattr(cfg.model, "__dict__", {})
    dim = model_cfg.get("dim", model_cfg.get("factor_dim"))
    records = read_metrics(run.path)
    summary = [
        ("model", f"{cfg.model_name} — {run.model!r}"),
        ("factors", f"K = {metrics.get('num_factors')}" + (f", d = {dim} each" if dim else "")),
        ("dataset", f"{cfg.data.split_dir or cfg.data.dataset}: {data.num_users} users, {data.num_items} items, "
                    f"{data.num_interactions} training interactions"
                    + (f", {len(data.category_names)} categories" if has_cats else "")),
        ("protocol", (f"{split.protocol} (split seed {split.seed}); {len(split.valid)} "
                      f"validation and {len(split.test)} test users")),
        ("best epoch", (f"{run.best_epoch} of {len(records) or '?'} by validation "
                        f"{cfg.train.select}" if split.has_validation else
                        f"{run.best_epoch}, the last (no validation set)")),
    ]
    if split.item_metadata:
        summary.append(("titles and categories", split.item_metadata))
    kv = "".join(f'<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in summary)
    figs = "".join(
        f'<figure id="fig-{p.stem}"><h3>{_e(h)}</h3>{_img(p, h)}<figcaption>{_e(c)}'
        f'</figcaption></figure>' for h, p, c in figures)
    anchors = [("run", "Run"), ("factor-metrics", "Factor metrics"), ("figures", "Pictures"),
               ("user", f"User {raw_user}")]
    nav = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in anchors)
    title = f"{cfg.model_name} on {cfg.data.split_dir or cfg.data.dataset}"
    cats_note = (", under the factor's most over-represented categories (×lift = how much "
                 "more common the category is in the factor than among all items; ×1.00 = "
                 "just as common, so lifts near 1 mean the factor is not about any category "
                 "in particular)." if has_cats else ".")
    described = "its categories and by" if has_cats else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} — disentangle report</title><style>{_CSS}</style></head>
<body><main>
<h1>{_e(title)}</h1>
<p class="sub">disentangle run report · {_e(Path(run.path).resolve())} ·
written {_e(time.strftime('%Y-%m-%d %H:%M'))}</p>
<nav>{nav}</nav>
<section id="run"><h2>Run</h2><table class="kv">{kv}</table>
<h3>Test metrics beside popularity</h3>{_results_html(run)}</section>
<section id="factor-metrics"><h2>Factor metrics</h2>{_metrics_html(metrics, wording)}</section>
<section id="figures"><h2>Pictures</h2>{figs}</section>
<section id="user"><h2>Example user {_e(raw_user)}</h2>
<p class="note">The user has {n_known} known items (masked from the recommendations).
Left: how much each factor drives the user's preferences. Right: for each factor, the best
of the user's top {pool} recommendations whose score comes mostly from that factor{cats_note}</p>
<figure>{_img(user_png, f"factor shares of user {raw_user}")}</figure>
<h3>Top {len(explanations)} recommendations, explained</h3>
<p class="note">Each recommendation comes from the factor with the largest share of its score.
The factor is described by {described} the user's own items that belong to it most
(weight = the item's weight in that factor, 0 to 1).</p>
{_explanations_html(explanations, has_cats)}</section>
</main></body></html>
"""
