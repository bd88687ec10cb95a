"""Pictures of a K-factor model, each saved as a PNG.

Every function takes plain arrays (NumPy arrays or torch tensors) and a path, draws one
figure with matplotlib's object-oriented API (a :class:`~matplotlib.figure.Figure` rendered
by the Agg backend: no display, no pyplot state, safe in a server or a test), saves it and
returns the path. Nothing here knows about runs or models; :mod:`disentangle.viz.report`
feeds these functions from a run directory.

* :func:`factor_category_heatmap` — ``K x C`` factor × category matrix, annotated;
* :func:`item_tsne` — t-SNE of item factor embeddings, coloured by top factor and by
  category;
* :func:`channel_correlation_plot` — ``(K*d) x (K*d)`` |correlation| with factor blocks;
* :func:`training_curves` — loss and validation metrics per epoch, best epoch marked;
* :func:`user_factors_plot` — one user's factor shares and, per factor, recommended titles.
"""
from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from matplotlib.transforms import offset_copy
from numpy.typing import ArrayLike

__all__ = [
    "channel_correlation_plot",
    "factor_category_heatmap",
    "item_tsne",
    "shorten",
    "training_curves",
    "user_factors_plot",
]

#: Fonts and resolution shared by every figure (applied with ``rc_context``, never globally).
#: ``text.parse_math`` is off: every label here is plain text, and much of it comes from the
#: data (titles, ids, category names), where a ``$`` would otherwise start matplotlib's
#: mathtext and an id such as ``a$^$`` would make saving the figure fail.
STYLE = {"text.parse_math": False, "font.size": 10, "axes.titlesize": 12,
         "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
         "legend.fontsize": 9, "figure.titlesize": 13,
         "axes.spines.top": False, "axes.spines.right": False}
DPI = 110
GREY = "#c8c8c8"


def _np(x: Any, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def shorten(text: Any, width: int) -> str:
    """``text`` cut to at most ``width`` characters, with an ellipsis when cut; a trailing
    ``" (1999)"``-like part (MovieLens titles end with the year) is kept."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    head, tail = text, ""
    match = re.search(r" \(\d{4}\)$", text)
    if match and width > len(match.group()) + 8:
        head, tail = text[:match.start()], match.group()
    return head[:max(width - len(tail) - 1, 1)].rstrip() + "…" + tail


def _save(fig: Figure, path: str | Path, cmap: str | None = None) -> Path:
    """Save ``fig`` as a PNG. With ``cmap`` (a figure drawn almost only in that colormap,
    black and white), the image is stored with a fixed 256-colour palette: 240 samples of the
    colormap and 16 greys. That is lossless to the eye (imshow already maps values to a
    256-entry table) and makes a noisy matrix several times smaller, which matters because
    the report embeds every image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if cmap is None:
        fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
        return path
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    colors = matplotlib.colormaps[cmap](np.linspace(0, 1, 240))[:, :3]
    greys = np.repeat(np.linspace(0, 1, 16)[:, None], 3, axis=1)
    palette = Image.new("P", (1, 1))
    palette.putpalette(np.round(np.vstack([colors, greys]) * 255).astype(np.uint8)
                       .ravel().tolist())
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE).save(
            path, format="PNG", optimize=True)
    return path


def _factor_colors(k: int) -> list:
    """One distinct colour per factor (tab10 / tab20, then an evenly spaced colormap)."""
    if k <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(k)]
    if k <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(k)]
    return [matplotlib.colormaps["turbo"](i / max(k - 1, 1)) for i in range(k)]


def _legend_font(entries: int) -> float:
    return 9.0 if entries <= 12 else 8.0


