"""Shared fixtures. Real-data tests use ``../shared/data`` beside the repository (or
``$DISENTANGLE_DATA``) and skip cleanly when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("DISENTANGLE_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder; skips the calling test when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def shared():
    """``shared("ml-100k")``: a shared data path, or skip the test."""
    return shared_path


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: on tiny graphs a second thread only adds start-up
    waits to every sparse kernel."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one; "
                                       "benchmarks/gpu_check.sh runs them with -m cuda)")


def pytest_collection_modifyitems(config, items):
    """Skip the ``cuda``-marked tests where torch sees no CUDA device."""
    if not any("cuda" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
