r"""Several models, several seeds, one split: one table.

:func:`compare` trains every ``(model, seed)`` on the same data section of the config (so
the same split: the split is a function of the dataset and ``data.seed``, and every run's
``split.safetensors`` checksum is verified to be equal) into its own run folder
``out_dir/<model>-seed<seed>/``, then summarises the test results:

- **mean ± sd over seeds** of every test metric in ``results.json`` (``sd`` is the sample
  standard deviation, ``ddof=1``; none with one seed);
- **seconds per epoch**: the median of the ``seconds`` of every epoch record in
  ``metrics.jsonl`` over all seeds (training only: validation is not timed; a closed-form
  model's one "epoch" is its solve);
- **peak memory**: every fit (or resume) runs in a child process of its own, and the child
  reports its peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) at the end: the
  most RAM the process that trained the run ever held, the Python interpreter and the
  imported libraries included (their share, ``baseline_rss_mb``, is measured before
  training starts); on CUDA also ``torch.cuda.max_memory_allocated``. The table shows the
  largest over seeds. A run reused from an earlier call keeps the value measured then
  (``memory.json`` in ``out_dir``);
- **a paired test over test users** against the first model: per test user :math:`u`, the
  NDCG@k of the selection metric's cut-off ``k`` (``train.select``), recomputed from each
  run's saved best model and averaged over seeds, :math:`x_u` for the model and
  :math:`y_u` for the first model. The table gives the mean difference
  :math:`\bar d = \frac{1}{n}\sum_u (x_u - y_u)` and the two-sided p-value of the Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon``: users with :math:`d_u = 0` are dropped, as
  Wilcoxon defined it). The p-values are not corrected for multiple comparisons.

Every model is trained and selected alike: the same ``data`` section, cut-offs
(``train.ks``) and validation metric (``train.select``), taken from the first model's
resolved config (its defaults, then the shared overrides); the rest of each model's config
is its own (its defaults, then the shared overrides, then its own ``NAME:section.key=value``
overrides); a shared ``train.epochs`` leaves the closed-form models (one solve) alone. The
protocol is the first model's, or the one given; a model that cannot run it (a model
without new-user scoring under ``heldout``) is refused before anything trains.

Run folders are reused: a finished run whose config equals the one asked for is not trained
again; an unfinished one (or one asked for more epochs) is resumed; one with another config
is refused. The folder's files belong to :mod:`disentangle.runs`; this module only reads
them. Writes ``compare.json``, ``compare.md`` (the table) and ``compare.png`` (test metrics
with ``sd`` error bars) to ``out_dir``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch

try:
    import resource
except ImportError:  # not POSIX: peak memory is not measured
    resource = None

from .config import RunConfig, flat_keys, resolve
from .data.splits import EvalSet
from .metrics.ranking import metrics_from_hits, to_torch_csr, topk_hits
from .models import MODELS, ClosedFormRecommender
from .runs import (
    CONFIG,
    RESULTS,
    RunFolder,
    atomic_write,
    load_run,
    read_json,
    resolve_device,
    write_json,
)
from .train.run import fit, resume
from .train.trainer import finite_scores

__all__ = ["compare", "format_table", "paired_test", "per_user_metrics", "plot",
           "resolve_configs", "run_dir_name"]

#: Per-run peak memory measured by earlier calls, kept beside the run folders.
MEMORY = "memory.json"
#: Modules the fork server imports once, so each run's child process starts at once.
_PRELOAD = ["disentangle.compare"]


def run_dir_name(model: str, seed: int) -> str:
    """The run folder of ``model`` trained with ``train.seed = seed`` inside ``out_dir``."""
    return f"{model}-seed{seed}"


# -- configs ------------------------------------------------------------------------------
def _split_overrides(models: Sequence[str], overrides: Sequence[str]
                     ) -> tuple[list[str], dict[str, list[str]]]:
    """Shared ``section.key=value`` overrides, and ``NAME:section.key=value`` ones by model."""
    shared: list[str] = []
    own: dict[str, list[str]] = {m: [] for m in models}
    for item in overrides:
        key = item.partition("=")[0]
        name, colon, rest = key.partition(":")
        if not colon:
            shared.append(item)
            if key.strip() == "train.seed":
                raise ValueError("--set train.seed: each run's seed is set by the seeds "
                                 "compared (--seeds)")
            continue
        if name not in own:
            raise ValueError(f"--set {item}: {name!r} is not one of the compared models "
                             f"({', '.join(models)})")
        if rest.strip().startswith("data.") or rest.strip() == "train.seed":
            raise ValueError(f"--set {item}: every model is trained on the same data and "
                             f"seeds; set {rest.strip()} for all models (without {name}:)")
        own[name].append(item.partition(":")[2])
    return shared, own


def resolve_configs(models: Sequence[str], seeds: Sequence[int], overrides: Sequence[str] = (),
                    options: dict[str, Any] | None = None, protocol: str | None = None,
                    files: Sequence[str | Path] = ()) -> dict[str, list[RunConfig]]:
    """Per model, one validated config per seed (``train.seed``), all sharing the first
    model's ``data`` section, ``train.ks`` and ``train.select``; a model that cannot run the
    protocol is refused (:class:`ValueError`, one line) before anything is trained."""
    models, seeds = list(models), [int(s) for s in seeds]
    if not models:
        raise ValueError("no models to compare; give --models a,b,...")
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise ValueError(f"model {twice[0]} is listed twice")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds}: expected one or more distinct seeds")
    shared, own = _split_overrides(models, overrides)
    options = dict(options or {})
    if protocol is not None:
        options["data.protocol"] = protocol
    first = resolve(models[0], list(files), [*shared, *own[models[0]]], options)
    used = "heldout" if first.data.split_dir is not None else first.data.protocol
    if used == "heldout":
        refused = [m for m in models if not MODELS[m].supports_new_users]
        if refused:
            source = ("the split folder" if first.data.split_dir is not None else
                      "--protocol" if protocol is not None else f"the first model, {models[0]}")
            raise ValueError(f"protocol heldout (from {source}) scores users unseen in "
                             f"training, which {', '.join(refused)} cannot; compare with "
                             f"--protocol ratio or given, or leave {', '.join(refused)} out")
    common = {f"data.{k}": v for k, v in dataclasses.asdict(first.data).items()}
    common |= {"train.ks": list(first.train.ks), "train.select": first.train.select}

    def layers(m: str) -> tuple[list[str], dict[str, Any]]:
        if not issubclass(MODELS[m], ClosedFormRecommender):
            return [*shared, *own[m]], options
        # one solve: a shared train.epochs is for the models trained by epochs
        return ([o for o in shared if o.partition("=")[0].strip() != "train.epochs"]
                + own[m], {k: v for k, v in options.items() if k != "train.epochs"})

    configs = {}
    for m in models:
        sets, typed = layers(m)
        configs[m] = [resolve(m, list(files), sets, {**typed, **common, "train.seed": seed})
                      for seed in seeds]
    return configs


# -- training, one child process per run ------------------------------------------------
def _peak_rss_mb() -> float | None:
    """This process's ``ru_maxrss`` in MiB (kibibytes on Linux, bytes on macOS), or
    ``None`` where there is no ``getrusage``."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20 if sys.platform == "darwin" else 1 << 10)