# -- factor x category ------------------------------------------------------------------------
def factor_category_heatmap(matrix: ArrayLike, category_names: Sequence[str], path: str | Path, *,
                            value_label: str = "P(category | factor)",
                            title: str = "Factors × categories",
                            factor_labels: Sequence[str] | None = None,
                            annotate: bool | None = None, highlight: Any = "row",
                            center: float | None = None, log_scale: bool = False,
                            fmt: str | None = None, label_width: int = 18) -> Path:
    """Heatmap of a ``K x C`` factor × category matrix (rows factors, columns categories).

    Args:
        matrix: ``K x C`` values, e.g. :func:`~disentangle.metrics.factors.factor_category_matrix`.
        category_names: the ``C`` column names (cut to ``label_width`` characters, rotated).
        value_label: what an entry is (colour-bar label).
        factor_labels: ``K`` row names (default ``factor 0`` … ``factor K-1``).
        annotate: write each value in its cell (default: when the matrix has at most
            40 columns and 30 rows).
        highlight: ``"row"`` writes the largest entry of each row in bold, ``"column"`` that
            of each column, ``None`` none; or a ``K x C`` boolean array of the cells to bold.
        center: draw on a diverging scale, white at this value (e.g. ``1/K``, the uniform
            share, or 1 for a lift), red above and blue below, spanning at least ``center/2``
            either side (a factor of 1.5 with ``log_scale``); default: a sequential scale
            from 0.
        log_scale: with ``center``, a logarithmic scale (for ratios such as a lift: ×2 and
            ×0.5 get equally strong colours; zeros take the lowest colour).
        fmt: format of the cell annotations, e.g. ``"{:.2f}"`` (default: two decimals
            without the leading zero below 1).
    """
    if isinstance(highlight, str) or highlight is None:
        if highlight not in ("row", "column", None):
            raise ValueError(f"highlight={highlight!r} is out of range: expected 'row', "
                             f"'column', None or a K x C boolean array")
    elif np.shape(highlight) != np.shape(matrix):
        raise ValueError(f"highlight has shape {np.shape(highlight)}: expected "
                         f"{np.shape(matrix)}, the shape of matrix")
    m = _np(matrix)
    if m.ndim != 2:
        raise ValueError(f"matrix has shape {m.shape}: expected K x C")
    k, c = m.shape
    if len(category_names) != c:
        raise ValueError(f"category_names has {len(category_names)} names: expected {c}, "
                         f"one per column of matrix")
    rows = list(factor_labels) if factor_labels is not None else [f"factor {i}" for i in range(k)]
    annotate = (c <= 40 and k <= 30) if annotate is None else annotate
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(min(max(6.0, 0.47 * c + 2.2), 16.0), max(2.8, 0.45 * k + 2.0)))
        ax = fig.add_subplot()
        vmax = float(m.max()) if m.size and m.max() > 0 else 1.0
        if center is not None and log_scale:
            if center <= 0:
                raise ValueError(f"center={center!r} is out of range: expected > 0 with "
                                 f"log_scale")
            pos = m[m > 0] / center
            # at least a factor 1.5 either side, so near-uniform noise stays near white
            ratio = max(float(pos.max()) if pos.size else 1.0,
                        1 / float(pos.min()) if pos.size else 1.0, 1.5)
            norm = LogNorm(center / ratio, center * ratio, clip=True)
            im = ax.imshow(np.where(m > 0, m, center / ratio), cmap="RdBu_r", norm=norm,
                           aspect="auto", interpolation="nearest")
            dark = lambda v: abs(np.log(max(v, 1e-12) / center)) > 0.6 * np.log(ratio)
        elif center is not None:
            vmin = min(float(m.min()) if m.size else 0.0, center)
            # at least center/2 either side, so near-uniform noise stays near white
            half = max(vmax - center, center - vmin, abs(center) / 2, 1e-12)
            norm = Normalize(center - half, center + half)
            im = ax.imshow(m, cmap="RdBu_r", norm=norm, aspect="auto", interpolation="nearest")
            dark = lambda v: abs(v - center) > 0.6 * half
        else:
            im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=vmax, aspect="auto",
                           interpolation="nearest")
            dark = lambda v: v > 0.55 * vmax
        ax.set_xticks(range(c), [shorten(n, label_width) for n in category_names],
                      rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(k), rows)
        ax.set_xlabel("category")
        ax.set_title(title)
        ax.tick_params(length=0)
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        if annotate:
            best = np.zeros_like(m, dtype=bool)
            if not isinstance(highlight, str) and highlight is not None:
                best = np.asarray(highlight, dtype=bool)
            elif highlight == "row" and c:
                best[np.arange(k), m.argmax(axis=1)] = True
            elif highlight == "column" and k:
                best[m.argmax(axis=0), np.arange(c)] = True
            for i in range(k):
                for j in range(c):
                    v = m[i, j]
                    text = fmt.format(v) if fmt else \
                        (f"{v:.2f}".lstrip("0") if 0 <= v < 1 else f"{v:.2g}")
                    ax.text(j, i, text, ha="center", va="center", fontsize=7.5,
                            color="white" if dark(v) else "#222222",
                            fontweight="bold" if best[i, j] and v > 0 else "normal")
        cbar = fig.colorbar(im, ax=ax, fraction=0.025, pad=0.015)
        cbar.set_label(value_label)
        if center is not None and log_scale:
            lo, hi = norm.vmin, norm.vmax
            ticks = [t * center for t in (0.25, 1 / 3, 0.5, 2 / 3, 1, 1.5, 2, 3, 4)
                     if lo <= t * center <= hi]
            cbar.set_ticks(ticks, labels=[f"{t:.2g}" for t in ticks])
            cbar.minorticks_off()
        return _save(fig, path, cmap=im.get_cmap().name)


