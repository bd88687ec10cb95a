"""The configs shipped with disentangle (installed as ``disentangle_configs``): each model's
defaults spelled out, the papers' exact settings, and the search spaces of ``disentangle
tune`` under ``search/``. Data files only; nothing here is imported for its code."""
