"""MacridVAE's chunked decoder (:class:`MixtureLogits`) against slow references: the loss and
its gradient with respect to every parameter, and the chunking itself."""
import pytest
import torch

from disentangle.models import macridvae
from disentangle.models.macridvae import MixtureLogits
from tests.models.test_macridvae import (
    X,
    make_model,
    ref_encode,
    ref_kl,
    ref_logp,
    ref_recon,
    ref_weights,
    sparse,
)


def ref_mixture(q, a):
    """L[b, i] = log sum_k exp(q[b, k] . a[i]), one entry at a time."""
    B, K, _ = q.shape
    out = torch.zeros(B, a.shape[0], dtype=q.dtype)
    for b in range(B):
        for i in range(a.shape[0]):
            out[b, i] = torch.log(sum(torch.exp(torch.dot(q[b, k], a[i])) for k in range(K)))
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 100])
def test_mixture_logits_and_gradients_match_the_explicit_sum_for_any_chunk(chunk):
    torch.manual_seed(0)
    q = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    a = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 7, dtype=torch.float64)
    got = MixtureLogits.apply(q, a, chunk)
    (got * w).sum().backward()
    grads = q.grad.clone(), a.grad.clone()
    q.grad = a.grad = None
    want = ref_mixture(q, a)
    (want * w).sum().backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grads[0], q.grad)
    torch.testing.assert_close(grads[1], a.grad)


def test_mixture_logits_pass_gradcheck():
    torch.manual_seed(1)
    q = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    a = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, a: MixtureLogits.apply(q, a, 2), (q, a))


def ref_loss(model, step):
    c = ref_weights(model)
    mu, lnvar = ref_encode(model, X, c)
    anneal = min(model.config.beta, step / (5 * model.updates_per_epoch))
    return ref_recon(X, ref_logp(model, mu, c)) + anneal * ref_kl(lnvar)


@pytest.mark.parametrize("budget", [1, 2 * 3 * 3, 1 << 20])  # 1 item, 3 items, all items
def test_loss_and_its_gradient_match_the_slow_reference(monkeypatch, budget):
    monkeypatch.setattr(macridvae, "DECODER_CHUNK_SCORES", budget)
    model = make_model().eval()  # batch of 3 users, K = 3: budget 18 gives 2 items a chunk
    loss, _ = model.loss(sparse(X), step=1)
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    want = ref_loss(model, step=1)
    want.backward()
    torch.testing.assert_close(loss, want)
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, msg=n)
        assert got[n].abs().sum() > 0, n


def test_decoder_chunking_does_not_change_scores(monkeypatch):
    model = make_model().eval()
    torch.manual_seed(2)
    z = torch.randn(3, 3, 4, dtype=torch.float64)
    whole = model.decode(z)
    monkeypatch.setattr(macridvae, "DECODER_CHUNK_SCORES", 1)
    torch.testing.assert_close(model.decode(z), whole, rtol=0, atol=1e-12)
