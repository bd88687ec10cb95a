"""Mult-DAE: a denoising autoencoder with a multinomial likelihood over all items."""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from disentangle.data import InteractionData
from disentangle.models.base import ModelConfig
from disentangle.models.recommender import Recommender, csr_parts, user_row_batches


@dataclasses.dataclass
class MultDAEConfig(ModelConfig):
    """Hyperparameters of :class:`MultDAE`; the defaults are Liang et al.'s.

    Args:
        dims (list[int]): encoder layer sizes after the input, the last one the latent size
            (the decoder mirrors them). ``[600, 200]`` is the paper's
            :math:`[M \\to 600 \\to 200 \\to 600 \\to M]`; the authors' notebook trains the DAE
            as ``[200]``. (default: ``[600, 200]``)
        dropout (float): dropout rate on the normalised input rows. (default: ``0.5``)
        batch_size (int): users per training batch. (default: ``500``)
        reg (float): L2 weight :math:`\\lambda` on the weight matrices (not the biases), added
            as :math:`\\lambda \\sum \\|\\mathbf{W}\\|_2^2`; the notebook's ``0.01 /
            batch_size``. (default: ``2e-5``)
    """

    dims: list[int] = dataclasses.field(default_factory=lambda: [600, 200])
    dropout: float = 0.5
    batch_size: int = 500
    reg: float = 2e-5

    def validate(self) -> None:
        self.check("dims", self.dims, bool(self.dims) and min(self.dims) >= 1,
                   "a non-empty list of integers >= 1")
        self.check("dropout", self.dropout, 0 <= self.dropout < 1, "a float in [0, 1)")
        self.check("batch_size", self.batch_size, self.batch_size >= 1, "an integer >= 1")
        self.check("reg", self.reg, self.reg >= 0, "a float >= 0")


