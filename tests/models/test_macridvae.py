"""MacridVAE pinned against slow, dense, loop-based reference computations on tiny inputs."""
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from disentangle.config import resolve
from disentangle.data.interactions import InteractionData
from disentangle.models.factor_init import spectral_factors
from disentangle.models.macridvae import MacridVAE, MacridVAEConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

M, K, D = 7, 3, 4
X = torch.tensor([[1., 0., 1., 1., 0., 0., 0.],
                  [0., 1., 0., 0., 1., 1., 1.],
                  [1., 1., 0., 0., 0., 0., 1.]], dtype=torch.float64)


def data_from(dense) -> InteractionData:
    users, items = np.nonzero(np.asarray(dense))
    return InteractionData(users, items, np.arange(dense.shape[0]), np.arange(dense.shape[1]))


def make_model(x=X, seed=0, **kw) -> MacridVAE:
    torch.manual_seed(seed)
    cfg = {"num_factors": K, "dim": D, "batch_size": 2}
    cfg.update(kw)
    return MacridVAE(MacridVAEConfig(**cfg), data_from(x)).double()


def sparse(x):
    return x.to_sparse_csr()


# -- independent references: explicit loops, no logsumexp, no sparse tricks ------------------
def ref_weights(model):
    """M x K: c_ik = exp(cos(h_i, m_k)/tau) / sum_k' exp(cos(h_i, m_k')/tau)."""
    h, p, tau = model.items, model.prototypes, model.config.tau
    c = torch.zeros(h.shape[0], p.shape[0], dtype=h.dtype)
    for i in range(h.shape[0]):
        e = [torch.exp(torch.dot(h[i], p[k]) / (h[i].norm() * p[k].norm()) / tau)
             for k in range(p.shape[0])]
        for k in range(p.shape[0]):
            c[i, k] = e[k] / sum(e)
    return c


def ref_mlp(model, v):
    """Encoder layers on one already-normalised input row v (length M)."""
    h = torch.tanh(v @ model.context + model.context_bias)
    return model.head.weight @ h + model.head.bias


def ref_encode(model, x, c):
    """mu (B x K x d) and log-variance offsets, one user and one factor at a time."""
    B, d = x.shape[0], model.dim
    mus, lnvars = [], []
    for b in range(B):
        mu_b, lv_b = [], []
        for k in range(c.shape[1]):
            v = x[b] * c[:, k]
            v = v / v.norm().clamp_min(1e-6)  # tf.nn.l2_normalize epsilon
            out = ref_mlp(model, v)
            mu_b.append(out[:d] / out[:d].norm())
            lv_b.append(-out[d:])
        mus.append(torch.stack(mu_b))
        lnvars.append(torch.stack(lv_b))
    return torch.stack(mus), torch.stack(lnvars)


def ref_kl(lnvar):
    """sum over factors of the batch mean of sum_j 0.5 (-l + e^l - 1)."""
    B, Kf, d = lnvar.shape
    total = 0.0
    for k in range(Kf):
        per_user = [sum(0.5 * (-lnvar[b, k, j] + torch.exp(lnvar[b, k, j]) - 1)
                        for j in range(d)) for b in range(B)]
        total = total + sum(per_user) / B
    return total


def ref_logp(model, z, c):
    """log p(i|u) with p(i|u) proportional to sum_k c_ik exp(cos(z_k, h_i)/tau)."""
    h, tau = model.items, model.config.tau
    B, Kf, _ = z.shape
    out = torch.zeros(B, h.shape[0], dtype=h.dtype)
    for b in range(B):
        mix = torch.zeros(h.shape[0], dtype=h.dtype)
        for i in range(h.shape[0]):
            for k in range(Kf):
                cos = torch.dot(z[b, k], h[i]) / (z[b, k].norm() * h[i].norm())
                mix[i] = mix[i] + c[i, k] * torch.exp(cos / tau)
        out[b] = torch.log(mix / mix.sum())
    return out


def ref_recon(x, logp):
    return sum(-(x[b] * logp[b]).sum() for b in range(x.shape[0])) / x.shape[0]


# -- macro: item-factor weights ----------------------------------------------------------
def test_item_factor_weights_are_softmax_of_cosine_over_tau():
    model = make_model()
    w = model.item_factor_weights()
    torch.testing.assert_close(w, ref_weights(model))
    torch.testing.assert_close(w.sum(-1), torch.ones(M, dtype=w.dtype))


