"""DisenGCN's routing decides something at the defaults (issue 15): on planted data, with only
``num_factors`` set to the planted K, every interaction is routed mostly to one factor and
the items' top factors are the planted clusters.

The control is the papers' setting (``configs/disengcn-paper.yaml``: random N(0, 0.1)
start, routing temperature 1, ego and layer outputs averaged), which on the same data and
updates stays near uniform: the measurements before the new defaults were a mean top
routing weight of ~0.27-0.29 against 0.25 for uniform and a planted AMI of ~0.02
(``tests/models/test_planted.py``, ``docs/results.md``).
"""
from __future__ import annotations

import pytest
import torch

from disentangle.data.splits import ratio_split
from disentangle.data.synthetic import planted
from disentangle.metrics.factors import macro_alignment
from disentangle.models.disengcn import DisenGCN, DisenGCNConfig

pytestmark = pytest.mark.usefixtures("one_thread")

K = 3
PAPER = {"init": "normal", "tau": 1.0, "layer_combine": "mean"}


def train(epochs: int = 20, **options) -> tuple[float, float]:
    """(item AMI against the planted clusters, mean top routing weight) after ``epochs``
    epochs of Adam at the model's default learning rate, defaults otherwise."""
    data = planted(300, 150, K, interactions_per_user=30, purity=0.9, concentration=0.1,
                   seed=0)
    train_data = ratio_split(data, seed=0).train
    torch.manual_seed(0)
    model = DisenGCN(DisenGCNConfig(num_factors=K, **options), train_data)
    optimizer = torch.optim.Adam(model.parameters(), lr=DisenGCN.defaults["train"]["lr"])
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for step, batch in enumerate(model.batches(train_data, generator)):
            optimizer.zero_grad()
            model.loss(batch, step)[0].backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        routing = model._inference()[2]
        ami = macro_alignment(model.item_factor_weights(), train_data.item_categories)["ami"]
    return ami, routing.max(1).values.mean().item()


def test_default_routing_commits_edges_to_the_planted_factors():
    ami, top = train()
    paper_ami, paper_top = train(**PAPER)
    report = (f"defaults: AMI {ami:.3f}, mean top weight {top:.3f}; paper settings: AMI "
              f"{paper_ami:.3f}, mean top weight {paper_top:.3f} (uniform {1 / K:.3f})")
    print(report)
    assert ami >= 0.9 and top >= 0.6, report
    assert paper_ami < 0.5 and paper_top < 0.45, report