def _portable(e: BaseException) -> BaseException:
    """``e`` if it can cross back to the parent (unpickling rebuilds an exception as
    ``type(e)(*e.args)``), else the closest plain exception with its message (a
    ``ValueError`` stays a usage error)."""
    try:
        type(e)(*e.args)
        return e
    except (TypeError, AttributeError):  # e.g. extra __init__ arguments
        if isinstance(e, KeyboardInterrupt):  # the trainer's RunInterrupted
            plain = KeyboardInterrupt(str(e))
            plain.signal_name = getattr(e, "signal_name", "SIGINT")  # or SIGTERM
            return plain
        return (ValueError if isinstance(e, ValueError) else RuntimeError)(str(e))


class _Collect(logging.Handler):
    """Keeps the library's log records of a child process, to be handled by the parent's
    own handlers (the command line prints them as ``warning: ...`` lines)."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args, record.exc_info = record.getMessage(), None, None
        self.records.append(record)


def _train_child(conn, cfg: RunConfig, run_dir: str, resume_epochs: int | None,
                 device: str | None, progress: bool, log_level: int,
                 warning_filters: list) -> None:
    """Fit ``cfg`` into ``run_dir`` (or resume it to ``resume_epochs``) in this child
    process, with the parent's warning filters; send the parent its peak memory, the
    exception if any (under ``"error"``) and the library's log records."""
    warnings.filters[:] = warning_filters
    collect = _Collect(log_level)
    logging.getLogger("disentangle").addHandler(collect)
    baseline = _peak_rss_mb()
    dev = resolve_device(device)
    out: dict[str, Any] = {}
    try:
        if resume_epochs is None:
            fit(cfg, run_dir, device, progress=progress)
        else:
            resume(run_dir, resume_epochs, device, progress=progress)
    except BaseException as e:  # noqa: BLE001 -- handed to the parent, which raises it
        out["error"] = _portable(e)
    out |= {"peak_rss_mb": _peak_rss_mb(),
            "baseline_rss_mb": baseline,
            "peak_gpu_mb": (torch.cuda.max_memory_allocated(dev) / (1 << 20)
                            if dev.type == "cuda" else None)}
    conn.send({**out, "log": collect.records})
    conn.close()