def test_training_weights_are_gumbel_softmax_samples_at_temperature_one():
    model = make_model()
    mode = model.factor_log_weights(sample=False).exp()
    a, b = (model.factor_log_weights(sample=True).exp() for _ in range(2))
    torch.testing.assert_close(a.sum(-1), torch.ones(M, dtype=a.dtype))
    assert not torch.allclose(a, b) and not torch.allclose(a, mode)
    # Replaying the uniforms: the sample is softmax(cos / tau + G), G = -log(-log U).
    torch.manual_seed(5)
    got = model.factor_log_weights(sample=True).exp()
    torch.manual_seed(5)
    g = -torch.log(-torch.log(torch.rand(M, K, dtype=torch.float64)))
    torch.testing.assert_close(got, torch.softmax(ref_weights(model).log() + g, dim=-1))


def test_gumbel_sample_argmax_is_distributed_as_the_softmax():
    # 20000 copies of one item: each row of one call is an independent sample. Cosines
    # (1, 0.8, -1) at tau = 1 give probabilities (0.51, 0.42, 0.07), where a wrongly signed
    # noise (-G instead of G) would pick the last factor about 3% of the time, not 7%.
    n = 20000
    x = torch.zeros(1, n, dtype=torch.float64)
    x[0, 0] = 1.0
    model = make_model(x, tau=1.0)
    with torch.no_grad():
        model.items.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, D))
        model.prototypes.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.8, 0.6, 0.0, 0.0],
                                             [-1.0, 0.0, 0.0, 0.0]]))
        mode = model.factor_log_weights(sample=False).exp()[0]
        torch.manual_seed(1)
        picks = model.factor_log_weights(sample=True).argmax(-1)
    torch.testing.assert_close(mode, torch.softmax(torch.tensor([1.0, 0.8, -1.0]), 0).double())
    freq = torch.bincount(picks, minlength=K).double() / n
    torch.testing.assert_close(freq, mode, atol=0.012, rtol=0)  # 6 standard errors


def test_nogb_and_eval_use_the_deterministic_softmax():
    model = make_model(nogb=True)
    mode = model.factor_log_weights(sample=False)
    torch.testing.assert_close(model.factor_log_weights(sample=True), mode)
    torch.testing.assert_close(mode.exp(), ref_weights(model))
    gb = make_model()
    assert torch.equal(gb.factor_log_weights(sample=False), gb.factor_log_weights(sample=False))


# -- encoder ---------------------------------------------------------------------------------
def test_encoder_masks_each_factor_and_normalises_per_factor():
    model = make_model()
    c = ref_weights(model)
    mu, lnvar = model.encode(sparse(X), c.log(), train=False)
    ref_mu, ref_lnvar = ref_encode(model, X, c)
    torch.testing.assert_close(mu, ref_mu)
    torch.testing.assert_close(lnvar, ref_lnvar)
    torch.testing.assert_close(mu.norm(dim=-1), torch.ones(3, K, dtype=mu.dtype))


def test_sparse_csr_coo_and_dense_inputs_agree_with_the_dense_reference():
    model = make_model()
    x = X * torch.tensor([1., 2., .5, 3., 1., 1., 4.], dtype=torch.float64)  # non-binary values
    x[2] = 0.0  # an empty row encodes the zero vector, not NaN
    c = ref_weights(model)
    ref_mu, _ = ref_encode(model, x, c)
    for hist in (x.to_sparse_csr(), x.to_sparse_coo(), x):
        mu, lnvar = model.encode(hist, c.log())
        torch.testing.assert_close(mu, ref_mu)
        assert torch.isfinite(lnvar).all()


def test_dropout_masks_are_independent_per_factor_and_rescale_kept_entries():
    model = make_model(dropout=0.5)
    with torch.no_grad():
        model.prototypes.copy_(model.prototypes[:1].expand(K, D))  # c_ik = 1/K for every k
    log_c = model.factor_log_weights()
    full = torch.ones(1, M, dtype=torch.float64)
    mu_eval, _ = model.encode(sparse(full), log_c, train=False)
    torch.testing.assert_close(mu_eval[0, 0], mu_eval[0, 1])  # same input, same code
    mu_train, _ = model.encode(sparse(full), log_c, train=True)
    assert not torch.allclose(mu_train[0, 0], mu_train[0, 1])  # P(equal masks) = 2**-7
    # A one-item row normalises to 1: each factor sees either 1 / (1 - p) = 2 or 0.
    one = torch.zeros(1, M, dtype=torch.float64)
    one[0, 3] = 1.0
    kept = ref_mlp(model, 2.0 * one[0])[:D]
    dropped = ref_mlp(model, 0.0 * one[0])[:D]
    kept, dropped = kept / kept.norm(), dropped / dropped.norm()
    seen = set()
    for _ in range(20):
        mu, _ = model.encode(sparse(one), log_c, train=True)
        for k in range(K):
            if torch.allclose(mu[0, k], kept):
                seen.add("kept")
            else:
                torch.testing.assert_close(mu[0, k], dropped)
                seen.add("dropped")
    assert seen == {"kept", "dropped"}


