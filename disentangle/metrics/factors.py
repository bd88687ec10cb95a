"""Disentanglement metrics: how well K factors align with known categories and how
independent they are.

Plain functions on arrays. Every argument may be a NumPy array or a torch tensor (converted
with ``np.asarray`` after ``detach().cpu()``); every result is a Python float, an int, or a
NumPy array. Where scikit-learn or SciPy already computes a metric it is used as is:
:func:`sklearn.metrics.normalized_mutual_info_score`, ``adjusted_mutual_info_score``,
``adjusted_rand_score``, :func:`scipy.optimize.linear_sum_assignment` (Hungarian matching),
:func:`numpy.corrcoef`, :func:`scipy.spatial.distance.pdist`.

Three levels, following DESIGN.md ("The K-factor contract"):

* **Macro** — do the factors coincide with item categories?
  :func:`factor_category_matrix`, :func:`macro_alignment`, :func:`matched_accuracy`,
  :func:`bijection_score`.
* **Independence between factors** — is channel ``k`` of a representation unrelated to
  channel ``l``? :func:`channel_correlation`, :func:`block_diagonal_score`,
  :func:`distance_correlation`, :func:`factor_distance_correlation`.
* **Micro** — inside one factor, does each dimension vary on its own?
  :func:`dimension_independence`, :func:`latent_traversal`, :func:`summarise_categories`.

:func:`factor_report` computes all of them for a model implementing
:class:`~disentangle.models.base.FactorRecommender`.

**Categories, stated once.** ``item_categories`` is the ``M x C`` multi-hot matrix of
:class:`~disentangle.data.InteractionData`. Items without any category are excluded from
every macro score. Two rules for multi-label items, both reported:

* *single-label scores* (``nmi``, ``ami``, ``ari``, ``accuracy``): only items with exactly
  one category are used, so every item has one true label and the scikit-learn scores apply
  unchanged;
* *multi-label scores* (``nmi_multilabel``, ``accuracy_multilabel``, and the
  factor × category matrix behind ``bijection``): every labelled item is used, and each
  (item, category) pair counts with weight ``1 / |categories of the item|``, so every item
  contributes a total weight of one. AMI and ARI are defined on integer counts (their
  expectation is over a hypergeometric model), so they have no multi-label variant here.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import pdist, squareform
from scipy.stats import entropy
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
)
from sklearn.metrics.cluster import contingency_matrix

if TYPE_CHECKING:
    import torch

    from disentangle.data import InteractionData
    from disentangle.models.base import FactorRecommender

__all__ = [
    "bijection_score",
    "block_diagonal_score",
    "channel_correlation",
    "dimension_independence",
    "distance_correlation",
    "factor_category_matrix",
    "factor_distance_correlation",
    "factor_report",
    "latent_traversal",
    "macro_alignment",
    "matched_accuracy",
    "summarise_categories",
]

_NORMALIZE = (None, "all", "factor", "category")


# -- helpers ------------------------------------------------------------------------------
def _np(x: Any, dtype=None) -> np.ndarray:
    """A NumPy view of an array or a (possibly grad-tracking, possibly GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_ndim(name: str, x: np.ndarray, ndim: int, shape: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name} has shape {x.shape}: expected {shape}")


def _subsample(n: int, max_samples: int | None, seed: int) -> np.ndarray | slice:
    """Sorted row indices of a seeded subsample of size ``max_samples`` (all rows if fewer)."""
    if max_samples is None or n <= max_samples:
        return slice(None)
    if max_samples < 2:
        raise ValueError(f"max_samples={max_samples!r} is out of range: expected >= 2 or None")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_samples, replace=False))


