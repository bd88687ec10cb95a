"""Recommenders: the K-factor models, the ranking-only baselines, and the registry the CLI
reads."""
from .base import FactorRecommender, ModelConfig
from .baselines import BPR, EASE, ItemKNN, LightGCN, MultDAE, MultVAE
from .disengcn import DisenGCN, DisenGCNConfig
from .macridvae import MacridVAE, MacridVAEConfig
from .recommender import ClosedFormRecommender, Recommender

#: Model classes by the name ``--model`` takes.
MODELS: dict[str, type[Recommender]] = {m.name: m for m in (
    MacridVAE, DisenGCN, EASE, ItemKNN, BPR, MultVAE, MultDAE, LightGCN)}

__all__ = [
    "MODELS",
    "ClosedFormRecommender",
    "DisenGCN",
    "DisenGCNConfig",
    "FactorRecommender",
    "MacridVAE",
    "MacridVAEConfig",
    "ModelConfig",
    "Recommender",
]