class MultDAE(Recommender):
    r"""The Mult-DAE model from the `"Variational Autoencoders for Collaborative Filtering"
    <https://arxiv.org/abs/1802.05814>`_ paper (Liang et al., WWW 2018), following the
    authors' code.

    A user's binary row :math:`\mathbf{x}_u` is normalised, dropped out and encoded by an MLP
    :math:`g` with tanh after every layer; the decoder :math:`f` mirrors it, with tanh
    after every layer but the last:

    .. math::
        \mathbf{z}_u = g\Big(\operatorname{dropout}\big(\mathbf{x}_u / \|\mathbf{x}_u\|_2\big)
            \Big), \qquad
        \boldsymbol{\pi}(\mathbf{z}_u) = \operatorname{softmax}\big(f(\mathbf{z}_u)\big).

    The loss of a batch :math:`\mathcal{B}` of users is the multinomial negative
    log-likelihood plus an L2 penalty on the weight matrices:

    .. math::
        \mathcal{L} = -\frac{1}{|\mathcal{B}|} \sum_{u \in \mathcal{B}} \sum_i x_{ui}
            \log \pi_i(\mathbf{z}_u) + \lambda \sum_l \|\mathbf{W}_l\|_2^2.

    Scores are the decoder's logits :math:`f(\mathbf{z}_u)` without dropout, so any history
    can be scored (new users included). The first encoder layer reads sparse rows: it is an
    :math:`M \times h` table whose rows are summed with the input's values as weights, so no
    dense :math:`B \times M` input is built (the output logits are dense).

    Args:
        config (MultDAEConfig): the hyperparameters (validated here).
        train_data (InteractionData): the training interactions; fixes the number of items.
    """

    name = "multdae"
    Config = MultDAEConfig
    supports_new_users = True
    #: Whether the encoder outputs a Gaussian posterior (Mult-VAE) or a point (Mult-DAE).
    variational = False

    def __init__(self, config: MultDAEConfig, train_data: InteractionData) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.num_items = m = int(train_data.num_items)
        dims = list(config.dims)
        self.latent_dim = dims[-1]
        # encoder widths: the hidden layers, then the latent (mean and log-variance for VAE)
        widths = [*dims[:-1], 2 * dims[-1] if self.variational else dims[-1]]
        self.input_table = torch.nn.Parameter(torch.empty(m, widths[0]))  # first layer, M x h
        self.input_bias = torch.nn.Parameter(torch.empty(widths[0]))
        self.encoder = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        back = [*dims[::-1], m]
        self.decoder = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in itertools.pairwise(back))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights; truncated-normal biases with standard deviation 0.001
        (cut at two standard deviations), as in the authors' code."""
        layers = [*self.encoder, *self.decoder]
        for w in (self.input_table, *(lin.weight for lin in layers)):
            torch.nn.init.xavier_uniform_(w)
        for b in (self.input_bias, *(lin.bias for lin in layers)):
            torch.nn.init.trunc_normal_(b, std=1e-3, a=-2e-3, b=2e-3)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_items={self.num_items}, "
                f"dims={list(self.config.dims)})")

    # -- the model ------------------------------------------------------------------------
    def encode(self, history: Tensor, train: bool = False) -> Tensor:
        """The last encoder layer's output for the sparse (or dense) ``B x M`` rows
        ``history``: ``B x d`` latents, or ``B x 2d`` (mean, log-variance) for Mult-VAE;
        dropout when ``train``."""
        crow, cols, vals = csr_parts(history, self.input_table)
        rows = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=cols.device),
                                       crow.diff())
        sq = vals.new_zeros(crow.numel() - 1).index_add_(0, rows, vals * vals)
        # Same epsilon as tf.nn.l2_normalize; an empty row stays zero instead of NaN.
        x = vals * sq.clamp_min(1e-12).rsqrt()[rows]
        x = F.dropout(x, self.config.dropout, training=train)
        h = F.embedding_bag(cols, self.input_table, crow[:-1], mode="sum",
                            per_sample_weights=x, include_last_offset=False) + self.input_bias
        for layer in self.encoder:
            h = layer(torch.tanh(h))
        # Mult-DAE's latent passes through tanh too; Mult-VAE's mean and log-variance do not.
        return h if self.variational else torch.tanh(h)

    def decode(self, z: Tensor) -> Tensor:
        """``B x M`` logits :math:`f(\\mathbf{z})`."""
        for i, layer in enumerate(self.decoder):
            z = layer(z if i == 0 else torch.tanh(z))
        return z

    def _penalty(self) -> Tensor:
        """:math:`\\sum_l \\|\\mathbf{W}_l\\|_2^2` over the weight matrices."""
        return sum(w.square().sum() for w in (
            self.input_table, *(lin.weight for lin in (*self.encoder, *self.decoder))))

    def _nll(self, logits: Tensor, batch: Tensor) -> Tensor:
        """Multinomial negative log-likelihood, read at the nonzeros of ``batch`` only."""
        crow, cols, vals = csr_parts(batch, self.input_table)
        rows = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=cols.device),
                                       crow.diff())
        logp = logits.log_softmax(dim=-1)
        return -(vals * logp[rows, cols]).sum() / logits.shape[0]

    # -- training -------------------------------------------------------------------------
    def batches(self, train: InteractionData, generator: torch.Generator) -> Iterator[Tensor]:
        """One epoch: the users with at least one interaction, shuffled with ``generator``,
        in sparse CSR ``batch_size x M`` float rows."""
        yield from user_row_batches(train, self.config.batch_size, generator)

    def num_batches(self, train: InteractionData) -> int:
        return math.ceil(int((np.diff(train.csr.indptr) > 0).sum()) / self.config.batch_size)

    def loss(self, batch: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        """Multinomial negative log-likelihood of the sparse rows ``batch`` plus the L2
        penalty."""
        nll = self._nll(self.decode(self.encode(batch, self.training)), batch)
        loss = nll + self.config.reg * self._penalty() if self.config.reg > 0 else nll
        return loss, {"recon": nll.item()}

    # -- ranking --------------------------------------------------------------------------
    def score(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x M`` logits :math:`f(\\mathbf{z}_u)` without dropout, from the posterior mean
        for Mult-VAE (``users`` is ignored)."""
        return self.decode(self.encode(history)[:, :self.latent_dim])