# -- t-SNE ------------------------------------------------------------------------------------
def _tsne_coords(x: np.ndarray, seed: int, perplexity: float, max_iter: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(x)
    # One thread: scikit-learn's Barnes-Hut t-SNE spins its OpenMP threads, and on a busy
    # machine that is 20 times slower than one thread (and one thread is reproducible).
    with threadpool_limits(1):
        if x.shape[1] > 50 and n > 50:  # the usual PCA step before t-SNE: faster, less noise
            x = PCA(n_components=50, random_state=seed).fit_transform(x)
        return TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca",
                    learning_rate="auto", max_iter=max_iter,
                    random_state=seed).fit_transform(x)


def item_tsne(item_factor_embeddings: ArrayLike, item_factor_weights: ArrayLike,
              path: str | Path, *, item_categories: ArrayLike | None = None,
              category_names: Sequence[str] = (),
              max_items: int = 2000, seed: int = 0, perplexity: float = 30.0,
              max_iter: int = 500, max_legend_categories: int = 19) -> Path:
    """t-SNE of item factor embeddings, coloured by top factor and by category.

    Each item is the flattened ``K*d`` vector of its factor embeddings (reduced to 50
    dimensions by PCA first when longer, as is customary), embedded in 2-D by
    :class:`sklearn.manifold.TSNE` on a seeded subsample of at most ``max_items`` items.
    ``max_iter`` is half scikit-learn's default: on 2000 items the picture no longer changes
    after 500 iterations, and it takes half the time.

    Left panel: colour = the item's top factor, ``argmax_k item_factor_weights[i, k]``.
    Right panel (when ``item_categories`` is given): colour = the item's category for items
    with exactly one category (the items the single-label scores use); items with several
    categories or none are drawn small and grey underneath. Only the
    ``max_legend_categories`` most frequent single categories get their own colour; the
    rest are grouped as "other".
    """
    emb = _np(item_factor_embeddings)
    w = _np(item_factor_weights)
    if emb.ndim != 3:
        raise ValueError(f"item_factor_embeddings has shape {emb.shape}: expected M x K x d")
    if w.shape != emb.shape[:2]:
        raise ValueError(f"item_factor_weights has shape {w.shape}: expected {emb.shape[:2]}")
    n_all, k = emb.shape[0], emb.shape[1]
    if n_all < 5:
        raise ValueError(f"item_tsne needs at least 5 items, got {n_all}")
    if max_items < 5:
        raise ValueError(f"max_items={max_items!r} is out of range: expected >= 5")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n_all, size=max_items, replace=False)) if n_all > max_items \
        else np.arange(n_all)
    xy = _tsne_coords(emb[idx].reshape(len(idx), -1), seed, perplexity, max_iter)
    top = w[idx].argmax(axis=1)

    cats = None
    if item_categories is not None:
        cats = _np(item_categories)[idx] > 0
        if cats.shape[1] != len(category_names):
            raise ValueError(f"category_names has {len(category_names)} names: expected "
                             f"{cats.shape[1]}, one per column of item_categories")
        if not cats.any():
            cats = None

    with matplotlib.rc_context(STYLE):
        panels = 2 if cats is not None else 1
        fig = Figure(figsize=(5.6 * panels + 0.4, 5.2), layout="constrained")
        axes = fig.subplots(1, panels, squeeze=False)[0]
        colors = _factor_colors(k)
        ax = axes[0]
        for f in range(k):
            sel = top == f
            ax.scatter(xy[sel, 0], xy[sel, 1], s=7, color=colors[f], alpha=0.8, linewidths=0,
                       label=f"factor {f} ({int(sel.sum())})")
        ax.set_title(f"coloured by top factor ({len(idx)} items)")
        _legend(ax, k)

        if cats is not None:
            ax = axes[1]
            single = cats.sum(axis=1) == 1
            label = np.where(single, cats.argmax(axis=1), -1)
            counts = np.bincount(label[single], minlength=cats.shape[1])
            order = [j for j in np.argsort(-counts, kind="stable") if counts[j] > 0]
            shown, rest = order[:max_legend_categories], order[max_legend_categories:]
            ax.scatter(xy[~single, 0], xy[~single, 1], s=4, color=GREY, alpha=0.6,
                       linewidths=0, label=f"several or no categories ({int((~single).sum())})")
            tab = _category_colors()
            for n, j in enumerate(shown):
                sel = label == j
                ax.scatter(xy[sel, 0], xy[sel, 1], s=9, color=tab[n % len(tab)], alpha=0.9,
                           linewidths=0,
                           label=f"{shorten(category_names[j], 18)} ({int(counts[j])})")
            if rest:
                sel = np.isin(label, rest)
                ax.scatter(xy[sel, 0], xy[sel, 1], s=9, color="#555555", alpha=0.9,
                           linewidths=0, label=f"other ({int(sel.sum())})")
            ax.set_title("coloured by category (single-category items)")
            _legend(ax, len(shown) + 1 + bool(rest))
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ("left", "bottom"):
                ax.spines[side].set_visible(False)
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
        fig.suptitle("t-SNE of item factor embeddings")
        return _save(fig, path)