# -- posterior and decoder --------------------------------------------------------------------
def test_kl_matches_reference():
    model = make_model().eval()
    _, kl = model(sparse(X))
    _, ref_lnvar = ref_encode(model, X, ref_weights(model))
    torch.testing.assert_close(kl, ref_kl(ref_lnvar))
    # sigma = std0 * exp(l / 2) is what "l = ln var - ln std0^2" means: KL(l=0) = 0.
    assert ref_kl(torch.zeros(2, K, D, dtype=torch.float64)) == 0


def test_training_samples_z_with_sigma_std0_exp_half_l(monkeypatch):
    model = make_model(nogb=True, dropout=0.0, std0=0.3).train()
    torch.manual_seed(4)
    eps = torch.randn(3, K, D, dtype=torch.float64)
    monkeypatch.setattr(torch, "randn_like", lambda t: eps)
    logp, _ = model(sparse(X))
    c = ref_weights(model)
    mu, lnvar = ref_encode(model, X, c)
    torch.testing.assert_close(logp, ref_logp(model, mu + eps * 0.3 * torch.exp(lnvar / 2), c))
    model.eval()
    torch.testing.assert_close(model(sparse(X))[0], ref_logp(model, mu, c))  # z = mu


def test_decoder_logsumexp_equals_explicit_mixture_of_exponentials():
    model = make_model()
    torch.manual_seed(3)
    z = torch.randn(3, K, D, dtype=torch.float64)
    c = ref_weights(model)
    logp = model.decode(z, c.log())
    torch.testing.assert_close(logp, ref_logp(model, z, c))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, dtype=logp.dtype))
    torch.testing.assert_close(model.decode(z), logp)  # default weights: the eval softmax


def test_decoder_is_finite_at_tiny_temperature_in_float32():
    model = make_model(tau=1e-3).float()  # exp(1/tau) = exp(1000) overflows float64 too
    log_c = model.factor_log_weights(sample=True)
    assert torch.isfinite(log_c).all()
    logp = model.decode(torch.randn(3, K, D), log_c)
    assert torch.isfinite(logp).all()
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3))


def test_eval_loss_matches_reference_including_anneal_and_l2():
    model = make_model(reg=0.01, beta=0.2).eval()
    step = 1
    loss, logs = model.loss(sparse(X), step)
    c = ref_weights(model)
    mu, lnvar = ref_encode(model, X, c)
    recon = ref_recon(X, ref_logp(model, mu, c))
    anneal = min(0.2, step / (5 * 2))  # 3 active users, batch 2 -> 2 updates per epoch
    l2 = sum((w ** 2).sum() for w in (model.context, model.head.weight, model.items,
                                      model.prototypes))
    torch.testing.assert_close(loss, recon + anneal * ref_kl(lnvar) + 0.01 * l2)
    assert logs["recon"] == pytest.approx(recon.item())
    assert logs["kl"] == pytest.approx(ref_kl(lnvar).item())
    assert logs["anneal"] == pytest.approx(anneal)


def test_score_is_eval_mode_log_probability_even_while_training():
    model = make_model().train()
    c = ref_weights(model)
    mu, _ = ref_encode(model, X, c)
    with torch.no_grad():
        s1 = model.score(torch.arange(3), sparse(X))
        s2 = model.score(torch.tensor([9, 9, 9]), sparse(X))  # users are ignored
    torch.testing.assert_close(s1, ref_logp(model, mu, c))
    assert torch.equal(s1, s2) and s1.shape == (3, M)


# -- gradients ------------------------------------------------------------------------------
def test_gradients_are_finite_and_reach_items_and_prototypes_through_the_encoder():
    model = make_model().train()
    _, kl = model(sparse(X))  # KL sees items and prototypes only through c_ik in the encoder
    kl.backward()
    for p in (model.items, model.prototypes, model.context):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    model.zero_grad()
    loss, _ = model.loss(sparse(X), step=5)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_sparse_encoder_gradients_equal_dense_reference_gradients():
    model = make_model()
    c = model.factor_log_weights().exp()
    mu, lnvar = model.encode(sparse(X), c.log())
    ((mu * torch.arange(D)).sum() + lnvar.square().sum()).backward()
    got = [p.grad.clone() for p in (model.items, model.prototypes, model.context)]
    model.zero_grad()
    c = ref_weights(model)
    mu, lnvar = ref_encode(model, X, c)
    ((mu * torch.arange(D)).sum() + lnvar.square().sum()).backward()
    for g, p in zip(got, (model.items, model.prototypes, model.context)):
        torch.testing.assert_close(g, p.grad)


