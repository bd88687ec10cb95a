"""Ranking metrics against hand-computed cases."""
import numpy as np
import scipy.sparse as sp
import torch

from disentangle.data.splits import EvalSet
from disentangle.metrics.ranking import evaluate, metrics_from_hits, topk_hits


def csr(rows, m):
    r = [i for i, row in enumerate(rows) for _ in row]
    c = [j for row in rows for j in row]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), m))


def test_ndcg_and_both_recalls_by_hand():
    # ranked list hits at positions 1 and 3; 4 targets; k = 3
    hits = np.array([[True, False, True]])
    out = metrics_from_hits(hits, np.array([4]), [3])
    dcg = 1 + 1 / np.log2(4)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)  # min(k, |T|) = 3 ideal hits
    assert np.isclose(out["ndcg@3"][0], dcg / idcg)
    assert np.isclose(out["recall@3"][0], 2 / 4)
    assert np.isclose(out["recall_liang@3"][0], 2 / 3)


def test_user_without_targets_counts_as_zero():
    out = metrics_from_hits(np.zeros((1, 2), bool), np.array([0]), [2])
    assert out["ndcg@2"][0] == 0 and out["recall@2"][0] == 0 and out["recall_liang@2"][0] == 0


def test_history_is_masked_before_ranking():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    hits = topk_hits(scores, csr([[0, 1]], 5), csr([[3]], 5), k=2)
    # items 0 and 1 are masked, so the top-2 are items 2 and 3; 3 is the target
    assert hits.tolist() == [[False, True]]


def test_evaluate_chunks_agree_with_one_chunk_and_perfect_scorer_gets_one():
    rng = np.random.default_rng(0)
    m = 30
    target = [sorted(rng.choice(m, 3, replace=False).tolist()) for _ in range(7)]
    history = [[j for j in rng.choice(m, 4, replace=False).tolist() if j not in t] for t in target]
    es = EvalSet(np.arange(7), csr(history, m), csr(target, m))
    dense_target = torch.from_numpy(es.target.toarray())

    def oracle(users, hist):
        return dense_target[users] + 0.01 * torch.rand(len(users), m)

    a = evaluate(oracle, es, ks=(3, 10), chunk_size=2)
    assert a["ndcg@3"] == 1.0 and a["recall@3"] == 1.0 and a["recall_liang@10"] == 1.0
    noisy = lambda users, hist: torch.from_numpy(rng.random((len(users), m))).float()
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    b = evaluate(noisy, es, ks=(5,), chunk_size=3)
    rng = np.random.default_rng(1)
    c = evaluate(noisy, es, ks=(5,), chunk_size=100)
    assert b["ndcg@5"] != 1.0
    # chunked scoring draws the same random numbers in the same order, so results agree
    assert np.isclose(b["ndcg@5"], c["ndcg@5"])


def test_topk_hits_leaves_the_scores_unchanged():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    before = scores.clone()
    topk_hits(scores, csr([[0, 1]], 5), csr([[3]], 5), k=2)
    expanded = torch.arange(5.0).expand(2, 5)  # a scorer may return a broadcast view
    hits = topk_hits(expanded, csr([[4], [0]], 5), csr([[3], [4]], 5), k=1)
    assert torch.equal(scores, before) and hits.tolist() == [[True], [True]]