def _context() -> multiprocessing.context.BaseContext:
    """A fork server that has imported the library (each run forks from it in milliseconds
    and starts with a fresh peak RSS of its own), or spawn where there is none."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def _forward_sigterm(process) -> Iterator[None]:
    """SIGTERM to this process is passed on to the training ``process``, which stops as the
    trainer stops on SIGTERM (its last finished epoch saved) and reports it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.terminate())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_child(cfg: RunConfig, run_dir: Path, resume_epochs: int | None, device: str | None,
              progress: bool) -> dict[str, Any]:
    """:func:`_train_child` in a new process: its memory measurement, with its exception
    under ``"error"``. On Ctrl-C (which the child receives too) the child is awaited, so
    that it saves its epoch."""
    ctx = _context()
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_train_child, args=(
        send, cfg, str(run_dir), resume_epochs, device, progress,
        logging.getLogger("disentangle").getEffectiveLevel(), list(warnings.filters)))
    process.start()
    send.close()
    try:
        with _forward_sigterm(process):
            out = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"the process training {run_dir} died (exit code "
                           f"{process.exitcode}: killed for memory? a script that calls "
                           f"compare() must do so under if __name__ == '__main__':)") from None
    except BaseException:
        process.join()
        raise
    process.join()
    for record in out.pop("log"):
        logging.getLogger(record.name).handle(record)
    return out


def _epochs_done(folder: RunFolder) -> int:
    return max((int(r.get("epoch", 0)) for r in folder.read_metrics()), default=0)


def _finished(folder: RunFolder, cfg: RunConfig) -> bool:
    """Whether the run has its final results for ``cfg``: ``results.json``, and every epoch
    done or an early stop (``train.patience`` evaluations without improvement after the best
    epoch). A resume to more epochs that was stopped keeps the old ``results.json``: the
    epochs tell."""
    if not folder.file(RESULTS).exists():
        return False
    records = folder.read_metrics()
    if _epochs_done(folder) >= cfg.train.epochs:
        return True
    best = read_json(folder.file(RESULTS)).get("best_epoch", 0)
    stale = sum(1 for r in records if "valid" in r and r.get("epoch", 0) > best)
    return bool(cfg.train.patience) and stale >= cfg.train.patience




def _plan(cfg: RunConfig, path: Path) -> str:
    """``fit``, ``resume`` or ``reuse`` for the run folder ``path`` and the config ``cfg``;
    :class:`ValueError` for a folder holding a run of another config."""
    folder = RunFolder(path)
    if not folder.file(CONFIG).exists():
        return "fit"  # fit refuses a folder that is not empty
    saved = flat_keys(folder.read_config().to_dict())
    wanted = flat_keys(cfg.to_dict())
    diff = [f"{k}: {saved.get(k, 'absent')!r} -> {wanted.get(k, 'absent')!r}"
            for k in sorted(set(saved) | set(wanted))
            if k != "train.epochs" and saved.get(k) != wanted.get(k)]
    if diff:
        raise ValueError(f"{path} holds a run of another config ({'; '.join(diff[:3])}"
                         f"{'; ...' if len(diff) > 3 else ''}); remove it or choose another "
                         f"--out")
    done = _epochs_done(folder)
    if done > cfg.train.epochs:
        raise ValueError(f"{path}: the run has done {done} epochs, more than "
                         f"train.epochs={cfg.train.epochs}; remove it or choose another --out")
    return "reuse" if _finished(folder, cfg) else "resume"


