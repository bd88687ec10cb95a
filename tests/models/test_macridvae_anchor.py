"""MacridVAE's ``anchor``: the term that keeps each item on its spectral start's cluster,
pinned against a hand-written loop, and refused where it has no start to keep."""
import numpy as np
import pytest
import torch

from disentangle.config import ConfigError, resolve
from disentangle.data.interactions import InteractionData
from disentangle.models.factor_init import spectral_factors
from disentangle.models.macridvae import MacridVAE, MacridVAEConfig

# two blocks of co-occurring items: users 0-3 take items 0-3, users 4-7 take items 4-7
USERS, ITEMS = np.nonzero(np.kron(np.eye(2), np.ones((4, 4))))
M, K, D = 8, 2, 4


def make_model(anchor: float, seed: int = 0) -> MacridVAE:
    torch.manual_seed(seed)
    data = InteractionData(USERS, ITEMS, np.arange(8), np.arange(M))
    cfg = MacridVAEConfig(num_factors=K, dim=D, batch_size=8, nogb=True, dropout=0.0,
                          anchor=anchor)
    return MacridVAE(cfg, data).double(), data


def test_start_factor_is_the_spectral_clusters():
    model, data = make_model(1.0, seed=3)
    torch.manual_seed(3)
    seed = int(torch.randint(2**31 - 1, ()).item())
    expected = spectral_factors(data.csr, D, K, seed).labels
    assert model.start_factor.tolist() == list(expected)
    # the two co-occurrence blocks are the two clusters
    assert len(set(expected[:4])) == 1 and len(set(expected[4:])) == 1
    assert expected[0] != expected[4]


def test_loss_adds_gamma_times_the_mean_negative_log_assignment_of_the_start_cluster():
    gamma = 2.5
    plain, data = make_model(0.0)
    anchored, _ = make_model(gamma)
    anchored.load_state_dict(plain.state_dict())
    batch = torch.sparse_csr_tensor(*[torch.as_tensor(a) for a in (
        data.csr.indptr, data.csr.indices, data.csr.data.astype(np.float64))], size=(8, M))
    torch.manual_seed(1)
    base, _ = plain.loss(batch, step=3)
    torch.manual_seed(1)
    total, parts = anchored.loss(batch, step=3)
    # loop reference of -(1/M) sum_i log c_{i k0(i)}, c = softmax_k(cos(h_i, m_k) / tau)
    h, p, k0 = anchored.items, anchored.prototypes, anchored.start_factor
    terms = []
    for i in range(M):
        logits = torch.stack([torch.dot(h[i], p[k]) / (h[i].norm() * p[k].norm())
                              for k in range(K)]) / anchored.assign_tau
        terms.append(-(logits[k0[i]] - torch.logsumexp(logits, 0)))
    expected = torch.stack(terms).mean()
    assert parts["anchor"] == pytest.approx(expected.item(), rel=1e-10)
    assert (total - base).item() == pytest.approx(gamma * expected.item(), rel=1e-8)
    total.backward()
    assert anchored.prototypes.grad is not None and anchored.prototypes.grad.abs().sum() > 0


def test_anchor_needs_the_spectral_start_and_is_not_negative():
    with pytest.raises(ConfigError, match="model.anchor"):
        resolve("macridvae", overrides=["model.init=xavier", "model.anchor=1"])
    with pytest.raises(ConfigError, match="model.anchor"):
        resolve("macridvae", overrides=["model.anchor=-1"])
    assert resolve("macridvae", overrides=["model.init=xavier", "model.anchor=0"])