def _category_colors() -> list:
    """Strong colours first (tab10 without its grey), then the light tab20 shades, so the
    largest categories get the most distinct colours and none looks like the grey of
    unlabelled points."""
    strong = [matplotlib.colormaps["tab10"](i) for i in range(10) if i != 7]
    light = [matplotlib.colormaps["tab20"](i) for i in range(1, 20, 2) if i != 15]
    return strong + light + [matplotlib.colormaps["Dark2"](i) for i in range(8)]


def _legend(ax, entries: int) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, markerscale=2.2,
              ncols=1 if entries <= 22 else 2, handletextpad=0.3, borderaxespad=0.0,
              fontsize=_legend_font(entries), labelspacing=0.35)


# -- channel correlation ----------------------------------------------------------------------
def channel_correlation_plot(matrices: Mapping[str, Any] | Any, num_factors: int,
                             path: str | Path, *,
                             title: str = "|Pearson correlation| between dimensions") -> Path:
    """``(K*d) x (K*d)`` absolute correlation matrices with the ``K`` factor blocks outlined.

    Args:
        matrices: one matrix (e.g. from
            :func:`~disentangle.metrics.factors.channel_correlation`), or a mapping from a
            panel title to a matrix, drawn side by side on one colour scale (0 to 1).
        num_factors: ``K``; dimension ``j`` of factor ``k`` is row ``k*d + j``.

    A disentangled representation is block-diagonal: bright inside the blocks on the
    diagonal, dark elsewhere.
    """
    panels = dict(matrices) if isinstance(matrices, Mapping) else {"": matrices}
    k = int(num_factors)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.9 * len(panels) + 1.0, 5.1), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        im = None
        for ax, (name, corr) in zip(axes, panels.items()):
            c = np.abs(_np(corr))
            if c.ndim != 2 or c.shape[0] != c.shape[1] or k < 1 or c.shape[0] % k:
                raise ValueError(f"matrix {name!r} has shape {c.shape}: expected a square "
                                 f"(K*d) x (K*d) matrix with K={k}")
            d = c.shape[0] // k
            im = ax.imshow(c, cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
            for b in range(1, k):
                ax.axhline(b * d - 0.5, color="white", lw=0.8)
                ax.axvline(b * d - 0.5, color="white", lw=0.8)
            centres = [b * d + (d - 1) / 2 for b in range(k)]
            step = max(1, math.ceil(k / 20))
            ax.set_xticks(centres[::step], [str(b) for b in range(0, k, step)])
            ax.set_yticks(centres[::step], [str(b) for b in range(0, k, step)])
            ax.tick_params(length=0)
            ax.set_xlabel(f"factor (blocks of d = {d} dimensions)")
            ax.set_ylabel("factor")
            if name:
                ax.set_title(name)
        fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.02, label="|correlation|")
        fig.suptitle(title)
        return _save(fig, path, cmap="magma")