# -- per-user metrics and the paired test -------------------------------------------------
@torch.no_grad()
def per_user_metrics(score, eval_set: EvalSet, ks: Sequence[int], chunk_size: int = 1024,
                     device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Per-user ``ndcg@k``, ``recall@k`` and ``recall_liang@k`` over ``eval_set``, in its
    user order: the values whose means
    :func:`~disentangle.metrics.ranking.evaluate` reports."""
    num_targets = np.diff(eval_set.target.indptr)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(eval_set), chunk_size):
        sl = slice(start, start + chunk_size)
        hist = eval_set.history[sl]
        users = torch.from_numpy(np.asarray(eval_set.users[sl])).to(device)
        scores = score(users, to_torch_csr(hist, device)).float()
        hits = topk_hits(scores, hist, eval_set.target[sl], max(ks))
        for name, values in metrics_from_hits(hits, num_targets[sl], ks).items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(v) for name, v in parts.items()}


def paired_test(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Mean of ``x - y`` and the two-sided Wilcoxon signed-rank p-value (``None`` when
    every difference is zero: there is nothing to test)."""
    d = np.asarray(x, float) - np.asarray(y, float)
    out: dict[str, Any] = {"mean_difference": float(d.mean()), "users": len(d),
                           "nonzero": int(np.count_nonzero(d)), "statistic": None,
                           "p_value": None}
    if out["nonzero"]:
        result = scipy.stats.wilcoxon(x, y)
        out["statistic"], out["p_value"] = float(result.statistic), float(result.pvalue)
    return out


# -- the comparison -----------------------------------------------------------------------
def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
            "values": [float(x) for x in v]}


