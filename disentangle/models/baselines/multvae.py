"""Mult-VAE: a variational autoencoder with a multinomial likelihood over all items."""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from disentangle.models.baselines.multdae import MultDAE, MultDAEConfig


@dataclasses.dataclass
class MultVAEConfig(MultDAEConfig):
    """Hyperparameters of :class:`MultVAE`; the defaults are Liang et al.'s.

    Args:
        dims (list[int]): encoder layer sizes after the input, the last one the latent size
            :math:`d` (the decoder mirrors them): the paper's
            :math:`[M \\to 600 \\to 200 \\to 600 \\to M]`. (default: ``[600, 200]``)
        dropout (float): dropout rate on the normalised input rows. (default: ``0.5``)
        batch_size (int): users per training batch. (default: ``500``)
        reg (float): L2 weight :math:`\\lambda` on the weight matrices (the authors' VAE uses
            none). (default: ``0.0``)
        beta (float): final weight :math:`\\beta` of the KL term (``anneal_cap``).
            (default: ``0.2``)
        anneal_steps (int): updates over which the KL weight grows linearly from 0 to 1,
            capped at ``beta`` (``total_anneal_steps``). (default: ``200000``)
    """

    reg: float = 0.0
    beta: float = 0.2
    anneal_steps: int = 200_000

    def validate(self) -> None:
        super().validate()
        self.check("beta", self.beta, self.beta >= 0, "a float >= 0")
        self.check("anneal_steps", self.anneal_steps, self.anneal_steps >= 1, "an integer >= 1")


class MultVAE(MultDAE):
    r"""The Mult-VAE\ :sup:`PR` model from the `"Variational Autoencoders for Collaborative
    Filtering" <https://arxiv.org/abs/1802.05814>`_ paper (Liang et al., WWW 2018), following
    the authors' code.

    The encoder of :class:`~disentangle.models.baselines.multdae.MultDAE` (tanh after every
    hidden layer, dropout on the normalised input, sparse first layer) outputs a Gaussian
    posterior :math:`q(\mathbf{z}_u \mid \mathbf{x}_u) = \mathcal{N}(\boldsymbol{\mu}_u,
    \operatorname{diag}\boldsymbol{\sigma}_u^2)`; training decodes a reparameterised sample
    :math:`\mathbf{z}_u = \boldsymbol{\mu}_u + \boldsymbol{\epsilon} \odot
    \boldsymbol{\sigma}_u`, scoring decodes :math:`\boldsymbol{\mu}_u`. The loss at update
    :math:`t` (0-based) is the negative ELBO with the KL term annealed to :math:`\beta` over
    :math:`T` updates (``anneal_steps``):

    .. math::
        \mathcal{L} = -\frac{1}{|\mathcal{B}|} \sum_{u \in \mathcal{B}} \sum_i x_{ui}
            \log \pi_i(\mathbf{z}_u)
            + \min\!\big(\beta, \tfrac{t}{T}\big)\, \frac{1}{|\mathcal{B}|}
            \sum_{u \in \mathcal{B}} \sum_j \tfrac12 \big(-\log\sigma_{uj}^2 + \sigma_{uj}^2
            + \mu_{uj}^2 - 1\big) + \lambda \sum_l \|\mathbf{W}_l\|_2^2.

    Args:
        config (MultVAEConfig): the hyperparameters (validated here).
        train_data (InteractionData): the training interactions; fixes the number of items.
    """

    name = "multvae"
    Config = MultVAEConfig
    variational = True

    def anneal(self, step: int) -> float:
        """KL weight after ``step`` updates: :math:`\\min(\\beta, t / T)`."""
        return min(self.config.beta, step / self.config.anneal_steps)

    def loss(self, batch: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        """Negative annealed ELBO (plus the L2 penalty) of the sparse rows ``batch`` at
        0-based update ``step``; the sample is drawn in training mode only."""
        h = self.encode(batch, self.training)
        mu, logvar = h[:, :self.latent_dim], h[:, self.latent_dim:]
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        nll = self._nll(self.decode(z), batch)
        kl = (0.5 * (-logvar + logvar.exp() + mu.square() - 1)).sum(-1).mean()
        anneal = self.anneal(step)
        loss = nll + anneal * kl
        if self.config.reg > 0:
            loss = loss + self.config.reg * self._penalty()
        return loss, {"recon": nll.item(), "kl": kl.item(), "anneal": anneal}
