"""MacridVAE's sampled-softmax decoder: the log-Q-corrected estimate by hand on a tiny case,
its unbiasedness, and that the default stays the full softmax."""
import math

import pytest
import torch

from disentangle.models.macridvae import MacridVAEConfig
from tests.models.test_macridvae import K, X, data_from, make_model, sparse


def test_sampled_recon_is_the_log_q_corrected_estimate_by_hand():
    model = make_model(decoder="sampled", num_negatives=5).eval()
    torch.manual_seed(0)
    z = torch.randn(1, K, 4, dtype=torch.float64)
    log_c = model.factor_log_weights()
    o = model.mixture_logits(z, log_c)[0].detach()      # logits of all 7 items
    q = model.proposal.double()
    negatives = torch.tensor([5, 5, 1, 6, 0])           # item 0 is a positive: dropped
    got = model.sampled_recon(z, log_c, sparse(X[:1]), negatives)
    positives = [0, 2, 3]                               # row 0 of X
    z_hat = sum(math.exp(o[i]) for i in positives)
    z_hat += sum(math.exp(o[j]) / (5 * q[j]) for j in (5, 5, 1, 6))
    want = -sum(o[i] - math.log(z_hat) for i in positives)
    assert got.item() == pytest.approx(float(want), rel=1e-12)


def test_popularity_proposal_is_training_counts_plus_one():
    model = make_model(decoder="sampled")
    counts = X.sum(0) + 1
    torch.testing.assert_close(model.proposal.double(), counts / counts.sum())
    uniform = make_model(decoder="sampled", sampler="uniform").proposal
    torch.testing.assert_close(uniform, torch.full((7,), 1 / 7, dtype=uniform.dtype))


@pytest.mark.parametrize("sampler", ["popularity", "uniform"])
def test_corrected_normaliser_is_unbiased(sampler):
    model = make_model(decoder="sampled", sampler=sampler, num_negatives=40000).eval()
    torch.manual_seed(1)
    z = torch.randn(1, K, 4, dtype=torch.float64)
    log_c = model.factor_log_weights()
    o = model.mixture_logits(z, log_c)[0]
    row = torch.zeros(1, 7, dtype=torch.float64)
    row[0, 2] = 1.0                                     # one positive: item 2
    recon = model.sampled_recon(z, log_c, sparse(row), model.sample_negatives())
    log_z_hat = recon.item() + o[2].item()              # recon = -(o_2 - log Z_hat)
    assert log_z_hat == pytest.approx(torch.logsumexp(o, 0).item(), abs=0.02)


def test_sampled_training_loss_has_finite_gradients_and_eval_loss_is_the_full_one():
    model = make_model(decoder="sampled", num_negatives=3).train()
    loss, _ = model.loss(sparse(X), step=1)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    full = make_model().eval()
    model.eval()
    assert torch.equal(model.loss(sparse(X), 1)[0], full.loss(sparse(X), 1)[0])
    assert "proposal" not in model.state_dict()  # saved runs are unchanged


def test_default_decoder_is_full_and_options_are_checked():
    assert MacridVAEConfig().decoder == "full"
    for field, value in (("decoder", "partial"), ("num_negatives", 0), ("sampler", "x")):
        with pytest.raises(ValueError, match=f"^{field}="):
            make_model(**{field: value})
    assert data_from(X).num_items == 7