def compare(models: Sequence[str], seeds: Sequence[int], out_dir: str | Path, *,
            overrides: Sequence[str] = (), options: dict[str, Any] | None = None,
            protocol: str | None = None, files: Sequence[str | Path] = (),
            device: str | None = None, progress: bool = True,
            on_run: Callable[[str, int, Path, str], None] | None = None) -> dict[str, Any]:
    """Train (or reuse) every ``(model, seed)`` on one split and summarise them.

    Args:
        models: model names (:data:`~disentangle.models.MODELS`); the first is the reference
            of the paired test and gives the protocol, cut-offs and selection metric.
        seeds: ``train.seed`` of each model's runs.
        out_dir: the folder of the run folders and of ``compare.json``, ``compare.md`` and
            ``compare.png``.
        overrides: ``section.key=value`` for every model, or ``NAME:section.key=value`` for
            model ``NAME`` only (not ``data.*``: the data is shared).
        options: typed values by key, as :func:`~disentangle.config.resolve` takes them
            (``{"data.dataset": "ml-1m"}``).
        protocol: ``heldout``, ``ratio`` or ``given`` (default: the first model's).
        files: YAML config files applied to every model.
        device: where to train and score (``auto``/``None``: CUDA when available).
        progress: progress bars while training.
        on_run: called with ``(model, seed, run_dir, action)`` before each run, ``action``
            being ``fit``, ``resume`` or ``reuse``.

    Returns:
        The summary written to ``compare.json``.
    """
    dev = resolve_device(device)
    configs = resolve_configs(models, seeds, overrides, options, protocol, files)
    out = Path(out_dir)
    runs = {name: [(cfg.train.seed, out / run_dir_name(name, cfg.train.seed), cfg)
                   for cfg in cfgs] for name, cfgs in configs.items()}
    plans = {path: _plan(cfg, path) for rs in runs.values() for _, path, cfg in rs}
    memory_file = out / MEMORY
    memory = read_json(memory_file) if memory_file.exists() else {}
    for name, rs in runs.items():
        for seed, path, cfg in rs:
            action = plans[path]
            if on_run is not None:
                on_run(name, seed, path, action)
            if action == "reuse":
                continue
            measured = _in_child(cfg, path, cfg.train.epochs if action == "resume" else None,
                                 device, progress)
            error = measured.pop("error", None)
            if (path / CONFIG).exists():  # not a fit that failed and removed its folder
                before = memory.get(path.name) if action == "resume" else None
                if before:  # the run's peak over its processes (a stopped one's too)
                    measured = {k: _max(before.get(k), v) for k, v in measured.items()}
                memory[path.name] = measured
                write_json(memory_file, memory)
            if error is not None:
                raise error
    summary = _summarise(runs, memory, dev)
    write_json(out / "compare.json", summary)
    atomic_write(out / "compare.md", (format_table(summary) + "\n").encode())
    plot(summary, out / "compare.png")
    return summary


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _summarise(runs: dict[str, list[tuple[int, Path, RunConfig]]], memory: dict,
               dev: torch.device) -> dict[str, Any]:
    first_cfg = next(iter(runs.values()))[0][2]
    ks, select = list(first_cfg.train.ks), first_cfg.train.select
    k = int(select.split("@")[1])
    paired_metric = f"ndcg@{k}"
    checksums: dict[str, Path] = {}
    rows, per_user = [], {}
    for name, rs in runs.items():
        seconds, user_values, run_rows = [], [], []
        for seed, path, cfg in rs:
            folder = RunFolder(path)
            folder.read_config()
            folder.load_split()
            checksums.setdefault(folder.signature()["split_sha256"], path)
            if len(checksums) > 1:
                a, b = checksums.values()
                raise ValueError(f"{a} and {b} were trained on different splits (their "
                                 f"split.safetensors checksums differ: the dataset changed "
                                 f"between them?); remove the older runs and compare again")
            results = read_json(folder.file(RESULTS))
            records = folder.read_metrics()
            seconds += [r["seconds"] for r in records if "seconds" in r]
            run = load_run(path, dev)
            user_values.append(per_user_metrics(
                finite_scores(run.model.score), run.split.test, [k], cfg.train.eval_chunk,
                dev)[paired_metric])
            mem = memory.get(path.name) or {}
            run_rows.append({"seed": seed, "dir": str(path), "results": results,
                             "epochs_done": _epochs_done(folder),
                             "peak_rss_mb": mem.get("peak_rss_mb"),
                             "baseline_rss_mb": mem.get("baseline_rss_mb"),
                             "peak_gpu_mb": mem.get("peak_gpu_mb")})
        per_user[name] = np.mean(user_values, axis=0)
        tests = [r["results"]["test"] for r in run_rows]
        peaks = [r["peak_rss_mb"] for r in run_rows]
        gpus = [r["peak_gpu_mb"] for r in run_rows if r["peak_gpu_mb"] is not None]
        rows.append({
            "model": name, "epochs": rs[0][2].train.epochs, "runs": run_rows,
            "metrics": {m: _stats([t[m] for t in tests]) for m in tests[0] if "@" in m},
            "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
            "peak_rss_mb": None if None in peaks else max(peaks),
            "peak_gpu_mb": max(gpus) if gpus else None})
    reference = per_user[rows[0]["model"]]
    for row in rows[1:]:
        row["paired"] = paired_test(per_user[row["model"]], reference)
    first = rows[0]["runs"][0]["results"]
    return {
        "dataset": first_cfg.data.dataset,
        "protocol": first["protocol"],
        "split_sha256": next(iter(checksums)),
        "test_users": first["test"]["users"],
        "users_without_target": first["test"]["users_without_target"],
        "seeds": [seed for seed, _, _ in next(iter(runs.values()))],
        "ks": ks, "select": select,
        "paired_test": {"metric": paired_metric, "reference": rows[0]["model"],
                        "test": "Wilcoxon signed-rank, two-sided (scipy.stats.wilcoxon); "
                                "per-user values averaged over seeds; zero differences "
                                "dropped; not corrected for multiple comparisons"},
        "models": rows,
        "popularity": first["popularity"]["test"],
    }


# -- output -------------------------------------------------------------------------------
def _recall_key(summary: dict[str, Any]) -> str:
    return "recall_liang" if summary["protocol"] == "heldout" else "recall"


def _cell(stats: dict[str, Any]) -> str:
    sd = stats["sd"]
    return f"{stats['mean']:.4f}" if sd is None else f"{stats['mean']:.4f} ± {sd:.4f}"


