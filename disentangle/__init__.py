"""disentangle: disentangled representations for recommendation (MacridVAE, DisenGCN)."""
__version__ = "0.1.0"
