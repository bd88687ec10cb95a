"""Graph layers."""
from .disen_conv import DisenConv

__all__ = ["DisenConv"]