# -- training schedule and batches ------------------------------------------------------------
def test_anneal_is_zero_at_start_and_reaches_beta_after_one_epoch():
    model = make_model(beta=0.2)
    u = model.updates_per_epoch
    assert u == 2
    assert model.anneal(0) == 0.0
    assert model.anneal(1) == pytest.approx(1 / (5 * u))
    assert model.anneal(u) == pytest.approx(0.2)
    assert model.anneal(10 * u) == pytest.approx(0.2)
    big = make_model(beta=1.0)
    assert big.anneal(u) == pytest.approx(0.2) and big.anneal(5 * u) == pytest.approx(1.0)
    _, logs = model.loss(sparse(X), 0)
    assert logs["anneal"] == 0.0


def test_batches_cover_each_active_user_once_as_sparse_csr_rows():
    x = torch.cat([X, torch.zeros(1, M, dtype=torch.float64), X[:1]])  # user 3 is empty
    data = data_from(x)
    model = make_model(x, batch_size=3)
    batches = list(model.batches(data, torch.Generator().manual_seed(0)))
    assert [b.shape for b in batches] == [(3, M), (1, M)]
    assert all(b.layout == torch.sparse_csr and b.dtype == torch.float32 for b in batches)
    assert model.updates_per_epoch == model.num_batches(data) == 2
    rows = torch.cat([b.to_dense() for b in batches])
    dense = torch.from_numpy(data.csr.toarray())
    # Every active user's row appears exactly once (rows matched by content and count).
    got = sorted(map(tuple, rows.tolist()))
    want = sorted(tuple(r) for r in dense.tolist() if any(r))
    assert got == want
    again = list(model.batches(data, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a.to_dense(), b.to_dense()) for a, b in zip(batches, again))


# -- K-factor contract ---------------------------------------------------------------------
def test_user_factor_weights_are_the_history_share_of_each_factor():
    model = make_model()
    x = torch.cat([X, torch.zeros(1, M, dtype=torch.float64)])
    w = model.user_factor_weights(torch.arange(4), sparse(x))
    c = ref_weights(model)
    for b in range(3):
        torch.testing.assert_close(w[b], (x[b][:, None] * c).sum(0) / x[b].sum())
    torch.testing.assert_close(w[3], torch.full((K,), 1 / K, dtype=w.dtype))


def test_factor_and_item_embeddings_follow_their_definitions():
    model = make_model()
    emb = model.factor_embeddings(torch.arange(3), sparse(X))
    torch.testing.assert_close(emb, ref_encode(model, X, ref_weights(model))[0])
    item_emb = model.item_factor_embeddings()
    assert item_emb.shape == (M, K, D)
    h = model.items / model.items.norm(dim=-1, keepdim=True)
    for i in range(M):
        for k in range(K):
            torch.testing.assert_close(item_emb[i, k], ref_weights(model)[i, k] * h[i])


def test_explain_is_the_posterior_share_of_each_factor_in_the_mixture():
    model = make_model()
    items = torch.tensor([[0, 4], [6, 6], [2, 5]])
    e = model.explain(torch.arange(3), sparse(X), items)
    c = ref_weights(model)
    mu, _ = ref_encode(model, X, c)
    h, tau = model.items, model.config.tau
    for b in range(3):
        for n in range(2):
            i = items[b, n]
            terms = torch.stack([c[i, k] * torch.exp(torch.dot(mu[b, k], h[i]) / h[i].norm() / tau)
                                 for k in range(K)])
            torch.testing.assert_close(e[b, n], terms / terms.sum())


# -- config, repr ----------------------------------------------------------------------------
def test_defaults_are_the_papers_except_the_spectral_start():
    cfg = MacridVAEConfig()
    assert (cfg.num_factors, cfg.dim, cfg.tau, cfg.beta, cfg.std0, cfg.dropout,
            cfg.batch_size, cfg.nogb, cfg.reg, cfg.assign_tau) == (
        7, 100, 0.1, 0.2, 0.075, 0.5, 500, False, 0.0, None)
    assert cfg.init == "spectral"


