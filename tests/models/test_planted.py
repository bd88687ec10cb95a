"""The planted benchmark, recovered by both models (issue 4).

Tiny data with K = 4 planted item clusters (:func:`disentangle.data.synthetic.planted`,
300 users, 200 items, purity 0.95), split, trained briefly with the
:class:`~disentangle.train.trainer.Trainer`, then the factor contract is scored: the AMI
between each item's top factor (``argmax item_factor_weights()``) and its planted cluster,
against two controls: the same model untrained (random initialisation) and a random
assignment (AMI of random assignments of 200 items to 4 factors: sd ~0.008, 99th
percentile ~0.023).

What the models reach, honestly (these settings, seeds 0-9; the seed fixes the data, the
split and the initialisation):

* MacridVAE at its defaults, only ``num_factors`` set (``init=spectral``: item table and
  prototypes from a spectral embedding of the training matrix and spherical k-means, see
  :mod:`disentangle.models.factor_init`), 50 epochs: AMI 0.964, 1.0, 1.0 for seeds 0-2
  (the untrained spectral start alone is already close to that). Its control is the paper's random start
  (``init=xavier``), untrained. The paper's model (``init=xavier``, ``dim=100, tau=0.1``,
  Gumbel) stays at 0.0-0.1 whatever the epochs or the learning rate, although its item table
  does learn the clusters (k-means on it: AMI ~0.9) and prototypes initialised *on* the
  clusters stay there (AMI 1.0 after 20 epochs on the 3000 x 1000 benchmark data, batch
  100): from a random start the soft assignment feeds every factor nearly the same input, so
  the gradient on the assignment vanishes, while a sharp one (``assign_tau`` 0.02-0.05)
  freezes the random initial partition. Before the spectral start, the best found from a
  random start was AMI 0.34-0.83 (mean 0.48) with ``dim=4``, ``nogb``, ``tau=0.2`` and a
  soft assignment (``assign_tau=2``). The planted grid of ``benchmarks/factors.py`` (K 3, 5,
  8; purity 0.7, 0.9; skew 0, 1.2; 3 seeds) measures the defaults more widely
  (``docs/results/factors-planted-macridvae.json``).
* DisenGCN at its defaults (spectral start, routing tau 0.05, ``routing_norm=node``,
  ``layer_combine=mean``), 40
  epochs: AMI 0.705 / 0.835 / 0.757 for seeds 0-2; its control is the papers' random start
  (``init=normal``), untrained. On this data (even-handed users, concentration 0.5) the
  spectral start is right (AMI 0.91-0.98) and training wears part of it away; ``last``
  with tau 0.02, which holds planted clusters on peaky users
  (``tests/models/test_disengcn_planted.py``), reaches only 0.28-0.44 here. Before the
  spectral start, the defaults stayed at ~0.02 with the routing near uniform (mean top
  weight ~0.27, uniform is 0.25).

Each seed must beat its controls and a floor, and the mean of three seeds a level; the
thresholds sit under what the seeds reach.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from disentangle.config import resolve
from disentangle.data.splits import heldout_split, ratio_split
from disentangle.data.synthetic import planted
from disentangle.metrics.factors import macro_alignment
from disentangle.models import MODELS
from disentangle.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

K = 4
SEEDS = (0, 1, 2)

# MacridVAE at its defaults; DisenGCN with settings found by a sweep (module docstring).
# ``control``: the overrides of the untrained control model (the paper's random start for
# MacridVAE, whose default start already holds the clusters).
CASES = {
    "macridvae": {
        "split": lambda data, seed: heldout_split(data, seed=seed, heldout_users=0.1),
        "overrides": ["train.epochs=50"],
        "control": ["model.init=xavier"],
        "min_each": 0.8,
        "min_mean": 0.9,  # seeds 0-2 reach 0.988
    },
    "disengcn": {
        "split": lambda data, seed: ratio_split(data, seed=seed),
        "overrides": ["train.epochs=40"],
        "control": ["model.init=normal"],
        "min_each": 0.6,
        "min_mean": 0.7,  # seeds 0-2 reach 0.705 / 0.835 / 0.757
    },
}


def planted_data(seed: int):
    return planted(300, 200, K, interactions_per_user=50, purity=0.95, concentration=0.5,
                   seed=seed)


def ami(weights, data) -> float:
    return macro_alignment(weights, data.item_categories)["ami"]


def item_ami(model, data) -> float:
    model.eval()
    with torch.no_grad():
        return ami(model.item_factor_weights(), data)


def train(name: str, seed: int):
    """(trained AMI, untrained control AMI, random-assignment AMI, seconds) for one seed."""
    case = CASES[name]
    split = case["split"](planted_data(seed), seed)
    overrides = [f"model.num_factors={K}", f"train.seed={seed}", *case["overrides"]]
    cfg = resolve(name, overrides=overrides)
    # Evaluate once, after the last epoch: the factors measured are the final ones.
    cfg.train.eval_every = cfg.train.epochs
    torch.manual_seed(seed)
    control = MODELS[name](resolve(name, overrides=[*overrides, *case["control"]]).model,
                           split.train)
    untrained = item_ami(control, split.train)
    torch.manual_seed(seed)
    model = MODELS[name](cfg.model, split.train)
    rng = np.random.default_rng(seed)
    random = ami(rng.dirichlet(np.ones(K), size=split.train.num_items), split.train)
    start = time.perf_counter()
    Trainer(model, split, cfg.train, run_dir=None, progress=False).fit()
    seconds = time.perf_counter() - start
    return item_ami(model, split.train), untrained, random, seconds


@pytest.mark.parametrize("name", sorted(CASES))
def test_planted_factors_are_recovered_above_the_controls(name):
    case = CASES[name]
    runs = [train(name, seed) for seed in SEEDS]
    trained = [r[0] for r in runs]
    controls = [max(r[1], r[2]) for r in runs]
    report = (f"{name}: trained AMI {np.round(trained, 3).tolist()}, controls (max of "
              f"untrained, random) {np.round(controls, 3).tolist()}, "
              f"{sum(r[3] for r in runs):.1f}s")
    print(report)
    # the controls are at chance
    assert max(abs(c) for r in runs for c in r[1:3]) < 0.05, report
    # every seed above its controls, and the mean at the honest level
    for t, c in zip(trained, controls):
        assert t >= case["min_each"] and t > c, report
    assert np.mean(trained) >= case["min_mean"], report
