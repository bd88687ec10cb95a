"""Ranking-only baselines: the :class:`~disentangle.models.recommender.Recommender` contract
without factors."""
from .bpr import BPR, BPRConfig
from .ease import EASE, EASEConfig
from .itemknn import ItemKNN, ItemKNNConfig
from .lightgcn import LightGCN, LightGCNConfig
from .multdae import MultDAE, MultDAEConfig
from .multvae import MultVAE, MultVAEConfig

__all__ = [
    "BPR",
    "EASE",
    "BPRConfig",
    "EASEConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "LightGCN",
    "LightGCNConfig",
    "MultDAE",
    "MultDAEConfig",
    "MultVAE",
    "MultVAEConfig",
]
