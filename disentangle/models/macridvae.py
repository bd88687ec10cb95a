"""MacridVAE: macro- and micro-disentangled variational autoencoder for recommendation."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from disentangle.data import InteractionData
from disentangle.models.base import MAX_WIDTH, FactorRecommender, ModelConfig
from disentangle.models.factor_init import spectral_factors
from disentangle.models.recommender import csr_parts, user_row_batches

INITS = ("spectral", "xavier")
DECODERS = ("full", "sampled")
SAMPLERS = ("popularity", "uniform")
#: Scores held at a time by the decoder: ``B x K x C`` for a chunk of ``C`` items.
DECODER_CHUNK_SCORES = 1 << 20


class MixtureLogits(torch.autograd.Function):
    r"""``B x M`` mixture logits :math:`L_{bi} = \operatorname{logsumexp}_k
    (\mathbf{q}_{bk} \cdot \mathbf{a}_i)` from ``B x K x e`` queries ``q`` and ``M x e``
    keys ``a``, computed over chunks of items so the ``B x K x M`` scores never exist whole.

    Backward recomputes each chunk's scores :math:`S_{bki}` instead of keeping them:
    :math:`\partial L_{bi} / \partial S_{bki} = \exp(S_{bki} - L_{bi})` (the factor
    posterior), so with :math:`G_{bki} = g_{bi} \exp(S_{bki} - L_{bi})`,
    :math:`\nabla_{\mathbf{q}_{bk}} = \sum_i G_{bki} \mathbf{a}_i` and
    :math:`\nabla_{\mathbf{a}_i} = \sum_{b,k} G_{bki} \mathbf{q}_{bk}`: two matrix
    products per chunk, and memory of ``B x M`` plus one chunk.
    """

    @staticmethod
    def forward(ctx, q: Tensor, a: Tensor, chunk: int) -> Tensor:
        B, K, _ = q.shape
        flat = q.reshape(B * K, -1)
        out = q.new_empty(B, a.shape[0])
        for s in range(0, a.shape[0], chunk):
            scores = (flat @ a[s:s + chunk].T).view(B, K, -1)
            # logsumexp in place (torch.logsumexp's guards against infinite maxima cost as
            # much again; every maximum here is finite: max_k log c_ik >= -log K).
            top = scores.amax(dim=1)
            out[:, s:s + chunk] = scores.sub_(top[:, None]).exp_().sum(dim=1).log_().add_(top)
        ctx.save_for_backward(q, a, out)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        q, a, out = ctx.saved_tensors
        B, K, _ = q.shape
        flat = q.reshape(B * K, -1)
        grad_q = torch.zeros_like(flat)
        grad_a = torch.empty_like(a)
        for s in range(0, a.shape[0], ctx.chunk):
            e = min(s + ctx.chunk, a.shape[0])
            g = (flat @ a[s:e].T).view(B, K, -1)
            g.sub_(out[:, None, s:e]).exp_().mul_(grad[:, None, s:e])
            g = g.view(B * K, -1)
            grad_q.addmm_(g, a[s:e])
            torch.mm(g.T, flat, out=grad_a[s:e])
        return grad_q.view_as(q), grad_a, None


@dataclasses.dataclass
class MacridVAEConfig(ModelConfig):
    """Hyperparameters of :class:`MacridVAE`; the defaults are the paper's except ``init``
    (``configs/macridvae-paper.yaml`` holds the paper's settings exactly).

    Args:
        num_factors (int): number of macro factors (prototypes) :math:`K`. (default: ``7``)
        dim (int): dimension :math:`d` of each factor's user vector, of the item table and of
            the prototypes. (default: ``100``)
        tau (float): temperature :math:`\\tau` of the cosine-similarity softmaxes (the
            decoder's, and the assignment's unless ``assign_tau`` is set).
            (default: ``0.1``)
        beta (float): final weight :math:`\\beta` of the KL term. (default: ``0.2``)
        std0 (float): standard deviation :math:`\\sigma_0` of the Gaussian prior.
            (default: ``0.075``)
        dropout (float): dropout rate on the normalised input rows (the reference's
            ``1 - keep``). (default: ``0.5``)
        batch_size (int): users per training batch. (default: ``500``)
        nogb (bool): use the plain softmax for the item-factor assignment in training instead
            of a Gumbel-softmax sample. (default: ``False``)
        assign_tau (float, optional): temperature :math:`\\tau_c` of the item-factor assignment
            softmax only (``None``: :math:`\\tau`, the paper's single temperature).
            (default: ``None``)
        reg (float): L2 penalty :math:`\\lambda` on the encoder weights, the item table and the
            prototypes (not the biases), added as :math:`\\lambda \\sum \\|W\\|_2^2`.
            (default: ``0.0``)
        init (str): starting point of the item table and the prototypes: ``"spectral"``
            (from the training data, see :meth:`MacridVAE.init_from_data`) or ``"xavier"``
            (Xavier-uniform, the paper's). (default: ``"spectral"``)
        decoder (str): training likelihood: ``"full"`` (the softmax over all items) or
            ``"sampled"`` (a sampled softmax, see :meth:`MacridVAE.sampled_recon`; scoring
            always uses the full softmax). (default: ``"full"``)
        num_negatives (int): negatives :math:`S` shared by a batch of the sampled decoder.
            (default: ``1000``)
        sampler (str): proposal :math:`Q` of the sampled decoder's negatives:
            ``"popularity"`` (training counts plus one) or ``"uniform"``.
            (default: ``"popularity"``)
        anchor (float): weight :math:`\\gamma` of the term that keeps each item's assignment
            on the cluster the spectral start put it in (see :class:`MacridVAE`, **Loss**);
            needs ``init="spectral"``. (default: ``0.0``)
    """

    num_factors: int = 7
    dim: int = 100
    tau: float = 0.1
    beta: float = 0.2
    std0: float = 0.075
    dropout: float = 0.5
    batch_size: int = 500
    nogb: bool = False
    reg: float = 0.0
    assign_tau: float | None = None
    init: str = "spectral"
    decoder: str = "full"
    num_negatives: int = 1000
    sampler: str = "popularity"
    anchor: float = 0.0

    def validate(self) -> None:
        self.check("num_factors", self.num_factors, self.num_factors >= 1, "an integer >= 1")
        self.check("dim", self.dim, self.dim >= 1, "an integer >= 1")
        self.check("num_factors", self.num_factors, self.num_factors * self.dim <= MAX_WIDTH,
                   f"num_factors * dim <= {MAX_WIDTH} (the encoder and decoder hold "
                   f"batch x num_factors x dim and batch x num_factors x items values)")
        self.check("tau", self.tau, self.tau > 0, "a float > 0")
        self.check("beta", self.beta, self.beta >= 0, "a float >= 0")
        self.check("std0", self.std0, self.std0 > 0, "a float > 0")
        self.check("dropout", self.dropout, 0 <= self.dropout < 1, "a float in [0, 1)")
        self.check("batch_size", self.batch_size, self.batch_size >= 1, "an integer >= 1")
        self.check("reg", self.reg, self.reg >= 0, "a float >= 0")
        self.check("assign_tau", self.assign_tau,
                   self.assign_tau is None or self.assign_tau > 0, "None or a float > 0")
        self.check("init", self.init, self.init in INITS, " or ".join(map(repr, INITS)))
        self.check("decoder", self.decoder, self.decoder in DECODERS,
                   " or ".join(map(repr, DECODERS)))
        self.check("num_negatives", self.num_negatives, self.num_negatives >= 1,
                   "an integer >= 1")
        self.check("sampler", self.sampler, self.sampler in SAMPLERS,
                   " or ".join(map(repr, SAMPLERS)))
        self.check("anchor", self.anchor, self.anchor >= 0, "a float >= 0")
        self.check("anchor", self.anchor, self.anchor == 0 or self.init == "spectral",
                   "0 unless init='spectral' (it keeps items on the spectral start's clusters)")


class MacridVAE(FactorRecommender):
    r"""The MacridVAE model from the `"Learning Disentangled Representations for
    Recommendation" <https://arxiv.org/abs/1910.14238>`_ paper (Ma et al., NeurIPS 2019),
    following the authors' reference implementation.

    **Macro disentanglement.** Item :math:`i` (vector :math:`\mathbf{h}_i`) is softly assigned
    to the :math:`K` prototypes :math:`\mathbf{m}_k` by

    .. math::
        c_{ik} = \operatorname{softmax}_k\big(\cos(\mathbf{h}_i, \mathbf{m}_k) / \tau_c\big),

    replaced in training by a Gumbel-softmax sample at temperature 1 (unless ``nogb``). The
    paper uses one temperature, :math:`\tau_c = \tau`; ``assign_tau`` sets :math:`\tau_c`
    alone (the decoder below keeps :math:`\tau`).

    **Encoder.** For each factor the user's row :math:`\mathbf{x}_u` is masked by the
    assignment, normalised and dropped out (independently per factor), then passed through
    :math:`f` (a context-embedding table of shape :math:`M \times d` plus bias, tanh, and a
    :math:`d \to 2d` linear layer) shared over factors:

    .. math::
        (\mathbf{a}_u^{(k)}, \mathbf{b}_u^{(k)}) =
            f\Big(\operatorname{dropout}\big(\mathbf{x}_u^{(k)} / \|\mathbf{x}_u^{(k)}\|_2\big)
            \Big), \qquad x_{ui}^{(k)} = x_{ui}\, c_{ik},

    .. math::
        \boldsymbol{\mu}_u^{(k)} = \mathbf{a}_u^{(k)} / \|\mathbf{a}_u^{(k)}\|_2, \qquad
        \boldsymbol{\sigma}_u^{(k)} = \sigma_0 \exp(-\mathbf{b}_u^{(k)} / 2), \qquad
        \mathbf{z}_u^{(k)} = \boldsymbol{\mu}_u^{(k)} + \boldsymbol{\epsilon} \odot
            \boldsymbol{\sigma}_u^{(k)}

    (:math:`\mathbf{z} = \boldsymbol{\mu}` outside training).

    **Micro disentanglement.** A :math:`\beta`-weighted KL term against
    :math:`\mathcal{N}(\mathbf{0}, \sigma_0^2 \mathbf{I})`. Since :math:`\boldsymbol{\mu}`
    has unit norm, its part of the KL is constant and dropped; with
    :math:`\ell = -\mathbf{b} = \ln \sigma^2 - \ln \sigma_0^2`,

    .. math::
        \mathrm{KL} = \sum_k \frac{1}{B} \sum_u \sum_j \tfrac12
            \big(-\ell_{ukj} + e^{\ell_{ukj}} - 1\big).

    **Decoder.** A mixture over factors, softmax over all :math:`M` items:

    .. math::
        \log p(i \mid u) = \operatorname{log\,softmax}_i \Big( \operatorname{logsumexp}_k
            \big( \cos(\mathbf{z}_u^{(k)}, \mathbf{h}_i) / \tau + \log c_{ik} \big) \Big).

    **Loss** at update :math:`t` (0-based), with :math:`T` updates per epoch:

    .. math::
        \mathcal{L} = -\frac{1}{B} \sum_u \sum_i x_{ui} \log p(i \mid u)
            + \min\!\big(\beta, \tfrac{t}{5T}\big)\, \mathrm{KL}
            + \lambda \big(\|\mathbf{W}_{\mathrm{ctx}}\|^2 + \|\mathbf{W}_{\mathrm{out}}\|^2
            + \|\mathbf{H}\|^2 + \|\mathbf{M}\|^2\big)
            - \frac{\gamma}{M} \sum_i \log c_{i k_0(i)},

    where :math:`k_0(i)` is the cluster the spectral start puts item :math:`i` in and
    :math:`c_{ik}` the (noise-free) assignment: with ``anchor`` :math:`\gamma > 0` items keep
    their start's co-occurrence clusters, which training otherwise wears away.

    **Initialisation** (``init``). The paper starts the item table :math:`\mathbf{H}` and the
    prototypes :math:`\mathbf{M}` at random (``"xavier"``). From there the assignment
    recovers nothing on planted clusters (AMI ~0.0, although the item table learns them):
    the soft assignment of a random start gives every factor nearly the same input, so its
    gradient vanishes, and a sharp one freezes the random partition. The default
    (``"spectral"``, :meth:`init_from_data`) starts both from the training interactions:
    :math:`\mathbf{H}` from the truncated SVD of the degree-normalised user-item matrix,
    :math:`\mathbf{m}_k` from spherical k-means of the items on its first :math:`K`
    singular vectors (:func:`~disentangle.models.factor_init.spectral_factors`), so each
    factor starts on a co-occurrence cluster and training refines it.

    The encoder reads sparse rows: the first layer is a weighted sum of context-table rows
    over each user's nonzeros (one bag per user and factor), so no dense :math:`B \times M`
    input is ever built.

    Args:
        config (MacridVAEConfig): the hyperparameters (validated here).
        train_data (InteractionData): the training interactions; fixes the number of items
            :math:`M` and the number of updates per epoch used by the KL annealing.
    """

    name = "macridvae"
    Config = MacridVAEConfig
    supports_new_users = True
    # Runs saved before ``init`` existed started from Xavier (their weights load either way;
    # this keeps their config truthful and their loading free of the SVD).
    saved_run_defaults: ClassVar[dict] = {"init": "xavier", "anchor": 0.0}

    def __init__(self, config: MacridVAEConfig, train_data: InteractionData) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.num_items = int(train_data.num_items)
        self.num_factors = config.num_factors
        self.dim = d = config.dim
        M, K = self.num_items, self.num_factors

        self.items = torch.nn.Parameter(torch.empty(M, d))       # decoder item table H
        self.prototypes = torch.nn.Parameter(torch.empty(K, d))  # macro factors M
        self.context = torch.nn.Parameter(torch.empty(M, d))     # encoder layer 1 (table)
        self.context_bias = torch.nn.Parameter(torch.empty(d))
        self.head = torch.nn.Linear(d, 2 * d)                    # encoder layer 2: (a, b)
        self.updates_per_epoch = max(1, self.num_batches(train_data))
        counts = torch.as_tensor(train_data.item_popularity(), dtype=torch.float32) + 1
        proposal = counts if config.sampler == "popularity" else torch.ones(M)
        # Not saved: it follows from the training data and the config.
        self.register_buffer("proposal", proposal / proposal.sum(), persistent=False)
        self.reset_parameters()
        if config.init == "spectral":
            self.init_from_data(train_data)

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, item table and prototypes; truncated-normal biases with
        standard deviation 0.001 (cut at two standard deviations), as in the reference."""
        for w in (self.items, self.prototypes, self.context, self.head.weight):
            torch.nn.init.xavier_uniform_(w)
        for b in (self.context_bias, self.head.bias):
            torch.nn.init.trunc_normal_(b, std=1e-3, a=-2e-3, b=2e-3)

    @torch.no_grad()
    def init_from_data(self, train_data: InteractionData) -> None:
        r"""Item table and prototypes from the training interactions
        (:func:`~disentangle.models.factor_init.spectral_factors`, seeded from torch's
        global generator): :math:`\mathbf{H} \propto \mathbf{V}_r\mathbf{S}_r`, the
        item side of the truncated SVD of :math:`\mathbf{D}_U^{-1/2}\mathbf{X}
        \mathbf{D}_I^{-1/2}`, and :math:`\mathbf{m}_k` the normalised mean direction of the
        items k-means puts in cluster :math:`k`. Only directions matter to the model (every
        use is a cosine); the norms are the ones Xavier's init has in expectation,
        :math:`\|\mathbf{H}\|_F^2 = 2Md/(M+d)` and :math:`\|\mathbf{m}_k\|^2 = 2d/(K+d)`,
        so Adam's steps turn the vectors as fast as from the paper's start."""
        M, K, d = self.num_items, self.num_factors, self.dim
        seed = int(torch.randint(2**31 - 1, ()).item())
        start = spectral_factors(train_data.csr, d, K, seed)
        items = torch.as_tensor(start.items, dtype=self.items.dtype)
        self.items.copy_(items * math.sqrt(2 * M * d / (M + d)) / items.norm().clamp_min(1e-12))
        self.prototypes.copy_(torch.as_tensor(start.prototypes, dtype=self.prototypes.dtype)
                              * math.sqrt(2 * d / (K + d)))
        # Not saved: the same seeded start rebuilds it when a run is loaded.
        self.register_buffer("start_factor", torch.as_tensor(start.labels, dtype=torch.long),
                             persistent=False)

    @property
    def assign_tau(self) -> float:
        """Temperature :math:`\\tau_c` of the item-factor assignment (``config.tau`` unless
        ``config.assign_tau`` is set)."""
        c = self.config
        return c.tau if c.assign_tau is None else c.assign_tau

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_items={self.num_items}, "
                f"num_factors={self.num_factors}, dim={self.dim})")

    # -- the model ------------------------------------------------------------------------
    def factor_log_weights(self, sample: bool = False) -> Tensor:
        """``M x K`` log item-factor weights :math:`\\log c_{ik}`; a Gumbel-softmax sample at
        temperature 1 when ``sample`` (and not ``nogb``), else the softmax."""
        logits = (F.normalize(self.items, dim=-1) @ F.normalize(self.prototypes, dim=-1).T
                  / self.assign_tau)
        if sample and not self.config.nogb:
            # Clamping u keeps the Gumbel noise finite, hence log c finite (no -inf below).
            u = torch.rand_like(logits).clamp_min(torch.finfo(logits.dtype).tiny)
            logits = logits - torch.log(-torch.log(u))
        # Staying in log space keeps log c finite where c itself would underflow to 0.
        return logits.log_softmax(dim=-1)

    def encode(self, history: Tensor, log_c: Tensor, train: bool = False
               ) -> tuple[Tensor, Tensor]:
        """Posterior parameters: ``B x K x d`` unit-norm means :math:`\\mu` and ``B x K x d``
        log-variance offsets :math:`\\ell = \\ln\\sigma^2 - \\ln\\sigma_0^2`.

        Args:
            history (Tensor): sparse CSR/COO (or dense) ``B x M`` input rows.
            log_c (Tensor): ``M x K`` log item-factor weights.
            train (bool): apply dropout. (default: ``False``)
        """
        crow, cols, vals = csr_parts(history, self.items)
        B, K, E = crow.numel() - 1, self.num_factors, cols.numel()
        rows = torch.repeat_interleave(torch.arange(B, device=cols.device), crow.diff())
        x = vals[:, None] * log_c.exp()[cols]                   # E x K: x_ui * c_ik
        sq = x.new_zeros(B, K).index_add_(0, rows, x * x)
        # Same epsilon as tf.nn.l2_normalize; empty rows stay zero instead of NaN.
        x = x * sq.clamp_min(1e-12).rsqrt()[rows]
        x = F.dropout(x, self.config.dropout, training=train)  # one mask per (item, factor)
        # One bag per (factor, user): the sum of context rows weighted by the sparse input.
        offsets = (crow[:-1][None, :] + E * torch.arange(K, device=cols.device)[:, None])
        h = F.embedding_bag(cols.repeat(K), self.context, offsets.reshape(-1), mode="sum",
                            per_sample_weights=x.T.reshape(-1))
        h = self.head(torch.tanh(h + self.context_bias))
        h = h.view(K, B, 2 * self.dim).transpose(0, 1)
        return F.normalize(h[..., :self.dim], dim=-1), -h[..., self.dim:]

    def decode(self, z: Tensor, log_c: Tensor | None = None) -> Tensor:
        """``B x M`` log-probabilities :math:`\\log p(i \\mid u)` from ``B x K x d`` factor
        vectors ``z`` and ``M x K`` log item-factor weights ``log_c`` (default: the eval-mode
        softmax, so ``model.decode`` alone maps latents to scores, e.g. for traversals).

        The mixture is one :class:`MixtureLogits` over chunks of items, with the weights
        folded into the product: :math:`\\mathbf{q}_{uk} = (\\hat{\\mathbf{z}}_u^{(k)} / \\tau,
        \\mathbf{e}_k)` and :math:`\\mathbf{a}_i = (\\hat{\\mathbf{h}}_i, \\log c_{i\\cdot})`
        give :math:`\\mathbf{q}_{uk} \\cdot \\mathbf{a}_i = \\cos(\\mathbf{z}_u^{(k)},
        \\mathbf{h}_i)/\\tau + \\log c_{ik}`, never exponentiating a :math:`1/\\tau`-scaled
        value outside the logsumexp."""
        if log_c is None:
            log_c = self.factor_log_weights()
        return self.mixture_logits(z, log_c).log_softmax(dim=-1)

    def mixture_logits(self, z: Tensor, log_c: Tensor, items: Tensor | None = None) -> Tensor:
        """``B x N`` mixture logits :math:`\\log \\sum_k c_{ik} \\exp(\\cos(\\mathbf{z}_u^{(k)},
        \\mathbf{h}_i)/\\tau)` of the items ``items`` (default: all ``M``)."""
        B, K, _ = z.shape
        onehot = torch.eye(K, dtype=z.dtype, device=z.device).expand(B, K, K)
        q = torch.cat([F.normalize(z, dim=-1) / self.config.tau, onehot], dim=-1)
        a = torch.cat([F.normalize(self.items, dim=-1), log_c.to(z.dtype)], dim=-1)
        if items is not None:
            a = a[items]
        chunk = max(1, DECODER_CHUNK_SCORES // (B * K))
        return MixtureLogits.apply(q, a, chunk)

    def sample_negatives(self) -> Tensor:
        """:math:`S` item indices drawn with replacement from the proposal :math:`Q`."""
        return torch.multinomial(self.proposal, self.config.num_negatives, replacement=True)

    def sampled_recon(self, z: Tensor, log_c: Tensor, batch: Tensor,
                      negatives: Tensor) -> Tensor:
        r"""Sampled-softmax estimate of :math:`-\frac1B \sum_u \sum_i x_{ui}
        \log p(i \mid u)` at cost :math:`B \times K \times (P + S)`.

        With :math:`o_{ui}` the mixture logits, :math:`\mathcal{P}` the items of the batch's
        rows (all kept) and :math:`j_1..j_S \sim Q` the shared negatives (those in
        :math:`\mathcal{P}` dropped), the normaliser is estimated with the log-Q correction,

        .. math::
            \hat{Z}_u = \sum_{i \in \mathcal{P}} e^{o_{ui}} + \sum_{s:\, j_s \notin
                \mathcal{P}} \frac{e^{o_{u j_s}}}{S\, Q(j_s)},

        an unbiased estimate of :math:`Z_u = \sum_i e^{o_{ui}}`, and
        :math:`\log p(i \mid u) \approx o_{ui} - \log \hat{Z}_u`.
        """
        crow, cols, vals = csr_parts(batch, self.items)
        positives, where = torch.unique(cols, return_inverse=True)
        negatives = negatives.to(cols.device)
        items = torch.cat([positives, negatives])
        logits = self.mixture_logits(z, log_c, items)
        hit = torch.isin(negatives, positives)
        shift = torch.log(self.config.num_negatives * self.proposal[negatives].to(z.dtype))
        shift = torch.cat([shift.new_zeros(positives.numel()),
                           shift.masked_fill(hit, torch.inf)])
        log_z = torch.logsumexp(logits - shift, dim=1)
        rows = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=cols.device),
                                       crow.diff())
        return -((vals * logits[rows, where]).sum() - (vals.new_zeros(len(log_z)).index_add_(
            0, rows, vals) * log_z).sum()) / logits.shape[0]

    def forward(self, history: Tensor) -> tuple[Tensor, Tensor]:
        """``B x M`` log-probabilities and the KL term; stochastic in training mode (Gumbel
        sample, dropout, reparameterised noise), deterministic in eval mode."""
        z, log_c, kl = self.latents(history)
        return self.decode(z, log_c), kl

    def latents(self, history: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Factor vectors ``z``, log item-factor weights and the KL term of ``history``."""
        train = self.training
        log_c = self.factor_log_weights(sample=train)
        mu, lnvar = self.encode(history, log_c, train)
        kl = (0.5 * (-lnvar + lnvar.exp() - 1)).sum(-1).mean(0).sum()
        z = mu
        if train:
            z = mu + torch.randn_like(mu) * self.config.std0 * torch.exp(0.5 * lnvar)
        return z, log_c, kl

    # -- training -------------------------------------------------------------------------
    def batches(self, train, generator: torch.Generator) -> Iterator[Tensor]:
        """One epoch: the users with at least one interaction, shuffled with ``generator``,
        in sparse CSR ``batch_size x M`` float rows."""
        self.updates_per_epoch = max(1, self.num_batches(train))
        yield from user_row_batches(train, self.config.batch_size, generator)

    def num_batches(self, train) -> int:
        return math.ceil(int((np.diff(train.csr.indptr) > 0).sum()) / self.config.batch_size)

    def anneal(self, step: int) -> float:
        """KL weight after ``step`` updates: reaches ``beta`` after five epochs' worth of
        updates at slope 1 (i.e. after one epoch for ``beta = 0.2``), as in the reference."""
        return min(self.config.beta, step / (5 * self.updates_per_epoch))

    def loss(self, batch: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        """Negative annealed ELBO (plus the L2 penalty) of the sparse rows ``batch`` at
        0-based update ``step``; with ``decoder="sampled"`` in training mode, the
        likelihood is :meth:`sampled_recon`'s estimate."""
        if self.training and self.config.decoder == "sampled":
            z, log_c, kl = self.latents(batch)
            return self._total(self.sampled_recon(z, log_c, batch, self.sample_negatives()),
                               kl, step)
        logp, kl = self(batch)
        crow, cols, vals = csr_parts(batch, self.items)
        # Multinomial likelihood -sum_i x_ui log p(i|u), on the batch's rows made dense
        # (B x M, the size of logp): a product whose backward is a product, not the scatter
        # of an indexed read.
        x = torch.sparse_csr_tensor(crow, cols, vals, logp.shape, check_invariants=False).to_dense()
        recon = -(x * logp).sum() / logp.shape[0]
        return self._total(recon, kl, step)

    def _total(self, recon: Tensor, kl: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        anneal = self.anneal(step)
        loss = recon + anneal * kl
        parts = {"recon": recon.item(), "kl": kl.item(), "anneal": anneal}
        if self.config.anchor > 0:
            anchor = F.nll_loss(self.factor_log_weights(), self.start_factor)
            loss = loss + self.config.anchor * anchor
            parts["anchor"] = anchor.item()
        if self.config.reg > 0:
            loss = loss + self.config.reg * sum(
                w.square().sum()
                for w in (self.context, self.head.weight, self.items, self.prototypes))
        return loss, parts

    # -- ranking --------------------------------------------------------------------------
    def score(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x M`` eval-mode log-probabilities :math:`\\log p(i \\mid u)` (``users`` is
        ignored: the model reads ``history``)."""
        log_c = self.factor_log_weights()
        mu, _ = self.encode(history, log_c)
        return self.decode(mu, log_c)

    # -- K-factor contract (all deterministic, eval-mode) ----------------------------------
    def item_factor_weights(self) -> Tensor:
        """``M x K`` :math:`c_{ik}`: softmax over factors of
        :math:`\\cos(\\mathbf{h}_i, \\mathbf{m}_k)/\\tau_c`."""
        return self.factor_log_weights().exp()

    def user_factor_weights(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x K`` share of each factor in the user's history,
        :math:`\\sum_i x_{ui} c_{ik} / \\sum_i x_{ui}` (uniform for an empty history)."""
        crow, cols, vals = csr_parts(history, self.items)
        B = crow.numel() - 1
        rows = torch.repeat_interleave(torch.arange(B, device=cols.device), crow.diff())
        mass = vals.new_zeros(B, self.num_factors).index_add_(
            0, rows, vals[:, None] * self.item_factor_weights()[cols])
        total = mass.sum(-1, keepdim=True)
        uniform = torch.full_like(mass, 1.0 / self.num_factors)
        return torch.where(total > 0, mass / total.clamp_min(1e-30), uniform)

    def factor_embeddings(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x K x d`` posterior means :math:`\\boldsymbol{\\mu}_u^{(k)}` (unit norm)."""
        return self.encode(history, self.factor_log_weights())[0]

    def item_factor_embeddings(self) -> Tensor:
        """``M x K x d`` :math:`c_{ik}\\, \\mathbf{h}_i / \\|\\mathbf{h}_i\\|`: the item's unit
        vector (the decoder uses one vector for all factors) scaled by its weight in each
        factor, so an item shows up mainly in the factors it belongs to."""
        return self.item_factor_weights()[:, :, None] * F.normalize(self.items, dim=-1)[:, None]

    def explain(self, users: Tensor, history: Tensor, items: Tensor) -> Tensor:
        """``B x N x K`` posterior share of each factor in :math:`p(i \\mid u)` for the
        ``B x N`` item indices ``items``:
        :math:`\\operatorname{softmax}_k(\\cos(\\boldsymbol{\\mu}_u^{(k)}, \\mathbf{h}_i)/\\tau
        + \\log c_{ik})`."""
        log_c = self.factor_log_weights()
        mu, _ = self.encode(history, log_c)
        items = items.to(mu.device)
        vecs = F.normalize(self.items, dim=-1)[items]                   # B x N x d
        cos = torch.einsum("bkd,bnd->bnk", mu, vecs)
        return (cos / self.config.tau + log_c[items]).softmax(dim=-1)
