"""The `disentangle` command-line application (installed as `disentangle_cli`)."""