def test_paper_config_is_the_default_config_with_the_xavier_start():
    paper = resolve("macridvae", files=[CONFIGS / "macridvae-paper.yaml"])
    default = resolve("macridvae", files=[CONFIGS / "macridvae.yaml"])
    assert paper.model == dataclasses.replace(MacridVAEConfig(), init="xavier")
    assert default.model == MacridVAEConfig()
    assert (paper.data, paper.train) == (default.data, default.train)


@pytest.mark.parametrize("field,value", [
    ("num_factors", 0), ("dim", 0), ("tau", 0.0), ("dropout", 1.0), ("dropout", -0.1),
    ("beta", -1.0), ("std0", 0.0), ("batch_size", 0), ("reg", -1e-3), ("init", "random")])
def test_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=f"^{field}=") as err:
        MacridVAE(MacridVAEConfig(**{field: value}), data_from(X))
    assert "\n" not in str(err.value)


def test_repr_shows_sizes():
    assert repr(make_model()) == f"MacridVAE(num_items={M}, num_factors={K}, dim={D})"


# -- initialisation ---------------------------------------------------------------------------
def two_blocks(users_per_block=30, items_per_block=10, per_user=5, seed=0) -> np.ndarray:
    """Users of block b pick ``per_user`` random items of item block b."""
    rng = np.random.default_rng(seed)
    x = np.zeros((2 * users_per_block, 2 * items_per_block), dtype=np.float32)
    for u in range(2 * users_per_block):
        block = (u // users_per_block) * items_per_block
        x[u, block + rng.choice(items_per_block, size=per_user, replace=False)] = 1.0
    return x


def test_spectral_start_is_spectral_factors_at_xavier_norms():
    x = two_blocks()
    data = data_from(x)
    torch.manual_seed(3)
    model = MacridVAE(MacridVAEConfig(num_factors=2, dim=8), data)
    torch.manual_seed(3)
    paper = MacridVAE(MacridVAEConfig(num_factors=2, dim=8, init="xavier"), data)
    seed = int(torch.randint(2**31 - 1, ()).item())  # the draw after reset_parameters
    start = spectral_factors(data.csr, 8, 2, seed)
    M, d = x.shape[1], 8
    # same directions as spectral_factors, norms of Xavier's init in expectation
    items, protos = model.items.detach().double(), model.prototypes.detach().double()
    torch.testing.assert_close(F.normalize(items[start.items.any(1)], dim=1),
                               F.normalize(torch.from_numpy(start.items[start.items.any(1)]),
                                           dim=1))
    torch.testing.assert_close(F.normalize(protos, dim=1), torch.from_numpy(start.prototypes))
    assert items.norm().item() == pytest.approx(math.sqrt(2 * M * d / (M + d)), rel=1e-5)
    assert protos.norm(dim=1).tolist() == pytest.approx([math.sqrt(2 * d / (2 + d))] * 2,
                                                        rel=1e-5)
    # the encoder's start is the paper's (drawn before the data-driven part)
    torch.testing.assert_close(model.context, paper.context)
    torch.testing.assert_close(model.head.weight, paper.head.weight)


def test_spectral_start_puts_each_item_block_in_its_own_factor_before_training():
    x = two_blocks()
    torch.manual_seed(0)
    model = MacridVAE(MacridVAEConfig(num_factors=2, dim=8), data_from(x))
    with torch.no_grad():
        top = model.item_factor_weights().argmax(1)
    assert len(set(top[:10].tolist())) == 1 and len(set(top[10:].tolist())) == 1
    assert top[0] != top[10]


# -- learning ---------------------------------------------------------------------------------
def test_learns_two_clusters_of_users_and_items():
    x = two_blocks()
    data = data_from(x)
    torch.manual_seed(0)
    model = MacridVAE(MacridVAEConfig(num_factors=2, dim=8, batch_size=10), data)
    full = torch.from_numpy(x).to_sparse_csr()

    def eval_recon():
        model.eval()
        with torch.no_grad():
            return model.loss(full, 10 ** 6)[1]["recon"]

    before = eval_recon()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g, step = torch.Generator().manual_seed(0), 0
    for _ in range(8):  # 6 updates per epoch
        model.train()
        for batch in model.batches(data, g):
            loss, _ = model.loss(batch, step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    after = eval_recon()
    assert after < before - 0.5 * math.log(2)  # at least half a nat per item of progress
    with torch.no_grad():
        p = model.score(None, full).exp()
    own = torch.cat([p[:30, :10].sum(1), p[30:, 10:].sum(1)])
    assert own.min() > 0.6  # each user's mass concentrates on its own cluster
