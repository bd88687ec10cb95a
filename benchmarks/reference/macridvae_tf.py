"""Independent TensorFlow (graph mode) re-implementation of the MacridVAE reference algorithm.

What it is: a stand-alone re-implementation, written for this project, of the computations in
the MacridVAE authors' TensorFlow 1 code (Ma et al., "Learning Disentangled Representations
for Recommendation", NeurIPS 2019), used only to check ``disentangle``'s PyTorch model against
the reference algorithm on Liang et al.'s held-out-user split files (``pro_sg``). It is not
part of the package and imports nothing from it.

Computations, as in the reference:

* weights: xavier-uniform encoder table (M x d), encoder head (d x 2d), item table (M x d) and
  prototypes (K x d); truncated-normal biases with standard deviation 0.001; every
  initializer gets the run's seed as its op seed, as in the authors' code, so in graph mode
  tensors of the same shape start equal (the encoder table and the item table are the same
  M x d matrix at step 0; checked). ``disentangle`` draws them independently; over 16 seeds
  the two give the same results (see README);
* item-prototype logits cos(h_i, m_k) / tau; in training a RelaxedOneHotCategorical sample at
  temperature 1 (softmax(logits + Gumbel noise)), one per batch, shared by encoder and
  decoder; in evaluation the softmax;
* per factor k: x * c[:, k], row l2-normalisation, dropout (keep 0.5, training only),
  tanh(x W1 + b1) W2 + b2, mu = l2-normalised first half, lnvar = -second half,
  std = 0.075 exp(lnvar / 2), KL_k = mean_u sum_j (-lnvar + exp(lnvar) - 1) / 2,
  z = mu + eps * std (training only), decoder probs += exp(cos(z, h_i) / tau) * c[:, k];
* loss = mean_u sum_i -log_softmax(log probs) x + anneal * sum_k KL_k (+ L2, default 0),
  anneal = min(beta, updates / (5 * batches per epoch)); tf.compat.v1 AdamOptimizer(1e-3);
* training users shuffled each epoch with np.random.shuffle; the validation NDCG@100 is
  measured after every epoch and the best epoch's weights are used for the test numbers
  (NDCG@100, Recall@20, Recall@50 with Liang's recall = hits / min(k, |test|); fold-in items
  masked; a user without targets counts 0).

Install (outside the project's environment; TensorFlow is not a dependency of the package)::

    python -m venv /work/tfenv
    /work/tfenv/bin/pip install tensorflow-cpu numpy pandas scipy

Run (from the repository root)::

    nice -n 5 /work/tfenv/bin/python benchmarks/reference/macridvae_tf.py \\
        --split-dir ../shared/data/heldout/ml-100k/pro_sg --seeds 1 2 3 4 5 --epochs 200 \\
        --out benchmarks/results/macridvae-tf-reference-ml-100k.json

``--nogb`` (plain softmax in training) and ``--adam-epsilon`` exist to toggle single
computations when hunting a difference.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
import tensorflow as tf
from scipy import sparse

tf1 = tf.compat.v1
tf1.disable_eager_execution()
tf1.logging.set_verbosity(tf1.logging.ERROR)

KEYS = ["ndcg@100", "recall_liang@20", "recall_liang@50"]


# -- data ----------------------------------------------------------------------------------
def load_split(split_dir: Path):
    """``(train, (val_tr, val_te), (test_tr, test_te))`` as float32 CSR matrices over the
    ``len(unique_sid.txt)`` items; held-out users renumbered from 0 within each pair."""
    num_items = sum(1 for line in (split_dir / "unique_sid.txt").read_text().splitlines()
                    if line.strip())
    tp = pd.read_csv(split_dir / "train.csv")
    num_train = int(tp["uid"].max()) + 1
    train = sparse.csr_matrix((np.ones(len(tp), dtype=np.float32), (tp["uid"], tp["sid"])),
                              shape=(num_train, num_items))

    def pair(name):
        tr = pd.read_csv(split_dir / f"{name}_tr.csv")
        te = pd.read_csv(split_dir / f"{name}_te.csv")
        lo = min(tr["uid"].min(), te["uid"].min() if len(te) else tr["uid"].min())
        hi = max(tr["uid"].max(), te["uid"].max() if len(te) else tr["uid"].max())
        shape = (int(hi - lo) + 1, num_items)
        out = []
        for df in (tr, te):
            out.append(sparse.csr_matrix(
                (np.ones(len(df), dtype=np.float32), (df["uid"] - lo, df["sid"])), shape=shape))
        return tuple(out)

    return train, pair("validation"), pair("test")


# -- metrics (Liang et al.) ----------------------------------------------------------------
def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    rows = np.arange(scores.shape[0])[:, None]
    order = np.argsort(-scores[rows, part], axis=1)
    return part[rows, order]


def ndcg_at_k(scores: np.ndarray, heldout: sparse.csr_matrix, k: int) -> np.ndarray:
    idx = _topk(scores, k)
    rows = np.arange(scores.shape[0])[:, None]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (heldout[rows, idx].toarray() * discount).sum(axis=1)
    n = np.asarray(heldout.getnnz(axis=1))
    idcg = np.array([discount[:min(int(c), k)].sum() for c in n])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dcg / idcg
    return np.nan_to_num(out, nan=0.0)


def recall_at_k(scores: np.ndarray, heldout: sparse.csr_matrix, k: int) -> np.ndarray:
    idx = _topk(scores, k)
    rows = np.arange(scores.shape[0])[:, None]
    hits = heldout[rows, idx].toarray().sum(axis=1)
    n = np.asarray(heldout.getnnz(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = hits / np.minimum(k, n)
    return np.nan_to_num(out, nan=0.0)


# -- model ---------------------------------------------------------------------------------
class MacridVAEGraph:
    """The reference graph: placeholders, variables, logits, loss and the Adam step."""

    def __init__(self, num_items: int, seed: int, kfac: int = 7, dfac: int = 100,
                 tau: float = 0.1, std0: float = 0.075, lam: float = 0.0, lr: float = 1e-3,
                 nogb: bool = False, adam_epsilon: float = 1e-8):
        self.kfac, self.dfac, self.tau, self.std0 = kfac, dfac, tau, std0
        xavier = tf1.glorot_uniform_initializer(seed=seed)
        tnorm = tf1.truncated_normal_initializer(stddev=0.001, seed=seed)
        self.w1 = tf1.get_variable("enc_w1", [num_items, dfac], initializer=xavier)
        self.b1 = tf1.get_variable("enc_b1", [dfac], initializer=tnorm)
        self.w2 = tf1.get_variable("enc_w2", [dfac, 2 * dfac], initializer=xavier)
        self.b2 = tf1.get_variable("enc_b2", [2 * dfac], initializer=tnorm)
        self.items = tf1.get_variable("items", [num_items, dfac], initializer=xavier)
        self.protos = tf1.get_variable("prototypes", [kfac, dfac], initializer=xavier)

        self.x = tf1.placeholder(tf.float32, [None, num_items], name="x")
        self.keep = tf1.placeholder_with_default(1.0, shape=None, name="keep")
        self.training = tf1.placeholder_with_default(0.0, shape=None, name="training")
        self.anneal = tf1.placeholder_with_default(1.0, shape=None, name="anneal")

        items_n = tf.nn.l2_normalize(self.items, axis=1)
        protos_n = tf.nn.l2_normalize(self.protos, axis=1)
        cate_logits = tf.matmul(items_n, protos_n, transpose_b=True) / tau      # M x K
        cate_mode = tf.nn.softmax(cate_logits, axis=1)
        if nogb:
            cates = cate_mode
        else:
            # RelaxedOneHotCategorical(temperature=1).sample(): uniform on [tiny, 1),
            # Gumbel noise, softmax of (logits + noise) / 1.
            u = tf1.random_uniform(tf.shape(cate_logits), minval=np.finfo(np.float32).tiny,
                                   maxval=1.0, dtype=tf.float32)
            gumbel = -tf.math.log(-tf.math.log(u))
            cate_sample = tf.nn.softmax(cate_logits + gumbel, axis=1)
            cates = self.training * cate_sample + (1.0 - self.training) * cate_mode

        probs, kl = None, None
        for k in range(kfac):
            c_k = tf.reshape(cates[:, k], (1, -1))                             # 1 x M
            mu, std, kl_k = self._encode(self.x * c_k)
            eps = tf1.random_normal(tf.shape(std))
            z = mu + self.training * eps * std
            kl = kl_k if kl is None else kl + kl_k
            z = tf.nn.l2_normalize(z, axis=1)
            p_k = tf.exp(tf.matmul(z, items_n, transpose_b=True) / tau) * c_k
            probs = p_k if probs is None else probs + p_k
        self.logits = tf.nn.log_softmax(tf.math.log(probs))
        self.recon = tf.reduce_mean(tf.reduce_sum(-self.logits * self.x, axis=-1))
        self.kl = kl
        reg = lam * tf.add_n([tf.reduce_sum(tf.square(w)) for w in
                              (self.w1, self.w2, self.items, self.protos)])
        self.loss = self.recon + self.anneal * kl + reg
        opt = tf1.train.AdamOptimizer(lr, epsilon=adam_epsilon)
        self.train_op = opt.minimize(self.loss)
        self.params = [self.w1, self.b1, self.w2, self.b2, self.items, self.protos]

    def _encode(self, x):
        h = tf.nn.l2_normalize(x, axis=1)
        h = tf.nn.dropout(h, rate=1.0 - self.keep)
        h = tf.nn.tanh(tf.matmul(h, self.w1) + self.b1)
        h = tf.matmul(h, self.w2) + self.b2
        mu = tf.nn.l2_normalize(h[:, :self.dfac], axis=1)
        lnvar = -h[:, self.dfac:]
        std = tf.exp(0.5 * lnvar) * self.std0
        kl = tf.reduce_mean(tf.reduce_sum(0.5 * (-lnvar + tf.exp(lnvar) - 1.0), axis=1))
        return mu, std, kl


# -- one run -------------------------------------------------------------------------------
def evaluate(sess, g: MacridVAEGraph, fold_in: sparse.csr_matrix, target: sparse.csr_matrix,
             batch_size: int, ks_ndcg=(100,), ks_recall=()) -> dict:
    out = {f"ndcg@{k}": [] for k in ks_ndcg}
    out.update({f"recall_liang@{k}": [] for k in ks_recall})
    for st in range(0, fold_in.shape[0], batch_size):
        x = fold_in[st:st + batch_size].toarray().astype(np.float32)
        pred = sess.run(g.logits, feed_dict={g.x: x})
        pred[x.nonzero()] = -np.inf
        te = target[st:st + batch_size]
        for k in ks_ndcg:
            out[f"ndcg@{k}"].append(ndcg_at_k(pred, te, k))
        for k in ks_recall:
            out[f"recall_liang@{k}"].append(recall_at_k(pred, te, k))
    return {key: float(np.concatenate(v).mean()) for key, v in out.items()}


def run(split_dir: Path, seed: int, epochs: int, batch_size: int = 500, keep: float = 0.5,
        beta: float = 0.2, threads: int = 1, **model_kw) -> dict:
    train, (val_tr, val_te), (test_tr, test_te) = load_split(split_dir)
    tf1.reset_default_graph()
    np.random.seed(seed)
    tf1.set_random_seed(seed)
    g = MacridVAEGraph(train.shape[1], seed, **model_kw)
    n = train.shape[0]
    idx = list(range(n))
    num_batches = int(np.ceil(n / batch_size))
    total_anneal = 5 * num_batches
    config = tf1.ConfigProto(intra_op_parallelism_threads=threads,
                             inter_op_parallelism_threads=threads)
    epoch_secs, train_secs, history = [], [], []
    with tf1.Session(config=config) as sess:
        sess.run(tf1.global_variables_initializer())
        best, best_epoch, best_params = -np.inf, -1, None
        updates = 0.0
        for epoch in range(epochs):
            start = time.perf_counter()
            np.random.shuffle(idx)
            for st in range(0, n, batch_size):
                x = train[idx[st:st + batch_size]].toarray().astype(np.float32)
                anneal = min(beta, updates / total_anneal) if total_anneal > 0 else beta
                sess.run(g.train_op, feed_dict={g.x: x, g.keep: keep, g.anneal: anneal,
                                                g.training: 1.0})
                updates += 1
            train_secs.append(time.perf_counter() - start)
            val = evaluate(sess, g, val_tr, val_te, batch_size)["ndcg@100"]
            epoch_secs.append(time.perf_counter() - start)
            history.append(val)
            if val > best:
                best, best_epoch = val, epoch
                best_params = sess.run(g.params)
        for var, value in zip(g.params, best_params):
            var.load(value, sess)
        test = evaluate(sess, g, test_tr, test_te, batch_size, ks_ndcg=(100,),
                        ks_recall=(20, 50))
    return {"seed": seed, "best_epoch": best_epoch, "best_val_ndcg@100": best, **test,
            "seconds_per_epoch": statistics.median(epoch_secs),
            "train_seconds_per_epoch": statistics.median(train_secs),
            "wall_seconds": sum(epoch_secs), "val_ndcg_history": history}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for k in KEYS:
        vals = [r[k] for r in runs]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[k] = {"mean": statistics.mean(vals), "sd": sd, "se": sd / len(vals) ** 0.5}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split-dir", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nogb", action="store_true")
    p.add_argument("--adam-epsilon", type=float, default=1e-8)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    runs = []
    for seed in args.seeds:
        r = run(args.split_dir, seed, args.epochs, threads=args.threads, nogb=args.nogb,
                adam_epsilon=args.adam_epsilon)
        runs.append(r)
        print(f"seed {seed}: " + "  ".join(f"{k}={r[k]:.4f}" for k in KEYS)
              + f"  best epoch {r['best_epoch']}  {r['seconds_per_epoch']:.3f}s/epoch"
              f" ({r['train_seconds_per_epoch']:.3f}s training)",
              flush=True)
        if args.out:  # written after every seed so a cut-short run keeps what it has
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(
                {"split_dir": str(args.split_dir), "epochs": args.epochs,
                 "tensorflow": tf.__version__, "nogb": args.nogb,
                 "adam_epsilon": args.adam_epsilon, "runs": runs, "summary": summarize(runs)},
                indent=2))
    s = summarize(runs)
    print(f"\n{'metric (test)':<20}{'mean':>10}{'sd':>10}{'se':>10}")
    for k in KEYS:
        print(f"{k:<20}{s[k]['mean']:>10.4f}{s[k]['sd']:>10.4f}{s[k]['se']:>10.4f}")
    print(f"median seconds/epoch "
          f"{statistics.median(r['seconds_per_epoch'] for r in runs):.3f} (training only "
          f"{statistics.median(r['train_seconds_per_epoch'] for r in runs):.3f})")


if __name__ == "__main__":
    main()
