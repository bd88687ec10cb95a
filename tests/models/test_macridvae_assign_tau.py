"""MacridVAE's ``assign_tau``: the item-factor assignment at its own temperature, pinned
against dense float64 loop references (the ranking temperature ``tau`` is untouched)."""
import numpy as np
import pytest
import torch

from disentangle.data.interactions import InteractionData
from disentangle.models.macridvae import MacridVAE, MacridVAEConfig

M, K, D = 7, 3, 4
X = torch.tensor([[1., 0., 1., 1., 0., 0., 0.],
                  [0., 1., 0., 0., 1., 1., 1.],
                  [1., 1., 0., 0., 0., 0., 1.]], dtype=torch.float64)


def make_model(seed=0, **kw) -> MacridVAE:
    users, items = np.nonzero(X.numpy())
    torch.manual_seed(seed)
    cfg = MacridVAEConfig(**{"num_factors": K, "dim": D, "batch_size": 2, **kw})
    return MacridVAE(cfg, InteractionData(users, items, np.arange(3), np.arange(M))).double()


def ref_weights(model, temperature):
    """M x K: c_ik = exp(cos(h_i, m_k)/t) / sum_k' exp(cos(h_i, m_k')/t)."""
    h, p = model.items, model.prototypes
    c = torch.zeros(M, K, dtype=h.dtype)
    for i in range(M):
        e = [torch.exp(torch.dot(h[i], p[k]) / (h[i].norm() * p[k].norm()) / temperature)
             for k in range(K)]
        for k in range(K):
            c[i, k] = e[k] / sum(e)
    return c


def ref_logp(model, z, c, temperature):
    """log p(i|u), p(i|u) proportional to sum_k c_ik exp(cos(z_k, h_i)/t)."""
    h = model.items
    out = torch.zeros(z.shape[0], M, dtype=h.dtype)
    for b in range(z.shape[0]):
        mix = torch.zeros(M, dtype=h.dtype)
        for i in range(M):
            for k in range(K):
                cos = torch.dot(z[b, k], h[i]) / (z[b, k].norm() * h[i].norm())
                mix[i] = mix[i] + c[i, k] * torch.exp(cos / temperature)
        out[b] = torch.log(mix / mix.sum())
    return out


def test_default_is_the_single_paper_temperature():
    assert MacridVAEConfig().assign_tau is None
    plain, same = make_model(tau=0.3), make_model(tau=0.3, assign_tau=0.3)
    assert plain.assign_tau == 0.3
    torch.testing.assert_close(plain.item_factor_weights(), ref_weights(plain, 0.3))
    with torch.no_grad():
        assert torch.equal(plain.score(None, X.to_sparse_csr()),
                           same.score(None, X.to_sparse_csr()))


def test_assignment_uses_assign_tau_and_the_decoder_keeps_tau():
    tau, assign_tau = 0.5, 0.05
    model = make_model(tau=tau, assign_tau=assign_tau)
    c = ref_weights(model, assign_tau)
    torch.testing.assert_close(model.item_factor_weights(), c)
    assert not torch.allclose(c, ref_weights(model, tau))
    with torch.no_grad():
        mu = model.factor_embeddings(None, X.to_sparse_csr())
        torch.testing.assert_close(model.score(None, X.to_sparse_csr()),
                                   ref_logp(model, mu, c, tau))
        # explain: softmax_k(cos(mu_k, h_i)/tau + log c_ik), c at assign_tau
        items = torch.tensor([[0, 6], [1, 2], [3, 5]])
        h = model.items / model.items.norm(dim=-1, keepdim=True)
        want = torch.stack([torch.stack([
            torch.softmax(mu[b] @ h[i] / tau + c[i].log(), 0) for i in items[b]])
            for b in range(3)])
        torch.testing.assert_close(model.explain(None, X.to_sparse_csr(), items), want)


def test_gumbel_sample_is_taken_on_the_assign_tau_logits():
    model = make_model(tau=0.5, assign_tau=0.05)
    torch.manual_seed(5)
    got = model.factor_log_weights(sample=True).exp()
    torch.manual_seed(5)
    g = -torch.log(-torch.log(torch.rand(M, K, dtype=torch.float64)))
    torch.testing.assert_close(got, torch.softmax(ref_weights(model, 0.05).log() + g, dim=-1))


@pytest.mark.parametrize("value", [0.0, -0.1])
def test_config_rejects_non_positive_assign_tau(value):
    with pytest.raises(ValueError, match="^assign_tau="):
        make_model(assign_tau=value)