def _labelled(item_factor_weights: ArrayLike,
              item_categories: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes; return ``(weights, categories)`` restricted to items with a category."""
    w = _np(item_factor_weights, np.float64)
    cats = _np(item_categories, np.float64)
    _check_ndim("item_factor_weights", w, 2, "M x K")
    _check_ndim("item_categories", cats, 2, "M x C")
    if w.shape[0] != cats.shape[0]:
        raise ValueError(f"item_factor_weights has {w.shape[0]} rows but item_categories has "
                         f"{cats.shape[0]}: expected one row per item in both")
    keep = (cats > 0).any(axis=1)
    return w[keep], (cats[keep] > 0).astype(np.float64)


def _multilabel_contingency(top_factor: np.ndarray, cats: np.ndarray, k: int) -> np.ndarray:
    """``K x C`` table: row ``top_factor[i]`` receives ``cats[i] / |cats[i]|``."""
    share = cats / cats.sum(axis=1, keepdims=True)
    table = np.zeros((k, cats.shape[1]))
    np.add.at(table, top_factor, share)
    return table


def _weighted_nmi(table: np.ndarray) -> float:
    """NMI of a (possibly fractional) contingency table, arithmetic normalisation.

    Equals :func:`sklearn.metrics.normalized_mutual_info_score` on integer tables, which
    only accepts integer counts, hence this small re-implementation for weighted pairs.
    """
    p = table / table.sum()
    pr, pc = p.sum(axis=1), p.sum(axis=0)
    h_r, h_c = entropy(pr), entropy(pc)
    if h_r == 0 and h_c == 0:  # both labelings are a single cluster: sklearn's convention
        return 1.0
    nz = p > 0
    mi = float(np.sum(p[nz] * np.log(p[nz] / np.outer(pr, pc)[nz])))
    return float(np.clip(mi / ((h_r + h_c) / 2), 0.0, 1.0))


def _matched_fraction(table: np.ndarray) -> float:
    """Share of the table's mass on a maximum-weight one-to-one matching of rows to columns."""
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


# -- macro --------------------------------------------------------------------------------
def factor_category_matrix(item_factor_weights: ArrayLike, item_categories: ArrayLike, *,
                           normalize: str | None = "all") -> np.ndarray:
    """``K x C`` mass of each factor in each category.

    Entry ``(k, c)`` is ``sum_i w[i, k] * cats[i, c] / |cats[i]|`` over the items with at
    least one category: each item spreads its factor distribution ``w[i]`` (a row of
    ``item_factor_weights``) evenly over its categories. Items without a category are left
    out.

    Args:
        item_factor_weights: ``M x K``, rows are distributions over factors.
        item_categories: ``M x C`` multi-hot (any positive entry counts as membership).
        normalize: ``"all"`` (default) divides by the total, so the matrix is the joint
            distribution ``P(factor, category)`` over labelled items; ``"factor"`` makes each
            row sum to one, ``P(category | factor)``; ``"category"`` makes each column sum to
            one, ``P(factor | category)``; ``None`` keeps the raw mass (its total is the
            number of labelled items when the rows of ``w`` sum to one). Rows or columns of
            zero mass stay zero.
    """
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize={normalize!r} is out of range: expected one of {_NORMALIZE}")
    w, cats = _labelled(item_factor_weights, item_categories)
    mass = w.T @ (cats / cats.sum(axis=1, keepdims=True)) if len(w) else \
        np.zeros((w.shape[1], cats.shape[1]))
    if normalize == "all":
        total = mass.sum()
        return mass / total if total > 0 else mass
    if normalize is not None:
        axis = 1 if normalize == "factor" else 0
        sums = mass.sum(axis=axis, keepdims=True)
        return np.divide(mass, sums, out=np.zeros_like(mass), where=sums > 0)
    return mass


def matched_accuracy(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Hungarian-matched accuracy (the "clustering accuracy" of deep-clustering papers).

    The share of samples whose predicted cluster maps to their true class under the
    one-to-one map from clusters to classes that maximises that share (found by
    :func:`scipy.optimize.linear_sum_assignment` on the contingency table). With more
    clusters than classes, samples in unmatched clusters count as errors, and vice versa.
    """
    table = contingency_matrix(_np(labels_true).ravel(), _np(labels_pred).ravel())
    return _matched_fraction(table)


def bijection_score(matrix: ArrayLike) -> int:
    """Whether a ``K x C`` factor × category association is a bijection, scored 0 to 3.

    Reading of the MacridVAE paper (Ma et al., NeurIPS 2019, Sec. 4, "macro
    disentanglement"): with ``K`` set to the number of categories, the paper shows that the
    prototype each item is assigned to and the item's category are in one-to-one
    correspondence, and presents it qualitatively (t-SNE of items and prototypes coloured by
    category); it gives no number. This function turns that claim into a small integer:

    * +1 if the best category of each factor, ``argmax_c matrix[k, c]``, is one-to-one
      (no two factors share a best category);
    * +1 if the best factor of each category, ``argmax_k matrix[k, c]``, is one-to-one;
    * +1 if the two maps agree: ``best_factor[best_category[k]] == k`` for every factor and
      ``best_category[best_factor[c]] == c`` for every category (mutual best matches).

    A factor or category whose row or column is all zero has no best match, which costs the
    points that need it. Ties are broken toward the lower index (``np.argmax``). ``3`` means
    a bijection, which needs ``K == C``; with ``K != C`` at most one map can be one-to-one.

    The score is coarser than its range suggests: without ties, two one-to-one maps always
    agree (were they not inverse, summing row maxima and column maxima over the two
    matchings gives ``S_rows > S_cols > S_rows``), so it takes the values 0, 1 and 3.

    :func:`macro_alignment` passes the *lift* matrix ``P(k, c) / (P(k) P(c))`` so that a
    large category (Drama on MovieLens) or a large factor does not win every argmax.
    """
    m = _np(matrix, np.float64)
    _check_ndim("matrix", m, 2, "K x C")
    row_ok, col_ok = (m > 0).any(axis=1), (m > 0).any(axis=0)
    best_cat, best_fac = m.argmax(axis=1), m.argmax(axis=0)
    rows_one_to_one = bool(row_ok.all()) and len(np.unique(best_cat)) == m.shape[0]
    cols_one_to_one = bool(col_ok.all()) and len(np.unique(best_fac)) == m.shape[1]
    agree = (bool(row_ok.all() and col_ok.all())
             and np.array_equal(best_fac[best_cat], np.arange(m.shape[0]))
             and np.array_equal(best_cat[best_fac], np.arange(m.shape[1])))
    return int(rows_one_to_one) + int(cols_one_to_one) + int(agree)


def _lift(joint: np.ndarray) -> np.ndarray:
    pk, pc = joint.sum(axis=1), joint.sum(axis=0)
    denom = np.outer(pk, pc)
    return np.divide(joint, denom, out=np.zeros_like(joint), where=denom > 0)


def macro_alignment(item_factor_weights: ArrayLike, item_categories: ArrayLike) -> dict[str, float]:
    """Alignment of items' factors with their categories.

    Each item's factor is its top factor, ``argmax_k item_factor_weights[i, k]`` (ties to
    the lower index). Items without a category are excluded; the multi-label rule is the
    one in the module docstring.

    Returns a dict of floats (``nan`` where no item qualifies):

    * ``nmi``, ``ami``, ``ari`` — scikit-learn's scores between top factor and category over
      the single-label items (NMI with the arithmetic mean, scikit-learn's default);
    * ``accuracy`` — :func:`matched_accuracy` over the single-label items;
    * ``nmi_multilabel``, ``accuracy_multilabel`` — the same two on the ``K x C`` table where
      item ``i`` adds ``1/|cats_i|`` to ``(top factor, c)`` for each of its categories ``c``
      (identical to the single-label values when every item has one category);
    * ``bijection`` — :func:`bijection_score` (0–3) of the lift ``P(k, c) / (P(k) P(c))`` of
      the soft :func:`factor_category_matrix` (all labelled items, full weight rows);
    * ``num_single_label``, ``num_labelled`` — how many items each group holds.
    """
    w, cats = _labelled(item_factor_weights, item_categories)
    k = w.shape[1]
    out: dict[str, float] = {"num_single_label": 0.0, "num_labelled": float(len(w))}
    nan = float("nan")
    if len(w) == 0:
        return {**out, "nmi": nan, "ami": nan, "ari": nan, "accuracy": nan,
                "nmi_multilabel": nan, "accuracy_multilabel": nan, "bijection": nan}
    top = w.argmax(axis=1)

    single = cats.sum(axis=1) == 1
    out["num_single_label"] = float(single.sum())
    if single.any():
        truth, pred = cats[single].argmax(axis=1), top[single]
        out["nmi"] = float(normalized_mutual_info_score(truth, pred))
        out["ami"] = float(adjusted_mutual_info_score(truth, pred))
        out["ari"] = float(adjusted_rand_score(truth, pred))
        out["accuracy"] = matched_accuracy(truth, pred)
    else:
        out.update(nmi=nan, ami=nan, ari=nan, accuracy=nan)

    table = _multilabel_contingency(top, cats, k)
    out["nmi_multilabel"] = _weighted_nmi(table)
    out["accuracy_multilabel"] = _matched_fraction(table)
    joint = factor_category_matrix(w, cats, normalize="all")
    out["bijection"] = float(bijection_score(_lift(joint)))
    return out


# -- independence between factors ---------------------------------------------------------
def channel_correlation(emb: ArrayLike, *, max_samples: int | None = None,
                        seed: int = 0) -> np.ndarray:
    """``(K*d) x (K*d)`` absolute Pearson correlation between the dimensions of ``emb``.

    Args:
        emb: ``N x K x d`` (N samples, K channels of d dimensions). Dimension ``j`` of
            channel ``k`` is row/column ``k*d + j``, so channel ``k`` is the diagonal block
            ``[k*d:(k+1)*d]``.
        max_samples: use a seeded random subset of at most this many rows (None: all).
        seed: seed of that subset.

    A constant dimension has no correlation; its row and column are 0 (diagonal included).
    """
    x = _np(emb, np.float64)
    _check_ndim("emb", x, 3, "N x K x d")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"emb has {n} rows: expected at least 2 samples")
    x = x.reshape(n, -1)[_subsample(n, max_samples, seed)]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.abs(np.corrcoef(x, rowvar=False))
    return np.nan_to_num(np.atleast_2d(corr), nan=0.0)


def _block_means(corr: np.ndarray, k: int) -> tuple[float, float]:
    """Mean |corr| over off-diagonal entries inside the K diagonal blocks, and across them."""
    c = np.abs(_np(corr, np.float64))
    _check_ndim("corr", c, 2, "(K*d) x (K*d)")
    if c.shape[0] != c.shape[1] or k < 1 or c.shape[0] % k:
        raise ValueError(f"corr has shape {c.shape} and K={k!r}: expected a square matrix "
                         f"whose side is a multiple of K >= 1")
    d = c.shape[0] // k
    block = np.arange(c.shape[0]) // d
    same = block[:, None] == block[None, :]
    within = same & ~np.eye(c.shape[0], dtype=bool)
    return (float(c[within].mean()) if within.any() else float("nan"),
            float(c[~same].mean()) if (~same).any() else float("nan"))


def block_diagonal_score(corr: ArrayLike, num_factors: int) -> float:
    """How block-diagonal a channel correlation matrix is: higher = more disentangled.

    ``mean |corr| inside the K diagonal blocks (off the main diagonal)`` minus ``mean |corr|
    across blocks``, a number in ``[-1, 1]``. A difference, not a ratio, because the
    across-block mean of a well disentangled model is close to zero. 0 means dimensions are
    as related to other channels as to their own; 1 means each channel is one perfectly
    correlated block with no correlation outside.

    Args:
        corr: ``(K*d) x (K*d)`` correlation matrix, e.g. from :func:`channel_correlation`
            (absolute values are taken).
        num_factors: ``K``; needs ``d >= 2`` (with one dimension per channel there is no
            off-diagonal entry inside a block) and ``K >= 2``.
    """
    within, across = _block_means(corr, num_factors)
    if math.isnan(within) or math.isnan(across):
        raise ValueError(f"block_diagonal_score needs K >= 2 channels of d >= 2 dimensions; "
                         f"got corr of shape {np.shape(corr)} with num_factors={num_factors!r}")
    return within - across


def _centered_distances(x: np.ndarray) -> np.ndarray:
    """Double-centred Euclidean distance matrix of the rows of ``x``."""
    a = squareform(pdist(x.reshape(len(x), -1)))
    a -= a.mean(axis=0, keepdims=True)
    a -= a.mean(axis=1, keepdims=True)
    return a


def _dcor_from_centered(a: np.ndarray, b: np.ndarray, var_a: float, var_b: float) -> float:
    if var_a <= 0 or var_b <= 0:
        return 0.0
    dcov2 = max(float((a * b).mean()), 0.0)
    return math.sqrt(dcov2 / math.sqrt(var_a * var_b))


def distance_correlation(x: ArrayLike, y: ArrayLike, *, max_samples: int | None = 2000,
                         seed: int = 0) -> float:
    """Distance correlation of Székely, Rizzo & Bakirov (Ann. Statist. 2007).

    ``dCor(x, y) = sqrt(dCov²(x, y) / sqrt(dVar²(x) dVar²(y)))`` with the V-statistics
    ``dCov²(x, y) = mean_ij A_ij B_ij`` of the double-centred Euclidean distance matrices
    ``A`` of ``x`` and ``B`` of ``y``. It is 0 exactly when the empirical distributions are
    independent and 1 for a similarity transform; unlike Pearson it sees nonlinear
    dependence and compares vectors of any dimension. 0 when either sample is constant.

    Args:
        x: ``n`` or ``n x p``.
        y: ``n`` or ``n x q`` (same ``n``).
        max_samples: the cost is O(n²) time and memory, so at most this many rows are used,
            drawn with ``seed`` (the same rows of ``x`` and ``y``); None uses all.
        seed: seed of the subsample.
    """
    x, y = _np(x, np.float64), _np(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows and y has {len(y)}: expected the same number")
    if len(x) < 2:
        raise ValueError(f"x has {len(x)} rows: expected at least 2 samples")
    rows = _subsample(len(x), max_samples, seed)
    a, b = _centered_distances(x[rows]), _centered_distances(y[rows])
    return _dcor_from_centered(a, b, float((a * a).mean()), float((b * b).mean()))


def factor_distance_correlation(emb: ArrayLike, *, max_samples: int | None = 2000,
                                seed: int = 0) -> float:
    """Mean distance correlation between pairs of channels: lower = more independent.

    Channel ``k`` of ``emb`` (``N x K x d``) is the ``d``-dimensional sample ``emb[:, k]``;
    the result is the mean of :func:`distance_correlation` over the ``K(K-1)/2`` pairs
    ``k < l``, all on the same seeded subsample of at most ``max_samples`` rows. Needs
    ``K >= 2``.
    """
    x = _np(emb, np.float64)
    _check_ndim("emb", x, 3, "N x K x d")
    k = x.shape[1]
    if k < 2:
        raise ValueError(f"emb has K={k} channels: expected at least 2")
    if x.shape[0] < 2:
        raise ValueError(f"emb has {x.shape[0]} rows: expected at least 2 samples")
    x = x[_subsample(x.shape[0], max_samples, seed)]
    # Keep at most ~256 MB of centred matrices; recompute the rest pair by pair.
    cache_ok = k * x.shape[0] ** 2 * 8 <= 256 * 2 ** 20
    cache: dict[int, tuple[np.ndarray, float]] = {}

    def centered(j: int) -> tuple[np.ndarray, float]:
        if j in cache:
            return cache[j]
        a = _centered_distances(x[:, j])
        entry = (a, float((a * a).mean()))
        if cache_ok:
            cache[j] = entry
        return entry

    values = []
    for i in range(k):
        for j in range(i + 1, k):
            (a, va), (b, vb) = centered(i), centered(j)
            values.append(_dcor_from_centered(a, b, va, vb))
    return float(np.mean(values))


# -- micro --------------------------------------------------------------------------------
def dimension_independence(emb: ArrayLike, *, max_samples: int | None = None,
                           seed: int = 0) -> float:
    """Mean absolute Pearson correlation between the dimensions of one factor, averaged
    over factors: **lower = more independent** (0: uncorrelated dimensions, 1: every
    dimension of a factor a linear function of the others).

    The micro-disentanglement counterpart of :func:`channel_correlation`: for ``emb``
    (``N x K x d``) it averages the off-diagonal entries of each ``d x d`` diagonal block.
    Needs ``d >= 2``.
    """
    x = _np(emb)
    _check_ndim("emb", x, 3, "N x K x d")
    if x.shape[2] < 2:
        raise ValueError(f"emb has d={x.shape[2]} dimensions per factor: expected at least 2")
    corr = channel_correlation(x, max_samples=max_samples, seed=seed)
    return _block_means(corr, x.shape[1])[0]


def latent_traversal(decode: Callable[[Any], Any], z: np.ndarray | torch.Tensor, factor: int,
                     dim: int, values: Sequence[float], *, top: int = 10,
                     mode: str = "set") -> dict[str, np.ndarray]:
    """Move one latent dimension and report which items' scores rise and fall most.

    Models differ in how they turn latents into scores, so this works on any decoder: the
    caller passes ``decode`` (``B x K x d`` latents to ``B x M`` scores, e.g. a MacridVAE's
    decoder applied to ``z_u``) and the base latents ``z`` (e.g. the posterior means of some
    users). For each value ``v`` in ``values``, dimension ``dim`` of factor ``factor`` is set
    to ``v`` (``mode="set"``, the beta-VAE traversal) or shifted by ``v``
    (``mode="shift"``) for every row, everything else held fixed, and the change of each
    item's score against ``decode(z)`` is ranked.

    ``z`` may be a NumPy array or a torch tensor; ``decode`` receives the same kind (a
    tensor is copied, never modified, and decoded under ``torch.no_grad()``).

    Returns a dict of arrays, ``V = len(values)``, ``B`` rows of ``z``:

    * ``values`` — ``V``;
    * ``rising`` — ``V x B x top`` item indices with the largest score increase, largest
      first;
    * ``falling`` — ``V x B x top`` item indices with the largest decrease, largest first;
    * ``delta`` — ``V x B x M`` score changes.

    Pass ``rising`` or ``falling`` to :func:`summarise_categories` to see which categories
    a dimension moves.
    """
    if mode not in ("set", "shift"):
        raise ValueError(f"mode={mode!r} is out of range: expected 'set' or 'shift'")
    is_tensor = hasattr(z, "detach")
    shape = tuple(z.shape)
    if len(shape) != 3:
        raise ValueError(f"z has shape {shape}: expected B x K x d")
    if not 0 <= factor < shape[1]:
        raise ValueError(f"factor={factor!r} is out of range: expected 0..{shape[1] - 1}")
    if not 0 <= dim < shape[2]:
        raise ValueError(f"dim={dim!r} is out of range: expected 0..{shape[2] - 1}")

    if is_tensor:
        import torch

        def run(latents):
            with torch.no_grad():
                return _np(decode(latents), np.float64)
        base_z = z.detach()
    else:
        def run(latents):
            return _np(decode(latents), np.float64)
        base_z = np.asarray(z)

    base = run(base_z)
    m = base.shape[1]
    k_top = min(top, m)
    deltas, rising, falling = [], [], []
    for v in values:
        moved = base_z.clone() if is_tensor else base_z.copy()
        if mode == "set":
            moved[:, factor, dim] = v
        else:
            moved[:, factor, dim] += v
        delta = run(moved) - base
        # argpartition then a sort of the top slice keeps this O(M) per row
        up = np.argpartition(-delta, k_top - 1, axis=1)[:, :k_top]
        up = np.take_along_axis(up, np.argsort(-np.take_along_axis(delta, up, 1), 1), 1)
        down = np.argpartition(delta, k_top - 1, axis=1)[:, :k_top]
        down = np.take_along_axis(down, np.argsort(np.take_along_axis(delta, down, 1), 1), 1)
        deltas.append(delta)
        rising.append(up)
        falling.append(down)
    return {"values": np.asarray(values, dtype=np.float64), "rising": np.stack(rising),
            "falling": np.stack(falling), "delta": np.stack(deltas)}


def summarise_categories(items: ArrayLike, item_categories: ArrayLike) -> np.ndarray:
    """Category shares of sets of items: ``(...) x n`` item indices -> ``(...) x C``.

    Each item adds ``1 / |its categories|`` to each of its categories (the module's
    multi-label rule); the shares are divided by the number of items, so a row sums to the
    fraction of its items that have any category. Use on the ``rising``/``falling`` output
    of :func:`latent_traversal`, e.g. ``summarise_categories(t["rising"], cats)`` is
    ``V x B x C``; average over ``B`` for one row per traversal value.
    """
    idx = _np(items).astype(np.int64)
    cats = (_np(item_categories, np.float64) > 0).astype(np.float64)
    _check_ndim("item_categories", cats, 2, "M x C")
    counts = cats.sum(axis=1, keepdims=True)
    share = np.divide(cats, counts, out=np.zeros_like(cats), where=counts > 0)
    return share[idx].mean(axis=-2)


# -- everything at once -------------------------------------------------------------------
def _json_float(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def _independence(prefix: str, emb: np.ndarray, max_samples: int, seed: int) -> dict:
    k, d = emb.shape[1], emb.shape[2]
    nan = float("nan")
    corr = channel_correlation(emb, max_samples=20 * max_samples, seed=seed)
    within, across = _block_means(corr, k)
    return {
        f"{prefix}/corr_within": within,
        f"{prefix}/corr_across": across,
        f"{prefix}/block_diagonal": within - across if k >= 2 and d >= 2 else nan,
        f"{prefix}/dcor": (factor_distance_correlation(emb, max_samples=max_samples, seed=seed)
                           if k >= 2 else nan),
        f"{prefix}/dimension_correlation": within,
    }


def factor_report(model: FactorRecommender, data: InteractionData | None,
                  users: torch.Tensor, history: torch.Tensor, *, max_samples: int = 2000,
                  seed: int = 0) -> dict[str, float | int | None]:
    """All factor metrics of a :class:`~disentangle.models.base.FactorRecommender`.

    Calls the K-factor contract in eval mode without gradients (the model's train/eval
    mode is restored): ``item_factor_weights()`` against ``data.item_categories`` for the
    macro scores, and ``item_factor_embeddings()`` and ``factor_embeddings(users,
    history)`` for the independence scores.

    Args:
        model: the model.
        data: an :class:`~disentangle.data.InteractionData` over the model's items; without
            ``item_categories`` the ``macro/*`` keys are absent.
        users: the users whose factor embeddings are measured, as in
            :meth:`~disentangle.models.base.FactorRecommender.factor_embeddings`.
        history: their interaction rows, as there.
        max_samples: rows used for distance correlation (O(n²)); Pearson correlations use
            up to 20 times as many.
        seed: seed of every subsample.

    Returns a flat dict, JSON-serialisable (undefined values are ``None``):

    * ``num_factors`` (an int);
    * ``macro/<key>`` for every key of :func:`macro_alignment`;
    * for ``items`` (item factor embeddings) and ``users`` (user factor embeddings):
      ``<who>/corr_across`` (mean |Pearson| between dimensions of different channels, lower
      is better), ``<who>/corr_within`` (the same inside channels, off the diagonal),
      ``<who>/block_diagonal`` (:func:`block_diagonal_score`), ``<who>/dcor``
      (:func:`factor_distance_correlation`, lower is better) and
      ``<who>/dimension_correlation`` (:func:`dimension_independence`, lower is better;
      equal to ``corr_within``).
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            weights = _np(model.item_factor_weights(), np.float64)
            item_emb = _np(model.item_factor_embeddings(), np.float64)
            user_emb = _np(model.factor_embeddings(users, history), np.float64)
    finally:
        model.train(was_training)

    report: dict[str, float] = {"num_factors": float(weights.shape[1])}
    if data is not None and getattr(data, "item_categories", None) is not None:
        for key, v in macro_alignment(weights, data.item_categories).items():
            report[f"macro/{key}"] = v
    for prefix, emb in (("items", item_emb), ("users", user_emb)):
        if emb.shape[0] >= 2:
            report.update(_independence(prefix, emb, max_samples, seed))
    out: dict[str, float | int | None] = {key: _json_float(v) for key, v in report.items()}
    out["num_factors"] = int(weights.shape[1])
    return out
