"""Recommenders implementing the K-factor contract, and the registry the CLI reads."""
from .base import FactorRecommender, ModelConfig
from .disengcn import DisenGCN, DisenGCNConfig
from .macridvae import MacridVAE, MacridVAEConfig

#: Model classes by the name ``--model`` takes.
MODELS: dict[str, type[FactorRecommender]] = {m.name: m for m in (MacridVAE, DisenGCN)}

__all__ = [
    "MODELS",
    "DisenGCN",
    "DisenGCNConfig",
    "FactorRecommender",
    "MacridVAE",
    "MacridVAEConfig",
    "ModelConfig",
]