# -- training curves ----------------------------------------------------------------------
_NOT_LOSS = {"epoch", "step", "lr", "seconds", "valid", "loss"}


def training_curves(records: Sequence[Mapping[str, Any]], path: str | Path, *,
                    best_epoch: int | None = None, select: str | None = None,
                    ks: Sequence[int] | None = None, recall_key: str = "recall",
                    recall_label: str = "recall") -> Path:
    """Loss and validation metrics per epoch, from the records of ``metrics.jsonl``.

    Panels: the training loss; its logged parts (every other numeric field of a record; on a
    log scale, non-positive values left out, when their sizes differ by more than 30 times);
    and the validation ``ndcg@k`` (solid) and
    ``<recall_key>@k`` (dashed) for each cut-off ``k``. ``best_epoch`` is marked by a
    vertical line in every panel and ``select`` (e.g. ``"ndcg@100"``) by a star.

    Args:
        records: one dict per epoch with ``epoch``, ``loss``, optional parts and an optional
            ``valid`` dict (``read_metrics(run_dir)``).
        ks: cut-offs to draw (default: every ``k`` found in the validation records).
        recall_key: ``"recall"`` or ``"recall_liang"``; ``recall_label`` names it in the legend.
    """
    if not records:
        raise ValueError("records is empty: expected one record per epoch (metrics.jsonl)")
    epochs = np.array([r["epoch"] for r in records])
    parts = sorted({key for r in records for key, v in r.items()
                    if key not in _NOT_LOSS and isinstance(v, (int, float))})
    valid = [(r["epoch"], r["valid"]) for r in records if isinstance(r.get("valid"), dict)]
    if ks is None:
        ks = sorted({int(key.split("@")[1]) for _, v in valid for key in v
                     if key.startswith("ndcg@")})
    n_panels = 1 + bool(parts) + bool(valid)
    marker = "o" if len(records) <= 30 else None
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3.7 * n_panels + 0.4, 3.7), layout="constrained")
        axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
        ax = axes.pop(0)
        ax.plot(epochs, [r.get("loss", np.nan) for r in records], marker=marker, ms=3,
                color="#1f77b4")
        ax.set_title("training loss")
        ax.set_ylabel("loss (mean over batches)")
        loss_axes = [ax]
        if parts:
            ax = axes.pop(0)
            values = {key: np.array([r.get(key, np.nan) for r in records], dtype=float)
                      for key in parts}
            positive = np.concatenate([y[y > 0] for y in values.values()])
            log = len(positive) and positive.max() > 30 * positive.min()
            for key, y in values.items():
                ax.plot(epochs, np.where(y > 0, y, np.nan) if log else y, marker=marker, ms=3,
                        label=key)
            if log:  # parts of very different sizes (a reconstruction and a KL term)
                ax.set_yscale("log")
            ax.set_title("other logged training values")
            ax.legend(frameon=False)
            loss_axes.append(ax)
        if valid:
            ax = axes.pop(0)
            ve = np.array([e for e, _ in valid])
            colors = _factor_colors(max(len(ks), 1))
            for color, k in zip(colors, ks):
                for metric, style, label in (("ndcg", "-", "NDCG"),
                                             (recall_key, "--", recall_label)):
                    y = [v.get(f"{metric}@{k}", np.nan) for _, v in valid]
                    ax.plot(ve, y, style, color=color, marker=marker, ms=3,
                            label=f"{label}@{k}")
            if select and best_epoch is not None:
                hit = [v.get(select) for e, v in valid if e == best_epoch]
                if hit and hit[0] is not None:
                    ax.plot([best_epoch], [hit[0]], "*", ms=14, color="black",
                            label=f"best {select}", zorder=5)
            ax.set_title("validation")
            ax.legend(frameon=False, ncols=2, fontsize=8, loc="upper left",
                      bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)
            loss_axes.append(ax)
        for ax in loss_axes:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if best_epoch is not None:
                ax.axvline(best_epoch, color="grey", ls=":", lw=1.2)
            if len(epochs) <= 12:
                ax.set_xticks(epochs)
        title = "Training curves"
        if best_epoch is not None:
            title += f" (dotted line: best epoch {best_epoch}"
            title += f" by validation {select})" if select else ")"
        fig.suptitle(title)
        return _save(fig, path)


