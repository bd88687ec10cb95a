"""Data layer: the interaction graph, dataset sources and split protocols."""
from .interactions import InteractionData
from .sources import DATASETS, LoadOptions, Source, available, load_dataset
from .splits import EvalSet, Split, load_split_dir
from .temporal import PROTOCOLS, make_split

__all__ = [
    "DATASETS",
    "PROTOCOLS",
    "EvalSet",
    "InteractionData",
    "LoadOptions",
    "Source",
    "Split",
    "available",
    "load_dataset",
    "load_split_dir",
    "make_split",
]