def _number(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def format_table(summary: dict[str, Any]) -> str:
    """The comparison as a Markdown table, under a line that says what it measures."""
    recall = _recall_key(summary)
    metrics = [f"ndcg@{k}" for k in summary["ks"]] + [f"{recall}@{k}" for k in summary["ks"]]
    definition = ("hits / min(k, |test|) (Liang et al.)" if recall == "recall_liang"
                  else "hits / |test|")
    pt = summary["paired_test"]
    seeds = summary["seeds"]
    gpu = any(row["peak_gpu_mb"] is not None for row in summary["models"])
    title = (f"Test metrics on {summary['dataset']} ({summary['protocol']} protocol, "
             f"{summary['test_users']} test users, one split: sha256 "
             f"{summary['split_sha256'][:12]}), mean ± sd over {len(seeds)} seed"
             f"{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))}); best epoch by "
             f"validation {summary['select']}; Recall@k = {definition}. Δ and p: "
             f"{pt['metric']} per test user against {pt['reference']} (mean difference, "
             f"Wilcoxon signed-rank p).")
    lines = [title, ""]
    header = (["model", "epochs"] + [m.replace("recall_liang", "recall") for m in metrics]
              + ["s/epoch (median)", "peak RSS (MiB)"] + (["peak GPU (MiB)"] if gpu else [])
              + [f"Δ {pt['metric']}", "p"])
    lines += ["| " + " | ".join(header) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in summary["models"]:
        paired = row.get("paired")
        cells = ([row["model"], str(row["epochs"])]
                 + [_cell(row["metrics"][m]) for m in metrics]
                 + [_number(row["seconds_per_epoch"], ".3g"),
                    _number(row["peak_rss_mb"], ".0f")]
                 + ([_number(row["peak_gpu_mb"], ".0f")] if gpu else [])
                 + (["(reference)", ""] if paired is None else
                    [f"{paired['mean_difference']:+.4f}",
                     _number(paired["p_value"], ".3g")]))
        lines.append("| " + " | ".join(cells) + " |")
    pop = summary["popularity"]
    lines.append("| " + " | ".join(["popularity", ""] + [f"{pop[m]:.4f}" for m in metrics]
                                   + [""] * (len(header) - 2 - len(metrics))) + " |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: str | Path) -> Path:
    """Bars of the mean test NDCG@k and Recall@k per model (popularity as a dotted line),
    with ``sd`` over seeds as error bars; saved as a PNG."""
    import matplotlib
    from matplotlib.figure import Figure

    from .viz.plots import DPI, STYLE

    recall = _recall_key(summary)
    rows, ks = summary["models"], summary["ks"]
    width = 0.8 / len(rows)
    colors = matplotlib.colormaps["tab10"](np.arange(len(rows)) % 10)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.2 * 2 + 0.3 * len(rows), 3.8), layout="constrained")
        axes = fig.subplots(1, 2, sharey=False)
        for ax, metric, label in ((axes[0], "ndcg", "NDCG"), (axes[1], recall, "Recall")):
            x = np.arange(len(ks))
            for i, (row, color) in enumerate(zip(rows, colors)):
                stats = [row["metrics"][f"{metric}@{k}"] for k in ks]
                ax.bar(x + (i - (len(rows) - 1) / 2) * width, [s["mean"] for s in stats],
                       width, yerr=[s["sd"] or 0.0 for s in stats], capsize=3, color=color,
                       label=row["model"])
            for j, k in enumerate(ks):
                ax.hlines(summary["popularity"][f"{metric}@{k}"], j - 0.45, j + 0.45,
                          colors="black", linestyles=":", label="popularity" if j == 0 else None)
            ax.set_xticks(x, [f"{label}@{k}" for k in ks])
            ax.set_ylabel(f"test {label}@k" + (" (Liang et al.)" if metric == "recall_liang"
                                                else ""))
            ax.grid(axis="y", alpha=0.3)
        axes[1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        seeds = len(summary["seeds"])
        fig.suptitle(f"{summary['dataset']}, {summary['protocol']} protocol: mean over {seeds} "
                     f"seed{'s' * (seeds != 1)}, error bars: sd")
        path = Path(path)
        fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return path