# -- one user ---------------------------------------------------------------------------
def user_factors_plot(shares: ArrayLike, items_per_factor: Sequence[Sequence[str]],
                      path: str | Path, *, user_label: str = "user",
                      factor_notes: Sequence[str] | None = None,
                      title_width: int = 50, max_titles: int = 3) -> Path:
    """One user's factor shares (bars) beside, per factor, the recommended titles it explains.

    Args:
        shares: ``K`` shares of the user's preference per factor (e.g. a row of
            ``user_factor_weights``).
        items_per_factor: ``K`` lists of titles, best first: the recommendations whose top
            explaining factor is that factor (up to ``max_titles`` shown, each cut to
            ``title_width`` characters).
        factor_notes: optional ``K`` one-line notes (e.g. the factor's top categories).
    """
    s = _np(shares).ravel()
    k = len(s)
    if len(items_per_factor) != k:
        raise ValueError(f"items_per_factor has {len(items_per_factor)} lists: expected {k}, "
                         f"one per factor")
    if factor_notes is not None and len(factor_notes) != k:
        raise ValueError(f"factor_notes has {len(factor_notes)} entries: expected {k}")
    colors = _factor_colors(k)
    lines_per_row = max_titles + (factor_notes is not None)
    row_h = 0.2 * lines_per_row + 0.25
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(11.0, row_h * k + 1.3))
        grid = fig.add_gridspec(1, 2, width_ratios=[1, 2.6], wspace=0.05)
        ax = fig.add_subplot(grid[0])
        y = np.arange(k)
        ax.barh(y, s, color=colors, height=0.6)
        ax.set_yticks(y, [f"factor {f}" for f in range(k)])
        ax.set_ylim(k - 0.5, -0.5)
        ax.set_xlim(0, max(float(s.max()) * 1.25, 1e-9) if k else 1)
        for f in range(k):
            ax.text(s[f], f, f" {s[f]:.0%}", va="center", fontsize=9)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("share of the user's preference")
        ax.set_title(f"{user_label}: factor shares")
        text = fig.add_subplot(grid[1], sharey=ax)
        text.axis("off")
        text.set_xlim(0, 1)
        for f in range(k):
            titles = [f"{n}. {shorten(t, title_width)}"
                      for n, t in enumerate(list(items_per_factor[f])[:max_titles], 1)]
            titles = titles or ["(no recommendation comes mainly from this factor)"]
            top = f - 0.5 + 0.12  # rows run downwards: the top edge of row f is f - 0.5
            if factor_notes is not None:
                text.text(0.02, top, shorten(factor_notes[f], 2 * title_width), va="top",
                          fontsize=9, fontweight="bold", color=colors[f])
                below = offset_copy(text.transData, fig=fig, y=-13, units="points")
                text.text(0.02, top, "\n".join(titles), va="top", fontsize=9,
                          linespacing=1.3, transform=below)
            else:
                text.text(0.02, top, "\n".join(titles), va="top", fontsize=9,
                          linespacing=1.3)
        text.set_title("top recommendations explained by each factor", loc="left")
        return _save(fig, path)

